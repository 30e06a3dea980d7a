"""Run folders and the CLI (issue 25 items 3-13, issue 24 item 3): no crash from a flag, every YAML
bounded, no lost outputs (a finished run completes what it lacks; a stop during the metrics is
graceful), no silent rewrite of a run, checkpoints never rotated when unverified or linked, ganx's
own temporaries only, one-line errors, memory checked before starting.

In-process through ganx.cli.main where possible; a real process (tests/faulty_ganx.py) where a
signal must arrive at a given moment."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import faulty_ganx
import pytest
import torch

from ganx import _io
from ganx.data import load_digits_dataset
from ganx.train import Trainer, load_checkpoint
from ganx.train.checkpoint import find_resumable

from tiny_run import SMALL, TINY, copy_run, run_cli, tiny  # noqa: E402  (tests/tiny_run.py)


def one_line_error(rc, err, *needles):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("ganx: warning")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ------------------------------------------------------------------ 3. --threads is bounded
def ganx_proc(*args):
    """A real `python -m ganx` (for the cases that crashed the process before they were refused)."""
    r = subprocess.run([sys.executable, "-m", "ganx", *map(str, args)], capture_output=True, text=True,
                       env=faulty_ganx.hook_env(), timeout=240)
    return r.returncode, r.stdout, r.stderr


def test_threads_beyond_the_cpus_is_one_line_error(tmp_path, trained):
    rc, out, err = ganx_proc("train", "--out", tmp_path / "a", *TINY, "--threads", 100000, "--steps", 1)
    one_line_error(rc, err, "threads", "100000", "CPUs")
    assert not (tmp_path / "a").exists()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("threads: 100000\n")
    rc, out, err = ganx_proc("train", "--config", cfg, "--out", tmp_path / "b", "--steps", 1)
    one_line_error(rc, err, "threads")
    # A checkpoint whose config asks for too many: refused, and --threads on the command line fixes it.
    run = copy_run(trained, tmp_path / "run")
    ck = load_checkpoint(run)
    ck["config"]["threads"] = 100000
    ck.pop("integrity")
    torch.save(ck, run / "checkpoints" / "last.pt")
    rc, out, err = ganx_proc("train", "--resume", run / "checkpoints" / "last.pt", "--steps", 5)
    one_line_error(rc, err, "threads")
    rc, out, err = ganx_proc("train", "--resume", run / "checkpoints" / "last.pt", "--steps", 5, "--threads", 1)
    assert rc == 0, err


def test_bench_threads_bounded(capsys):
    rc, out, err = run_cli(capsys, "bench", "--threads", 100000)
    one_line_error(rc, err, "threads", "CPUs")


# ------------------------------------------------------------------ 4. every YAML through the bounded loader
BOMB = ('a: &a ["x","x","x","x","x","x","x","x","x","x"]\n'
        + "".join(f'{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n'
                  for p, c in zip("abcdefgh", "bcdefghi"))
        + "image_size: *i\n")


def test_alias_bomb_in_the_runs_config_yaml(tmp_path, trained):
    run = copy_run(trained, tmp_path / "run")
    (run / "config.yaml").write_text(BOMB)
    # In a child process with a deadline: before the fix this hung building a message.
    code = ("import sys; from ganx.train.checkpoint import find_resumable; "
            f"p, ck, probs = find_resumable({str(run)!r}); print(p); print(probs)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith("last.pt")
    assert "aliases" in r.stdout  # the note says why config.yaml was not used
    path, ck, problems = find_resumable(run)
    assert ck["step"] == 4


# ------------------------------------------------------------------ 5. a finished run completes what it lacks
def test_finished_run_without_its_outputs_is_completed_without_training(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    for f in ("metrics.json", "losses.png", "samples/final.png"):
        if (run / f).exists():
            (run / f).unlink()
    ckpts = {n: (run / "checkpoints" / n).read_bytes() for n in ("last.pt", "previous.pt")}
    log = (run / "log.jsonl").read_bytes()
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run)
    assert rc == 0, err
    assert "completing" in out and "metrics.json" in out and "training on" not in out
    for f in ("metrics.json", "losses.png", "samples/final.png"):
        assert (run / f).is_file(), f
    m = json.loads((run / "metrics.json").read_text())
    assert m["steps"] == 4 and m["final"]["d_loss"] is not None
    # no training, no checkpoint rotation, the log as it was
    assert {n: (run / "checkpoints" / n).read_bytes() for n in ckpts} == ckpts
    assert (run / "log.jsonl").read_bytes() == log
    # and now it is complete: nothing written
    before = snapshot(run)
    rc, out, err = run_cli(capsys, "train", "--resume", run)
    assert rc == 0 and "Nothing was written" in out
    assert snapshot(run) == before
    # from Python too: fit() of a complete finished run recomputes and rewrites nothing
    m = Trainer.from_checkpoint(run, dataset=SMALL).fit(tensorboard=False)
    assert m["steps"] == 4
    after = snapshot(run)
    assert {k: v for k, v in after.items() if k.startswith(("checkpoints", "samples", "metrics", "losses"))} == \
        {k: v for k, v in before.items() if k.startswith(("checkpoints", "samples", "metrics", "losses"))}


def test_sigterm_during_the_metrics_stops_gracefully(tmp_path, capsys):
    run = tmp_path / "run"
    flags = [f for f in TINY if f != "--no-metrics"] + ["--metric-samples", 64]
    p = faulty_ganx.launch("train", "--out", run, "--steps", 2, *flags, GANX_TEST_SLOW_METRICS=60)
    try:
        deadline = time.time() + 120
        err_lines = []
        while time.time() < deadline:
            line = p.stderr.readline()
            err_lines.append(line)
            if not line or "metrics: started" in line:
                break
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, "".join(err_lines) + err
    assert "Traceback" not in err
    assert "during the end-of-run metrics" in out and f"ganx train --resume {run}" in out
    assert not (run / "metrics.json").exists() and load_checkpoint(run)["step"] == 2
    # the next resume completes the run (metrics off here only to keep the test short)
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--no-metrics")
    assert rc == 0, err
    assert "completing" in out and json.loads((run / "metrics.json").read_text())["steps"] == 2


# ------------------------------------------------------------------ 6. --out of an existing run
def test_fresh_run_into_an_existing_run_is_refused(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    before = snapshot(run)
    rc, out, err = run_cli(capsys, "train", "--out", run, *TINY, "--steps", 2)
    one_line_error(rc, err, "--resume auto", "--out", "already holds a run")
    assert snapshot(run) == before
    # an empty folder, or one the user made for it, is fine
    (tmp_path / "empty").mkdir()
    rc, out, err = run_cli(capsys, "train", "--out", tmp_path / "empty", *TINY, "--steps", 1)
    assert rc == 0, err


# ------------------------------------------------------------------ 7. classifier.pt verified, rebuilt if invalid
def test_invalid_classifier_cache_is_rebuilt(tmp_path, capsys):
    from ganx.metrics.features import load_or_train_classifier

    data = load_digits_dataset(16)._subset(torch.arange(200))
    cache = tmp_path / "classifier.pt"
    model, acc = load_or_train_classifier(data, str(cache))
    good = cache.read_bytes()
    state = torch.load(cache, weights_only=True)
    for bad in (b"garbage", None, "foreign", "folder"):
        if cache.is_dir():
            cache.rmdir()
        if bad is None:  # a ganx cache whose weights were changed after it was written
            s = dict(state, model={k: v + 1 if v.is_floating_point() else v for k, v in state["model"].items()})
            torch.save(s, cache)
        elif bad == "foreign":
            torch.save({"key": state["key"], "model": {"x": torch.zeros(3)}, "heldout_accuracy": 0.5,
                        "sha256": "0" * 64}, cache)
        elif bad == "folder":
            cache.unlink()
            cache.mkdir()
        else:
            cache.write_bytes(bad)
        capsys.readouterr()
        m2, acc2 = load_or_train_classifier(data, str(cache))
        assert acc2 == acc
        assert "not valid" in capsys.readouterr().err
        if bad != "folder":
            assert cache.read_bytes() == good
    cache.rmdir()


# ------------------------------------------------------------------ 8. the save path is checked before training
def test_last_pt_a_folder_is_refused_before_training(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    (run / "checkpoints" / "last.pt").unlink()
    (run / "checkpoints" / "last.pt").mkdir()
    log = (run / "log.jsonl").read_bytes()
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--steps", 8)
    one_line_error(rc, err, "last.pt", "is a folder")
    assert (run / "log.jsonl").read_bytes() == log  # no step was trained (and lost)


# ------------------------------------------------------------------ 9. never rotate an unverified checkpoint
def test_corrupt_last_pt_is_not_rotated_over_the_good_fallback(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    last = run / "checkpoints" / "last.pt"
    b = bytearray(last.read_bytes())
    b[len(b) // 2] ^= 0xFF
    last.write_bytes(bytes(b))
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--steps", 5, "--checkpoint-every", 1000)
    assert rc == 0, err
    assert "at step 2" in out  # resumed from the fallback, previous.pt
    assert load_checkpoint(run / "checkpoints" / "previous.pt")["step"] == 2  # still the good fallback
    assert load_checkpoint(last)["step"] == 5


# ------------------------------------------------------------------ 10. ganx's own temporaries only
def test_only_ganx_temporaries_of_dead_processes_are_cleaned(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    user = [run / ".tmp-notes.txt", run / "checkpoints" / "mine.pt.tmp", run / "checkpoints" / ".tmp-last.pt.x"]
    for f in user:
        f.write_text("the user's")
    pid = dead_pid()
    stale = [run / "checkpoints" / (_io.temp_prefix("last.pt", pid) + "abc"), run / (_io.temp_prefix("log.jsonl", pid) + "z")]
    for f in stale:
        f.write_bytes(b"x" * 100)
    live = run / (_io.temp_prefix("x.png", 1) + "q")  # pid 1 runs: another process's save in progress
    live.write_text("busy")
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--steps", 5)
    assert rc == 0, err
    assert all(f.read_text() == "the user's" for f in user)
    assert not any(f.exists() for f in stale) and live.exists()
    assert "removed 2 temporary" in err
    # and no temporary of this run is left behind
    names = os.listdir(run) + os.listdir(run / "checkpoints") + os.listdir(run / "samples")
    assert [n for n in names if n.startswith(_io.TEMP_PREFIX)] == [live.name]


# ------------------------------------------------------------------ 11. never link or rename through a symlink
def test_previous_is_never_a_link_to_a_file_outside(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not the run's")
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "last.pt").symlink_to(outside)
    _io.replace_atomically(folder / "last.pt", lambda f: f.write(b"new"), previous="previous.pt")
    assert not (folder / "last.pt").is_symlink() and (folder / "last.pt").read_bytes() == b"new"
    assert outside.read_bytes() == b"not the run's"
    prev = folder / "previous.pt"
    assert not prev.exists() or os.stat(prev).st_ino != os.stat(outside).st_ino
    assert os.stat(outside).st_nlink == 1


def test_linked_last_pt_in_a_run(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    outside = tmp_path / "elsewhere.pt"
    shutil.copy(run / "checkpoints" / "last.pt", outside)
    (run / "checkpoints" / "last.pt").unlink()
    (run / "checkpoints" / "last.pt").symlink_to(outside)
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--steps", 5)
    assert rc == 0, err
    assert os.stat(outside).st_nlink == 1
    assert os.stat(run / "checkpoints" / "previous.pt").st_ino != os.stat(outside).st_ino
    assert not (run / "checkpoints" / "last.pt").is_symlink()


# ------------------------------------------------------------------ issue 24 3.9: the umask is honoured
def test_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        Trainer(tiny(tmp_path / "run", steps=2), dataset=SMALL).fit(tensorboard=False)
    finally:
        os.umask(old)
    run = tmp_path / "run"
    for f in ("config.yaml", "log.jsonl", "metrics.json", "samples/final.png", "checkpoints/last.pt"):
        assert (os.stat(run / f).st_mode & 0o777) == 0o644, f


# ------------------------------------------------------------------ 13. one-line errors, exit 2
def test_npz_of_zero_pixel_images(tmp_path, capsys):
    import numpy as np

    for shape in ((4, 0, 8), (4, 8, 0), (4, 1, 0, 8)):
        f = tmp_path / "z.npz"
        np.savez(f, images=np.zeros(shape, np.uint8))
        rc, out, err = run_cli(capsys, "train", "--data", f, "--out", tmp_path / "r", *TINY, "--steps", 1,
                               "--no-conditional")
        one_line_error(rc, err, "pixel")


def test_seed_out_of_range(tmp_path, capsys, trained):
    for seed in (2 ** 63, -1, 2 ** 80):
        rc, out, err = run_cli(capsys, "train", "--out", tmp_path / "r", *TINY, "--steps", 1, "--seed", seed)
        one_line_error(rc, err, "seed")
        assert not (tmp_path / "r").exists()  # refused before the run folder is written
    # the largest accepted seed trains (its derived seeds stay in range)
    rc, out, err = run_cli(capsys, "train", "--out", tmp_path / "big", *TINY, "--steps", 1, "--seed", 2 ** 63 - 8)
    assert rc == 0, err
    run = copy_run(trained, tmp_path / "run")
    ck = load_checkpoint(run)
    ck["rng"]["data"]["seed"] = 2 ** 80
    ck.pop("integrity")
    torch.save(ck, run / "checkpoints" / "last.pt")
    rc, out, err = run_cli(capsys, "train", "--resume", run / "checkpoints" / "last.pt", "--steps", 5)
    one_line_error(rc, err, "data position")


@pytest.mark.parametrize("step", ['"5"', "null", "true", "-3"])
def test_log_rows_without_an_integer_step_are_skipped(tmp_path, capsys, trained, step):
    run = copy_run(trained, tmp_path / "run")
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": %s, "d_loss": 1.0, "g_loss": 1.0}\n' % step)
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--steps", 5)
    assert rc == 0, err
    assert "not log rows" in err
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_disk_full_while_writing_a_grid_or_the_lock(tmp_path, capsys, monkeypatch):
    import errno

    from ganx.train import plots

    def full(path, data, root=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(plots, "atomic_write", full)
    rc, out, err = run_cli(capsys, "train", "--out", tmp_path / "r", *TINY, "--steps", 2)
    one_line_error(rc, err, "No space left on device")
    monkeypatch.undo()

    real_write = os.write

    def write(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".ganx.lock"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    rc, out, err = run_cli(capsys, "train", "--out", tmp_path / "r2", *TINY, "--steps", 2)
    one_line_error(rc, err, "lock", "No space left on device")


def test_lock_that_is_a_fifo(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    os.mkfifo(run / ".ganx.lock")
    rc, out, err = run_cli(capsys, "train", "--out", run, *TINY, "--steps", 1)
    one_line_error(rc, err, ".ganx.lock", "not a regular file")


@pytest.mark.parametrize("value", ["abc", "-5", "1e400G", "0"])
def test_bad_memory_limit(tmp_path, capsys, monkeypatch, value):
    monkeypatch.setenv("GANX_MEMORY_LIMIT", value)
    rc, out, err = run_cli(capsys, "train", "--out", tmp_path / "r", *TINY, "--steps", 1)
    one_line_error(rc, err, "GANX_MEMORY_LIMIT")


def test_sample_errors(tmp_path, capsys, trained):
    ck = trained / "checkpoints" / "last.pt"
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [(["--nrow", -3], "--nrow"), (["--nrow", 0], "--nrow"), (["--out", tmp_path], "is a folder"),
             (["--out", tmp_path / "x.txt"], ".png"), (["--out", afile / "x.png"], "is not a folder"),
             (["--out", tmp_path / "no" / "such" / "x.png"], "does not exist"), (["--seed", 10 ** 23], "--seed"),
             (["--device", "tpu"], "tpu"), (["--n", 0], "--n")]
    for flags, needle in cases:
        rc, out, err = run_cli(capsys, "sample", "--checkpoint", ck, *flags, *(
            [] if "--out" in flags else ["--out", tmp_path / "g.png"]))
        one_line_error(rc, err, needle)
    assert not (tmp_path / "no").exists()
    bad = tmp_path / "bad.pt"
    c = load_checkpoint(ck)
    c["class_names"] = 5
    c.pop("integrity")
    torch.save(c, bad)
    rc, out, err = run_cli(capsys, "sample", "--checkpoint", bad, "--out", tmp_path / "g.png")
    one_line_error(rc, err, "class_names")


def test_sample_grid_has_one_row_per_class(tmp_path, capsys, trained):
    from PIL import Image

    out = tmp_path / "g.png"
    rc, _, err = run_cli(capsys, "sample", "--checkpoint", trained, "--n", 30, "--out", out)
    assert rc == 0, err
    w, h = Image.open(out).size
    assert h > w  # 10 classes in 10 rows of 3, not 3 rows of 10


def test_bench_out_checked_before_timing(tmp_path, capsys, monkeypatch):
    from ganx import bench

    monkeypatch.setattr(bench, "run_quick", lambda *a, **k: pytest.fail("timed before checking --out"))
    f = tmp_path / "existing"
    f.write_text("mine")
    rc, out, err = run_cli(capsys, "bench", "--out", f)
    one_line_error(rc, err, "not a folder")
    assert f.read_text() == "mine"


# ------------------------------------------------------------------ 12. memory estimated as the data will be held
def test_array_memory_counted_at_the_training_size(tmp_path, capsys, monkeypatch):
    import numpy as np

    f = tmp_path / "small.npz"
    np.savez(f, images=np.zeros((500, 8, 8), np.uint8))  # 32 KB on disk, 295 MB held at 128px colour
    monkeypatch.setenv("GANX_MEMORY_LIMIT", "100M")
    rc, out, err = run_cli(capsys, "train", "--data", f, "--image-size", 128, "--channels", 3, "--out",
                           tmp_path / "r", "--steps", 1, "--no-conditional", "--device", "cpu")
    line = one_line_error(rc, err, "MiB", "GANX_MEMORY_LIMIT", "128")
    assert "available" in line


def test_image_folder_memory_counted_before_decoding(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from ganx.data import datasets

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("L", (8, 8)).save(folder / "a.png")
    for i in range(300):
        os.link(folder / "a.png", folder / f"l{i}.png")
    monkeypatch.setenv("GANX_MEMORY_LIMIT", "50M")
    monkeypatch.setattr(datasets, "_load_image_files", lambda *a: pytest.fail("decoded before the check"))
    rc, out, err = run_cli(capsys, "train", "--data", folder, "--image-size", 128, "--out", tmp_path / "r",
                           "--steps", 1, "--no-conditional", "--device", "cpu")
    one_line_error(rc, err, "301 images", "GANX_MEMORY_LIMIT")


def test_metric_samples_bounded_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GANX_MEMORY_LIMIT", "2G")
    flags = [f for f in TINY if f != "--no-metrics"]
    rc, out, err = run_cli(capsys, "train", "--out", tmp_path / "r", *flags, "--steps", 1,
                           "--metric-samples", 10 ** 9)
    one_line_error(rc, err, "metric_samples", "GANX_MEMORY_LIMIT")
    assert not (tmp_path / "r" / "log.jsonl").exists()


# ------------------------------------------------------------------ issue 24 item 3: first-run frictions
def test_double_ctrl_c_says_what_is_lost(tmp_path):
    run = tmp_path / "run"
    p = faulty_ganx.launch("train", "--out", run, "--steps", 1000, "--checkpoint-every", 3, *TINY,
                           GANX_TEST_SLOW_STEP=0.3)
    try:
        faulty_ganx.wait_for_log(p, run / "log.jsonl", 4)
        p.send_signal(signal.SIGINT)
        time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "stopping after this step (Ctrl-C again to abort without saving)" in err
    # the last checkpoint before the second Ctrl-C: step 3 or a later multiple of 3 on a slow machine
    saved = re.search(r"aborted at step (\d+); nothing saved since step (\d+)", err)
    assert saved and int(saved.group(2)) % 3 == 0 and 3 <= int(saved.group(2)) <= int(saved.group(1)), err
    assert "Traceback" not in err


def test_stray_file_outside_the_class_folders_is_named(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "data"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(20):
            Image.new("L", (8, 8), color=i).save(root / c / f"{i}.png")
    Image.new("L", (8, 8)).save(root / "stray.png")
    rc, out, err = run_cli(capsys, "train", "--data", root, "--out", tmp_path / "r", *TINY, "--steps", 1,
                           "--batch-size", 8)
    one_line_error(rc, err, "stray.png", "outside the class subfolders")


def test_relative_data_recorded_absolute(tmp_path, capsys, monkeypatch):
    import numpy as np
    import yaml

    (tmp_path / "a").mkdir()
    np.savez(tmp_path / "a" / "d.npz", images=np.random.rand(64, 8, 8).astype(np.float32))
    monkeypatch.chdir(tmp_path / "a")
    rc, out, err = run_cli(capsys, "train", "--data", "d.npz", "--out", tmp_path / "run", *TINY, "--steps", 2,
                           "--no-conditional")
    assert rc == 0, err
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["data"] == str(tmp_path / "a" / "d.npz")
    monkeypatch.chdir(tmp_path)  # the resume from elsewhere finds the data
    rc, out, err = run_cli(capsys, "train", "--resume", tmp_path / "run", "--steps", 3)
    assert rc == 0, err


def test_resume_of_a_corrupt_last_pt_points_to_the_fallback(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    (run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    rc, out, err = run_cli(capsys, "train", "--resume", run, "--steps", 6)
    one_line_error(rc, err, "previous.pt", "--resume auto")
    rc, out, err = run_cli(capsys, "train", "--resume", "auto", "--out", run, "--steps", 6)
    assert rc == 0, err
    assert "skipping a checkpoint: " in err and "last.pt' is not a ganx checkpoint" in err


def test_progress_bar_fits_80_columns_past_an_hour():
    from tqdm import tqdm

    from ganx.train.runlog import BAR_FORMAT, progress_postfix

    post = progress_postfix({"d_loss": 1.23456, "g_loss": 10.5678, "acc_real": 0.8123, "acc_fake": 1.0})
    for n, total, elapsed in ((5, 3000, 3), (2960, 3000, 3700), (99999, 100000, 99 * 3600 + 3599)):
        line = tqdm.format_meter(n=n, total=total, elapsed=elapsed, ncols=80, prefix="train", unit="step",
                                 postfix=post, bar_format=BAR_FORMAT)
        assert len(line) <= 80 and line.endswith(post), line
        assert line.count("|") == 2 and len(line.split("|")[1]) == 10, line  # the whole bar


def test_did_you_mean(tmp_path, capsys):
    rc, out, err = run_cli(capsys, "train", "--data", "digit", "--out", tmp_path / "r", "--steps", 1)
    one_line_error(rc, err, "did you mean 'digits'")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lr_gg: 0.1\n")
    rc, out, err = run_cli(capsys, "train", "--config", cfg, "--out", tmp_path / "r")
    one_line_error(rc, err, "did you mean 'lr_g'")


def test_folder_in_use_is_refused_before_any_report(tmp_path, capsys, trained):
    from ganx.train.rundir import RunLock

    run = copy_run(trained, tmp_path / "run")
    lock = RunLock(run).acquire()
    try:
        rc, out, err = run_cli(capsys, "train", "--resume", run, "--steps", 6)
    finally:
        lock.release()
    one_line_error(rc, err, "in use by another ganx process")
    assert "resuming" not in out and "training on" not in out


def test_resume_without_metrics_keeps_the_earlier_results(tmp_path, capsys, trained):
    run = copy_run(trained, tmp_path / "run")
    (run / "metrics.json").write_text(json.dumps({"steps": 4, "fid": 12.5, "classifier_accuracy": 0.9}))
    rc, out, err = run_cli(capsys, "train", "--resume", run, "--steps", 5, "--no-metrics")
    assert rc == 0, err
    assert "step 5" in out and "this session: 1 steps from step 4" in out
    m = json.loads((run / "metrics.json").read_text())
    assert m["steps"] == 5 and m["earlier_metrics"] == {"steps": 4, "fid": 12.5, "classifier_accuracy": 0.9}


def test_torchvision_data_not_found_says_the_layout(tmp_path, capsys, monkeypatch):
    import types

    class MNIST:
        def __init__(self, root, train=True, download=False):
            raise RuntimeError("Dataset not found. You can use download=True to download it")

    tv = types.ModuleType("torchvision")
    tv.datasets = types.ModuleType("torchvision.datasets")
    tv.datasets.MNIST = MNIST
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", tv.datasets)
    rc, out, err = run_cli(capsys, "train", "--data", f"torchvision:MNIST:{tmp_path}", "--out", tmp_path / "r",
                           *TINY, "--steps", 1)
    line = one_line_error(rc, err, "MNIST/raw/train-images-idx3-ubyte", "never downloads")
    assert "You can use download=True" not in line
