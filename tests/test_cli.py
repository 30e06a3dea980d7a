"""`python -m ganx` end to end on tiny settings (train, resume, sample, info, errors, help)."""
import json
import os
import subprocess
import sys


TINY = ["--image-size", "16", "--latent-dim", "8", "--g-width", "8", "--d-width", "8", "--batch-size", "32",
        "--steps", "6", "--log-every", "2", "--checkpoint-every", "3", "--metric-samples", "100",
        "--device", "cpu", "--no-progress", "--impl", "reference", "--threads", "1"]


def ganx(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ganx", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_train_resume_sample(tmp_path):
    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("sample_every: 0\nreal_target: 0.9\n")
    r = ganx("train", "--config", cfg, "--out", run, *TINY)
    assert r.returncode == 0, r.stderr
    for f in ("config.yaml", "log.jsonl", "losses.png", "metrics.json", "checkpoints/last.pt", "samples/final.png"):
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    assert m["steps"] == 6 and 0 <= m["classifier_accuracy"] <= 1 and m["fid"] >= 0

    r = ganx("train", "--resume", run, "--config", cfg, "--steps", "8", "--no-metrics")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and json.loads((run / "metrics.json").read_text())["steps"] == 8

    out = tmp_path / "grid.png"
    r = ganx("sample", "--checkpoint", run / "checkpoints" / "last.pt", "--n", 12, "--class", 3, "--out", out)
    assert r.returncode == 0, r.stderr
    from PIL import Image
    assert Image.open(out).size[0] >= 256

    r = ganx("sample", "--checkpoint", run, "--class", 10, "--out", out)
    assert r.returncode == 2 and "out of range" in r.stderr and "Traceback" not in r.stderr


def test_info():
    r = ganx("info")
    assert r.returncode == 0, r.stderr
    for word in ("ganx 0.", "built against torch", "CUDA kernels built", "devices"):
        assert word in r.stdout


def test_user_errors_and_help(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('stpes = 3\nbatch_size = "big"\n')
    r = ganx("train", "--config", bad)
    assert r.returncode == 2 and "unknown config key(s) 'stpes'" in r.stderr and "Traceback" not in r.stderr
    r = ganx("train", "--data", tmp_path / "no-such-folder", "--out", tmp_path / "r")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = ganx("sample", "--checkpoint", tmp_path / "missing.pt")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = ganx("train", "--help")
    assert r.returncode == 0
    from ganx.train import TrainConfig
    import dataclasses
    for f in dataclasses.fields(TrainConfig):  # --help explains every option
        assert "--" + f.name.replace("_", "-") in r.stdout


def test_bench_help_and_bad_threads():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "ganx", "bench", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "eager PyTorch" in r.stdout
    r = subprocess.run([sys.executable, "-m", "ganx", "bench", "--threads", "0"], capture_output=True, text=True)
    assert r.returncode == 2 and "--threads must be >= 1" in r.stderr
