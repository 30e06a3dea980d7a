"""Torch's process-wide switches a run sets (thread count, deterministic algorithms,
cudnn.benchmark), and gives back as it found them."""
from __future__ import annotations

import os

import torch

from ganx.train.config import TrainConfig

__all__ = ["ProcessSwitches"]


class ProcessSwitches:
    """``apply()`` sets what the run asks for (again at each call) and, at its first call, remembers
    what was there before; ``restore()`` puts that back (the caller's thread count, deterministic
    mode and cudnn.benchmark as they were when the Trainer was built)."""

    def __init__(self, config: TrainConfig, device: torch.device):
        self.config, self.device = config, device
        self.before = None

    def apply(self) -> None:
        cfg = self.config
        if self.before is None:
            self.before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                           torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            # cuBLAS reads this when it initialises; it must be set before the first CUDA matmul.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def restore(self) -> None:
        threads, det, warn_only, bench = self.before
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.benchmark = bench
