"""``python tests/faulty_ganx.py ARGS`` runs ``python -m ganx ARGS`` with faults planted by
monkeypatching, for the tests that drive a real process (a signal mid-run, a NaN loss, a full disk,
a kill -9 at a named point of a save). ganx itself has no such hooks; this file reads these
environment variables:

* ``GANX_TEST_INJECT_NAN_AT_STEP=N``: the D loss of step N (1-based) becomes NaN.
* ``GANX_TEST_SLOW_STEP=SECONDS``: sleep that long after each training step (so a test can
  signal the process in the middle of a run).
* ``GANX_TEST_SLOW_METRICS=SECONDS``: the end-of-run metrics first sleep that long (so a test can
  signal the process during them; it prints ``metrics: started`` to stderr when they start).
* ``GANX_TEST_FAIL_SAVE=K``: the K-th checkpoint save (a ``.pt`` file, 1-based) of the process fails
  half-way with ``OSError(ENOSPC)``: its temporary file is torn, as a disk that filled up mid-write
  leaves it.
* ``GANX_TEST_KILL_AT=POINT[:N]``: the process kills itself with SIGKILL (no clean-up of any kind,
  as ``kill -9`` or a power cut) the N-th time (default 1st) it reaches POINT. Points, the seams
  of ganx._io's atomic replacement: ``save:tmp`` (a checkpoint's temporary file is written, not yet
  renamed), ``save:previous`` (previous.pt updated, last.pt not yet replaced), ``save:done`` (right
  after the rename), ``write:NAME`` (the temporary file of another file NAME, e.g. log.jsonl or
  config.yaml, is written, not yet renamed); and ``log:torn`` (half of a log line is appended).

Works under torchrun too (``torchrun ... tests/faulty_ganx.py train ...``). The tests start it with
:func:`launch` / :func:`wait_for_log`.
"""
import errno
import os
import signal
import subprocess
import sys
import time

from ganx import _io
from ganx.cli import main
from ganx.train import rundir
from ganx.train.trainer import Trainer


SCRIPT = os.path.abspath(__file__)


def hook_env(**hooks):
    """The environment of a test's ganx process: this one's, without GANX_TEST_* left over, plus ``hooks``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANX_TEST_")}
    env.update(PYTHONUNBUFFERED="1", **{k: str(v) for k, v in hooks.items()})
    return env


def launch(*args, **hooks) -> subprocess.Popen:
    """``python tests/faulty_ganx.py ARGS`` in the background, with the faults ``hooks`` planted."""
    return subprocess.Popen([sys.executable, SCRIPT, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=hook_env(**hooks))


def wait_for_log(p: subprocess.Popen, log, lines: int, timeout: float = 120) -> None:
    """Wait until the run's ``log`` holds at least ``lines`` lines (it is inside the training loop),
    ``p`` exits, or ``timeout`` seconds pass."""
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        if os.path.isfile(log) and len(open(log, "rb").read().splitlines()) >= lines:
            return
        time.sleep(0.02)


def _plant_nan(nan_at: int) -> None:
    d_step = Trainer.d_step

    def poisoned_d_step(self, real, labels):
        if self.step + 1 != nan_at:
            return d_step(self, real, labels)
        loss_d_step = self.loss.d_step

        def nan_loss(*args):
            loss, stats = loss_d_step(*args)
            return loss * float("nan"), stats

        self.loss.d_step = nan_loss  # an instance attribute, shadowing the method for one call
        try:
            return d_step(self, real, labels)
        finally:
            del self.loss.d_step

    Trainer.d_step = poisoned_d_step


def _plant_slow(seconds: float) -> None:
    train_step = Trainer.train_step

    def slow_train_step(self):
        figs = train_step(self)
        time.sleep(seconds)
        return figs

    Trainer.train_step = slow_train_step


def _plant_slow_metrics(seconds: float) -> None:
    from ganx.train import finish

    evaluate = finish.evaluate_generator

    def slow_evaluate(*args, **kwargs):
        print("metrics: started", file=sys.stderr, flush=True)
        time.sleep(seconds)
        return evaluate(*args, **kwargs)

    finish.evaluate_generator = slow_evaluate


def _plant_full_disk(at: int) -> None:
    write_temp = _io._write_temp
    saves = [0]

    def write_temp_disk_full(path, write):
        if not path.endswith(".pt"):
            return write_temp(path, write)
        saves[0] += 1
        if saves[0] != at:
            return write_temp(path, write)

        def torn(f):
            write(f)
            f.flush()
            f.seek(max(0, f.tell() // 2))
            f.truncate()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return write_temp(path, torn)

    _io._write_temp = write_temp_disk_full


def _plant_kill(spec: str) -> None:
    point, _, n = spec.rpartition(":") if spec.rsplit(":", 1)[-1].isdigit() else (spec, "", "1")
    hits = [0]

    def reached(name: str) -> None:
        if name == point:
            hits[0] += 1
            if hits[0] == int(n):
                os.kill(os.getpid(), signal.SIGKILL)

    def after(fn, name_of):
        def wrapped(*args):
            out = fn(*args)
            name = name_of(*args)
            if name:
                reached(name)
            return out
        return wrapped

    def is_pt(path):
        return os.fspath(path).endswith(".pt")

    _io._write_temp = after(_io._write_temp, lambda path, write: "save:tmp" if is_pt(path)
                            else "write:" + os.path.basename(path))
    _io._keep_previous = after(_io._keep_previous, lambda path, previous: "save:previous" if is_pt(path) else None)
    _io._commit = after(_io._commit, lambda tmp, path: "save:done" if is_pt(path) else None)
    if point == "log:torn":
        append_line = rundir.append_line
        appends = [0]

        def torn_append_line(path, line):
            appends[0] += 1
            if appends[0] == int(n):  # half of this line reaches the file, then the process dies
                line = line if line.endswith("\n") else line + "\n"
                with open(path, "a") as f:
                    f.write(line[: len(line) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
            return append_line(path, line)

        rundir.append_line = torn_append_line


def _plant() -> None:
    env = os.environ
    if env.get("GANX_TEST_INJECT_NAN_AT_STEP"):
        _plant_nan(int(env["GANX_TEST_INJECT_NAN_AT_STEP"]))
    if env.get("GANX_TEST_SLOW_STEP"):
        _plant_slow(float(env["GANX_TEST_SLOW_STEP"]))
    if env.get("GANX_TEST_SLOW_METRICS"):
        _plant_slow_metrics(float(env["GANX_TEST_SLOW_METRICS"]))
    if env.get("GANX_TEST_FAIL_SAVE"):
        _plant_full_disk(int(env["GANX_TEST_FAIL_SAVE"]))
    if env.get("GANX_TEST_KILL_AT"):
        _plant_kill(env["GANX_TEST_KILL_AT"])


if __name__ == "__main__":
    _plant()
    sys.exit(main())
