"""Faults: signals, NaN/Inf losses, corrupted / untrusted checkpoints, a disk that fills up during a
save, a kill -9 in the middle of a save. Where it matters the test drives a real `ganx train` process
(tests/faulty_ganx.py plants these faults by monkeypatching; ganx itself has no test hooks)."""
import json
import os
import signal
import subprocess
import sys
import time

import faulty_ganx
import pytest
import torch

from ganx.train import Trainer, TrainConfig, load_checkpoint
from ganx.train.checkpoint import CheckpointError, find_resumable

FAULTY_GANX = faulty_ganx.SCRIPT  # python -m ganx + planted faults
from tiny_run import SMALL, TINY  # noqa: E402  (tests/tiny_run.py)


def ganx(*args, **hooks):
    return subprocess.run([sys.executable, FAULTY_GANX, *map(str, args)], capture_output=True, text=True,
                          env=faulty_ganx.hook_env(**hooks), timeout=240)


def _rows(run):
    return [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_and_resumes(tmp_path, sig):
    run = tmp_path / "run"
    p = faulty_ganx.launch("train", "--out", run, "--steps", 1000, "--checkpoint-every", 1000, *TINY,
                           GANX_TEST_SLOW_STEP=0.05)
    try:
        faulty_ganx.wait_for_log(p, run / "log.jsonl", 2)  # inside the training loop
        p.send_signal(sig)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "Traceback" not in err
    assert f"stopped by {sig.name}" in out and f"ganx train --resume {run}" in out
    step = load_checkpoint(run)["step"]
    assert 2 <= step < 1000
    assert [r["step"] for r in _rows(run)] == list(range(1, step + 1))  # the step in flight was finished
    if sig == signal.SIGTERM:
        r = ganx("train", "--resume", run, "--steps", step + 2)
        assert r.returncode == 0, r.stderr
        assert f"at step {step}" in r.stdout and load_checkpoint(run)["step"] == step + 2


def test_nonfinite_loss_stops_or_is_skipped(tmp_path):
    run = tmp_path / "run"
    r = ganx("train", "--out", run, "--steps", 8, "--checkpoint-every", 3, *TINY, GANX_TEST_INJECT_NAN_AT_STEP=5)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "non-finite d_loss = nan at step 5" in r.stderr and "--skip-nonfinite" in r.stderr
    assert load_checkpoint(run)["step"] == 3  # the last good checkpoint, untouched
    assert [row["step"] for row in _rows(run)] == [1, 2, 3, 4]

    run2 = tmp_path / "run2"
    r = ganx("train", "--out", run2, "--steps", 8, "--checkpoint-every", 3, "--skip-nonfinite", *TINY,
             GANX_TEST_INJECT_NAN_AT_STEP=5)
    assert r.returncode == 0, r.stderr
    assert "step 5 skipped" in r.stdout
    ck = load_checkpoint(run2)
    assert ck["step"] == 8
    assert all(torch.isfinite(v).all() for v in ck["G"].values() if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in ck["D"].values() if v.is_floating_point())
    assert [row["step"] for row in _rows(run2)] == [1, 2, 3, 4, 6, 7, 8]


def test_disk_full_during_save_keeps_previous_checkpoint(tmp_path):
    run = tmp_path / "run"
    # The 2nd save (step 4) runs out of space half-way through writing.
    r = ganx("train", "--out", run, "--steps", 6, "--checkpoint-every", 2, *TINY, GANX_TEST_FAIL_SAVE=2)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "No space left on device" in r.stderr and "intact" in r.stderr and "last.pt" in r.stderr
    assert load_checkpoint(run)["step"] == 2
    assert sorted(os.listdir(run / "checkpoints")) == ["last.pt"]  # no torn temporary file left


def _two_checkpoints(tmp_path):
    cfg = TrainConfig(image_size=16, latent_dim=8, g_width=8, d_width=8, batch_size=32, steps=4,
                      checkpoint_every=2, progress=False, metrics=False, sample_every=0, device="cpu",
                      out=str(tmp_path / "run"), impl="reference")
    Trainer(cfg, dataset=SMALL).fit(tensorboard=False)
    ckdir = tmp_path / "run" / "checkpoints"
    assert load_checkpoint(ckdir / "last.pt")["step"] == 4
    assert load_checkpoint(ckdir / "previous.pt")["step"] == 2
    return tmp_path / "run", ckdir


def test_corrupted_checkpoint_clear_error_and_resume_auto(tmp_path):
    run, ckdir = _two_checkpoints(tmp_path)
    last = ckdir / "last.pt"
    data = last.read_bytes()
    for broken in (data[: len(data) // 2], data[:10], b"", data[:200] + b"\0" * 64 + data[264:]):
        last.write_bytes(broken)
        with pytest.raises(CheckpointError, match="last.pt"):
            load_checkpoint(last)
    last.write_bytes(data[: len(data) // 3])  # truncated
    r = ganx("train", "--resume", run, "--steps", 5)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "last.pt" in r.stderr and "truncated or corrupted" in r.stderr
    path, ck, problems = find_resumable(run)
    assert path.endswith("previous.pt") and ck["step"] == 2 and len(problems) == 1
    r = ganx("train", "--resume", "auto", "--out", run, "--steps", 5, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "skipping" in r.stderr and "last.pt" in r.stderr and "at step 2" in r.stdout
    assert load_checkpoint(run)["step"] == 5


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_untrusted_checkpoint_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    good = {"format": "ganx-checkpoint-v1", "step": 1, "config": {}, "G": {}, "D": {}, "rng": {}}
    torch.save({**good, "payload": _Evil(marker)}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.pt.*refuses to load"):
        load_checkpoint(evil)
    for cmd in (["train", "--resume", evil], ["sample", "--checkpoint", evil, "--out", tmp_path / "g.png"]):
        r = ganx(*cmd)
        assert r.returncode == 2 and "Traceback" not in r.stderr and "evil.pt" in r.stderr, r.stderr
    assert not marker.exists(), "loading a checkpoint executed code"
    # The payload is real: an unsafe load would have run it.
    if sys.platform != "win32":
        torch.load(evil, weights_only=False)
        assert marker.exists()


# ------------------------------------------------------------------ kill -9 (issue 17)
def _check_run_invariants(run):
    """What must hold after a kill -9 at any point: every checkpoint present verifies, the
    log is readable (a torn last line aside) and its steps never repeat."""
    from ganx.train.runlog import read_log

    ck = run / "checkpoints"
    for name in ("last.pt", "previous.pt"):
        if (ck / name).exists():
            load_checkpoint(ck / name)  # loads and its digest verifies
    if (run / "log.jsonl").exists():
        steps = [r["step"] for r in read_log(run / "log.jsonl")]
        assert steps == sorted(set(steps)), steps


def _finish_and_check(run, steps):
    r = ganx("train", "--resume", "auto", "--out", run, "--steps", steps, *TINY)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert load_checkpoint(run)["step"] == steps
    assert [row["step"] for row in _rows(run)] == list(range(1, steps + 1))
    leftovers = [n for n in os.listdir(run / "checkpoints") + os.listdir(run) if "tmp" in n]
    assert leftovers == [], leftovers


def test_kill9_at_every_save_and_resume_point(tmp_path):
    """A chain of runs of one folder, each killed with SIGKILL at another point of a save or of
    the resume's log rewrite; `--resume auto` continues each time, and the run ends exactly
    as an uninterrupted one logs it (steps 1..N once each), with no temporary file left."""
    run = tmp_path / "run"
    chain = ["save:tmp:2",        # step-4 checkpoint written to its temporary file, not renamed
             "write:log.jsonl",   # the resume drops the log lines after step 2: killed before its rename
             "save:previous:1",   # previous.pt updated, last.pt not yet replaced
             "log:torn:2",        # half a log line written
             "save:done:1"]       # right after a rename
    first = True
    for point in chain:
        args = ["--out", run, "--steps", 8, "--checkpoint-every", 2, *TINY]
        r = ganx("train", *(["--resume", "auto"] if not first else []), *args, GANX_TEST_KILL_AT=point)
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr)
        first = False
        _check_run_invariants(run)
    _finish_and_check(run, 8)


def test_kill9_at_random_moments_repeated(tmp_path):
    """SIGKILL at random moments (seeded) of a run that checkpoints every step, three times over,
    each followed by `--resume auto`."""
    import random

    rnd = random.Random(17)
    run = tmp_path / "run"
    steps = 40
    for i in range(3):
        args = ["train", "--out", str(run), "--steps", str(steps), "--checkpoint-every", "1", *TINY]
        if (run / "checkpoints").is_dir():
            args[1:1] = ["--resume", "auto"]
        p = faulty_ganx.launch(*args, GANX_TEST_SLOW_STEP=0.01)
        try:
            # wait until it trains (its log grows), then a random moment more
            n0 = len((run / "log.jsonl").read_bytes().splitlines()) if (run / "log.jsonl").exists() else 0
            faulty_ganx.wait_for_log(p, run / "log.jsonl", n0 + 1)
            time.sleep(rnd.uniform(0.0, 0.3))
            p.send_signal(signal.SIGKILL)
            p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
        _check_run_invariants(run)
    _finish_and_check(run, steps)
