"""`python -m ganx` end to end on tiny settings (train, resume, sample, info, errors, help)."""
import json
import os
import subprocess
import sys

import pytest

from ganx.models import DISCRIMINATORS, GENERATORS
from tiny_run import TINY  # tests/tiny_run.py

# Every architecture at least once (the same-name pairs; cross pairs: tests/test_train.py).
ARCH_COVER = [(g, g) for g in sorted(GENERATORS) if g in DISCRIMINATORS]


# The tiny run (tests/tiny_run.py) with metrics, for six steps, logged every two and saved every three.
RUN = [*TINY, "--metrics", "--metric-samples", "100", "--steps", "6", "--log-every", "2", "--checkpoint-every", "3"]


def ganx(*args, cwd=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "ganx", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.mark.parametrize("archs", ARCH_COVER, ids="-".join)
def test_train_resume_sample(tmp_path, archs):
    import yaml

    run = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    # dcgan: bce (its default loss) with label smoothing; resnet: hinge (its default) and DiffAugment
    cfg.write_text("sample_every: 0\n" + ("real_target: 0.9\n" if archs[1] == "dcgan" else
                                          "augment: cutout,translation\n"))
    r = ganx("train", "--config", cfg, "--out", run, "--resume", "auto", *RUN,
             "--generator", archs[0], "--discriminator", archs[1])
    assert r.returncode == 0, r.stderr
    assert "no checkpoint" in r.stdout and "starting a fresh run" in r.stdout
    assert f"{archs[0]}/{archs[1]}, loss {'hinge' if archs[1] == 'resnet' else 'bce'}" in r.stdout
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["generator"], saved["discriminator"]) == archs
    assert saved["loss"] == ("hinge" if archs[1] == "resnet" else "bce")
    assert saved["augment"] == ("" if archs[1] == "dcgan" else "translation,cutout")
    assert saved["spectral_norm"] is (archs[1] == "resnet")
    for f in ("config.yaml", "log.jsonl", "losses.png", "metrics.json", "checkpoints/last.pt", "samples/final.png"):
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    assert m["steps"] == 6 and 0 <= m["classifier_accuracy"] <= 1 and m["fid"] >= 0
    assert "FID" in r.stdout and "KID x1000" in r.stdout and "subsets of" in r.stdout
    assert m["kid_subsets"] == 100 and m["kid_subset_size"] == 100  # 100 generated images

    # A finished run resumed without --steps: a message, and not one byte written (no
    # checkpoint rotation, no new samples, log lines or metrics).
    before = snapshot(run)
    for how in (["--resume", run], ["--resume", "auto", "--out", run]):
        r = ganx("train", *how)
        assert r.returncode == 0, r.stderr
        assert "already at step 6" in r.stdout and "--steps" in r.stdout and "resuming" not in r.stdout
        assert snapshot(run) == before

    r = ganx("train", "--resume", run, "--config", cfg, "--steps", "8", "--no-metrics")
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and json.loads((run / "metrics.json").read_text())["steps"] == 8
    assert f"{archs[0]}/{archs[1]}" in r.stdout  # from the checkpoint alone
    resumed = yaml.safe_load((run / "config.yaml").read_text())
    assert {k: v for k, v in resumed.items() if k != "out"} == {
        **{k: v for k, v in saved.items() if k != "out"}, "steps": 8, "metrics": False}

    out = tmp_path / "grid.png"
    r = ganx("sample", "--checkpoint", run / "checkpoints" / "last.pt", "--n", 12, "--class", 3, "--out", out)
    assert r.returncode == 0, r.stderr
    from PIL import Image
    assert Image.open(out).size[0] >= 256

    r = ganx("sample", "--checkpoint", run, "--class", 10, "--out", out)
    assert r.returncode == 2 and "out of range" in r.stderr and "Traceback" not in r.stderr


def snapshot(folder):
    """Every file under ``folder`` with its size, modification time and bytes."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_architecture_defaults_and_errors(tmp_path):
    r = ganx("train", "--discriminator", "resnet", "--real-target", "0.9", "--out", tmp_path / "r", *RUN)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "'hinge' is the default loss of --discriminator resnet, --loss bce selects bce" in r.stderr
    r = ganx("train", "--generator", "stylegan", "--out", tmp_path / "r")
    assert r.returncode == 2 and "stylegan" in r.stderr and "resnet" in r.stderr and "Traceback" not in r.stderr
    r = ganx("train", "--augment", "translation,blur", "--out", tmp_path / "r")
    assert r.returncode == 2 and "unknown augmentation 'blur'" in r.stderr and "Traceback" not in r.stderr
    r = ganx("train", "--help")
    text = " ".join(r.stdout.split())  # argparse wraps the help text
    assert "(default: hinge for --discriminator resnet, bce for dcgan)" in text
    assert "(default: on for --discriminator resnet, off for dcgan)" in text and "(default: '')" in text


def test_unknown_flag_is_one_line_naming_the_command():
    r = ganx("train", "--stpes", "10")
    assert r.returncode == 2
    assert r.stderr.startswith("ganx train: error: unrecognized arguments: --stpes 10") and "usage" not in r.stderr
    assert "did you mean --steps?" in r.stderr and "ganx train --help" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = ganx("sample", "--checkpoint", "x.pt", "--nn", "4")
    assert r.returncode == 2 and r.stderr.startswith("ganx sample: error: unrecognized arguments: --nn 4")
    r = ganx("sample", "--seed", "1e23")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--seed" in r.stderr


def test_sample_of_a_file_that_is_not_a_checkpoint(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# ganx\n\nA PyTorch GAN toolkit.\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    r = ganx("sample", "--checkpoint", readme, "--out", tmp_path / "g.png")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "README.md' is not a ganx checkpoint" in r.stderr and "arbitrary code" not in r.stderr
    r = ganx("sample", "--checkpoint", empty, "--out", tmp_path / "g.png")
    assert r.returncode == 2 and "empty" in r.stderr and "truncated or corrupted" in r.stderr


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
    assert r.returncode == 2 and "--threads must be in [1," in r.stderr
