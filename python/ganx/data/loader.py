"""A resumable batch iterator over an in-memory dataset.

The order of epoch ``e`` is ``randperm(N)`` from a generator seeded with ``(seed, e)``, so
the whole data order is a pure function of the seed and the iterator's position is just
two integers (epoch, index): that is the "data order" part of a checkpoint's RNG state.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["BatchIterator"]


class BatchIterator:
    """Infinite iterator of (images, labels-or-None) batches; the last partial batch of an
    epoch is dropped (a constant batch size keeps BatchNorm statistics comparable). With
    ``world_size > 1``, ``batch_size`` is the global batch and each call returns this rank's
    ``batch_size / world_size`` share of it."""

    def __init__(self, images: torch.Tensor, labels: Optional[torch.Tensor], batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(images) < batch_size:
            raise ValueError(f"batch_size {batch_size} is larger than the dataset ({len(images)} images)")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} (the global batch) must be divisible by the number of "
                             f"processes ({world_size})")
        self.images, self.labels = images, labels
        self.batch_size, self.seed = batch_size, seed
        # Distributed sampling (the role of DistributedSampler + set_epoch): every rank computes
        # the same permutation of epoch e from (seed, e) and takes its contiguous share of each
        # global batch, so the ranks see disjoint data and together exactly the batches of a
        # single-process run. The position (epoch, index) counts global batches on every rank.
        self.rank, self.world_size = rank, world_size
        self.epoch, self.index = 0, 0
        self._perm = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.images) // self.batch_size

    def _order(self) -> torch.Tensor:
        if self._perm is None:
            # Modulo 2^64: the same seeds as ever for every seed that fitted, and no overflow for large ones.
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % (1 << 64))
            self._perm = torch.randperm(len(self.images), generator=g)
        return self._perm

    def next(self) -> Tuple[torch.Tensor, Optional[torch.Tensor], bool]:
        """Next batch, and whether it ended an epoch."""
        idx = self._order()[self.index * self.batch_size:(self.index + 1) * self.batch_size]
        if self.world_size > 1:
            share = self.batch_size // self.world_size
            idx = idx[self.rank * share:(self.rank + 1) * share]
        self.index += 1
        epoch_end = self.index >= self.batches_per_epoch
        if epoch_end:
            self.epoch, self.index, self._perm = self.epoch + 1, 0, None
        return self.images[idx], (None if self.labels is None else self.labels[idx]), epoch_end

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index, self.seed, self._perm = int(state["epoch"]), int(state["index"]), int(state["seed"]), None
