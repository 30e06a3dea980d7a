"""The tiny training run the training, CLI and reliability tests share (one definition, imported
by the test files; the tests directory is on sys.path as for faulty_ganx.py).

* :data:`MODEL`: the CLI options of the tiny model (16 px, latent 8, widths 8);
* :data:`QUIET`: a CPU run that writes no more than it must (no progress bar, no metrics, no
  sample grids but the final one);
* :data:`TINY`: MODEL and QUIET, and a quick single-threaded run (batches of 32, reference ops,
  a log line per step). A test that needs another run says so by adding flags after ``*TINY``
  (the last of a repeated flag wins), e.g. test_cli.py (metrics on), test_distributed.py (fused
  ops, synchronised BatchNorm); test_fuzz.py takes MODEL and QUIET only, so that a config file's
  keys are not overridden;
* :data:`SMALL`: 256 digits at 16 px (16 batches of 16, 8 of 32 per epoch);
* :func:`tiny`: the TrainConfig of the same run; :func:`run_cli`: ``ganx`` in this process;
  :func:`copy_run`: a copy of a run folder (of the ``trained`` fixture's, tests/conftest.py).
"""
import shutil

import torch

from ganx.cli import main
from ganx.data import load_digits_dataset
from ganx.train import TrainConfig

MODEL = ["--image-size", "16", "--latent-dim", "8", "--g-width", "8", "--d-width", "8"]
QUIET = ["--device", "cpu", "--no-progress", "--no-metrics", "--sample-every", "0"]
TINY = MODEL + ["--batch-size", "32", "--log-every", "1", "--impl", "reference", "--threads", "1"] + QUIET
SMALL = load_digits_dataset(16)._subset(torch.arange(256))


def tiny(out, **kw) -> TrainConfig:
    base = dict(image_size=16, latent_dim=8, g_width=8, d_width=8, batch_size=32, steps=4, checkpoint_every=2,
                progress=False, metrics=False, sample_every=0, device="cpu", impl="reference", out=str(out),
                log_every=1)
    return TrainConfig(**{**base, **kw})


def run_cli(capsys, *argv):
    """``ganx ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def copy_run(src, dst):
    """A copy of the run folder ``src`` at ``dst`` (links copied as links); returns ``dst``."""
    shutil.copytree(src, dst, symlinks=True)
    return dst
