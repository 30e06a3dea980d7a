"""``python tests/faulty_ganx.py ARGS`` runs ``python -m ganx ARGS`` with faults planted by
monkeypatching, for the tests that drive a real process (a signal mid-run, a NaN loss). ganx
itself has no such hooks; this file reads these environment variables:

* ``GANX_TEST_INJECT_NAN_AT_STEP=N``: the D loss of step N (1-based) becomes NaN.
* ``GANX_TEST_SLOW_STEP=SECONDS``: sleep that long after each training step (so a test can
  signal the process in the middle of a run).

Works under torchrun too (``torchrun ... tests/faulty_ganx.py train ...``).
"""
import os
import sys
import time

from ganx.cli import main
from ganx.train.trainer import Trainer


def _plant() -> None:
    nan_at = int(os.environ.get("GANX_TEST_INJECT_NAN_AT_STEP") or 0)
    slow = float(os.environ.get("GANX_TEST_SLOW_STEP") or 0)
    if nan_at:
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
    if slow:
        train_step = Trainer.train_step

        def slow_train_step(self):
            figs = train_step(self)
            time.sleep(slow)
            return figs

        Trainer.train_step = slow_train_step


if __name__ == "__main__":
    _plant()
    sys.exit(main())
