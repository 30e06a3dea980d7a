"""What a training run writes into its run folder besides checkpoints and sample grids: the folder's
preparation (lock, leftovers of interrupted saves, config.yaml, log lines past the checkpoint
dropped), log.jsonl (written, with its averaging window, and read back), the progress bar's text,
TensorBoard, and metrics.json (written, read back, completed)."""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

import torch

from ganx.train import rundir
from ganx.train.config import TrainConfig

__all__ = ["RunLog", "LogWindow", "TB_METRICS", "BAR_FORMAT", "progress_postfix", "read_log", "read_log_lines"]

# End-of-run metrics written to TensorBoard (and the metric columns of its HPARAMS tab).
TB_METRICS = ("fid", "kid", "classifier_accuracy", "class_entropy", "diversity_ratio",
              "classifier_heldout_accuracy")

# The progress bar's layout: fixed-width fields (a 10-character bar, no rate), so at 80 columns it
# keeps its bar and its end however long the run (h:mm:ss past an hour, 6-digit step counts).
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:10}| {n_fmt}/{total_fmt} {elapsed}<{remaining}{postfix}"


def read_log_lines(path):
    """(line, row) for each non-empty line of a JSONL log; row is None for a line that is not a
    JSON object with an integer ``step``. A torn last line (a process killed mid-write) and any other unreadable line
    are reported once on stderr and skipped by the callers."""
    out = []
    with open(path, "rb") as f:
        lines = f.read().decode("utf-8", "replace").splitlines(keepends=True)
    bad, not_rows = [], []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
            bad.append(i + 1)
        step = row.get("step") if isinstance(row, dict) else None
        if row is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
            row = None  # JSON, but not an object with an integer step (e.g. "5" or null): not a log row
            not_rows.append(i + 1)
        out.append((line, row))
    if bad:
        last = len(lines)
        what = (f"its last line ({last}) is torn" if bad == [last] else f"line(s) {', '.join(map(str, bad[:10]))}"
                f"{' ...' if len(bad) > 10 else ''} are not valid JSON")
        print(f"ganx: warning: {os.fspath(path)}: {what}; skipped", file=sys.stderr)
    if not_rows:
        print(f"ganx: warning: {os.fspath(path)}: line(s) {', '.join(map(str, not_rows[:10]))}"
              f"{' ...' if len(not_rows) > 10 else ''} are not log rows (a JSON object with an integer step); "
              f"skipped", file=sys.stderr)
    return out


def read_log(path) -> List[dict]:
    """The rows of a JSONL log (unreadable lines skipped with a warning, see read_log_lines)."""
    return [row for _, row in read_log_lines(path) if row is not None]


def progress_postfix(row: Dict[str, Any]) -> str:
    """The progress bar's figures: the two losses and D's accuracy on real and fake (when the loss
    reports them), short enough that the bar stays readable in an 80-column terminal (all the
    loss's figures are in log.jsonl)."""
    def frac(v):  # 0.81 -> .81: two characters fewer in an 80-column line
        t = f"{v:.2f}"
        return t[1:] if t.startswith("0.") else t

    acc = f" acc {frac(row['acc_real'])}/{frac(row['acc_fake'])}" if "acc_real" in row and "acc_fake" in row else ""
    return f"D {row['d_loss']:.2f} G {row['g_loss']:.2f}{acc}"


class LogWindow:
    """The figures of the steps since the last log line, summed on the device: read back (one host
    sync, and one all-reduce over the ranks) only when a line is written."""

    def __init__(self, figures: Sequence[str], step: int):
        self.figures = figures
        self.sums: Dict[str, torch.Tensor] = {}
        self.n = 0
        self.since = step  # the step before the window's first step

    def add(self, figs: Dict[str, torch.Tensor]) -> None:
        self.sums = figs if not self.sums else {k: self.sums[k] + figs[k] for k in figs}
        self.n += 1

    def row(self, step: int, epoch: int, log_every: int, mean) -> Dict[str, Any]:
        """The log line of the window ending at ``step`` (``mean`` averages over the ranks), and a
        new window. A window of fewer than ``log_every`` steps (a Ctrl-C, the first line after a
        resume, the last of a run whose length is not a multiple of log_every) is marked
        ``"partial": true``; the plot skips it. Non-finite figures are a FloatingPointError."""
        vals = mean(torch.stack([self.sums[k] for k in self.figures]).div(self.n)).tolist()
        row = {"step": step, "epoch": epoch, **dict(zip(self.figures, vals))}
        if step - self.since < log_every:
            row["partial"] = True
            row["window_steps"] = step - self.since
        if not all(math.isfinite(v) for v in vals):
            raise FloatingPointError(f"non-finite losses at step {step}: {row}")
        self.sums, self.n, self.since = {}, 0, step
        return row


class RunLog:
    """A run folder's lock, its log.jsonl, config.yaml, metrics.json and TensorBoard events (rank 0
    writes them; the other ranks hold a RunLog that is never prepared)."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.lock = rundir.RunLock(run_dir)
        self.tb = None  # the TensorBoard SummaryWriter while one is open

    def path(self, *name: str) -> str:
        return os.path.join(self.run_dir, *name)

    def acquire(self) -> None:
        """Create the run folder and take its lock."""
        rundir.check_run_dir(self.run_dir)
        self.lock.acquire()

    def release(self) -> None:
        self.lock.release()

    def prepare(self, config: TrainConfig, step: int) -> None:
        """Take the run folder's lock, clean what interrupted runs left, write config.yaml and
        drop the log lines after ``step`` (the checkpoint's), all without following links out of
        the folder."""
        import yaml

        self.acquire()
        if self.lock.stale_note:
            rundir.warn(f"{self.run_dir}: {self.lock.stale_note}")
        n = rundir.clean_stale_temporaries(self.run_dir)
        if n:
            rundir.warn(f"{self.run_dir}: removed {n} temporary file(s) of interrupted saves")
        rundir.safe_subdir(self.run_dir, "samples")
        rundir.check_writable(rundir.safe_subdir(self.run_dir, "checkpoints"), ("last.pt", "previous.pt"))
        rundir.atomic_write(self.path("config.yaml"), yaml.safe_dump(config.to_dict(), sort_keys=False),
                            root=self.run_dir)
        self._truncate_log(step)

    def _truncate_log(self, step: int) -> None:
        """After a resume, drop log lines written after the checkpoint (they will be redone).
        Never in place: a new file, fsynced, renamed over the old one (a kill leaves one of them)."""
        log = self.path("log.jsonl")
        if os.path.islink(log):
            raise rundir.RunFolderError(f"{log!r} is a symbolic link; ganx does not write through it. Remove the link")
        if os.path.isfile(log):
            keep, changed = [], False
            for line, row in read_log_lines(log):
                if row is not None and row.get("step", 0) <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
                else:
                    changed = True
            if changed:
                rundir.atomic_write(log, "".join(keep), root=self.run_dir)

    # ------------------------------------------------------------------ log.jsonl and TensorBoard
    def log(self, row: Dict[str, Any], figures: Sequence[str]) -> None:
        """One log.jsonl line (and its TensorBoard scalars)."""
        rundir.append_line(self.path("log.jsonl"), json.dumps(row))
        if self.tb is not None:
            for k in figures:
                self.tb.add_scalar(f"train/{k}", row[k], row["step"])

    def last_logged_row(self, step: int) -> Dict[str, Any]:
        """The log line of ``step`` ({} when there is none)."""
        log = self.path("log.jsonl")
        rows = [row for _, row in read_log_lines(log) if isinstance(row, dict)] if os.path.isfile(log) else []
        return next((row for row in reversed(rows) if row.get("step") == step), {})

    def open_tensorboard(self, config: TrainConfig, step: int) -> None:
        """A SummaryWriter in RUN/tensorboard that drops events after ``step`` (a resumed run's
        redone steps), with the run's configuration in its HPARAMS tab; a note and none when
        tensorboard cannot be imported."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # ImportError, or a tensorboard too old/new for this torch
            print('ganx: tensorboard is not installed; logging to log.jsonl only '
                  '(for TensorBoard logs: pip install "ganx[tensorboard]")')
            return
        self.tb = SummaryWriter(rundir.safe_subdir(self.run_dir, "tensorboard"), purge_step=step + 1)
        self._tb_hparams(config)

    def _tb_hparams(self, config: TrainConfig) -> None:
        """The run's configuration in TensorBoard's HPARAMS tab, in this run's own event file
        (SummaryWriter.add_hparams would open a second run folder), with the final metrics as
        its metric columns (their values are the scalars written at the end of the run)."""
        from torch.utils.tensorboard.summary import hparams

        hp = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in config.to_dict().items()}
        exp, ssi, sei = hparams(hp, {f"metrics/{k}": 0.0 for k in TB_METRICS})
        writer = self.tb._get_file_writer()
        for summary in (exp, ssi, sei):
            writer.add_summary(summary)

    def add_image(self, grid, step: int) -> None:
        """A sample grid (uint8, H x W x C) in TensorBoard, when it is open."""
        if self.tb is not None:
            self.tb.add_image("samples", grid, step, dataformats="HWC")

    def close_tensorboard(self, metrics: Optional[Dict[str, Any]] = None, step: int = 0) -> None:
        """Write the end-of-run ``metrics`` (when given) as TensorBoard scalars at ``step``, and close it."""
        if self.tb is None:
            return
        if metrics is not None:
            for k in TB_METRICS:
                v = metrics.get(k)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"metrics/{k}", v, step)
        self.tb.close()
        self.tb = None

    # ------------------------------------------------------------------ end-of-run outputs
    def missing_outputs(self) -> List[str]:
        """The end-of-run outputs the run folder lacks: ``samples/final.png`` and ``metrics.json``."""
        return [name for name in (os.path.join("samples", "final.png"), "metrics.json")
                if not os.path.isfile(self.path(name))]

    def finished_metrics(self) -> Optional[Dict[str, Any]]:
        """The run's metrics.json when it holds a readable mapping (a finished run's results), else None."""
        try:
            with open(self.path("metrics.json")) as f:
                done = json.load(f)
        except (OSError, ValueError):
            return None
        return done if isinstance(done, dict) else None

    def earlier_metrics(self) -> Optional[Dict[str, Any]]:
        """The quality figures of the run's existing metrics.json (with the step they were computed
        at), for a run resumed with metrics off; None when there are none."""
        path = self.path("metrics.json")
        try:
            with open(path) as f:
                old = json.load(f) if os.path.getsize(path) < (1 << 20) else None
        except (OSError, ValueError):
            return None
        if not isinstance(old, dict):
            return None
        if isinstance(old.get("earlier_metrics"), dict):
            return old["earlier_metrics"]
        keep = {k: v for k, v in old.items() if k in TB_METRICS or k.startswith(("kid", "classifier", "class_"))
                or k in ("feature_space", "n_generated", "n_real")}
        return {"steps": old.get("steps"), **keep} if any(k in TB_METRICS for k in keep) else None

    def write_metrics(self, metrics: Dict[str, Any]) -> None:
        rundir.atomic_write(self.path("metrics.json"), json.dumps(metrics, indent=2), root=self.run_dir)
