"""Multi-process training (``torchrun --nproc-per-node N -m ganx train ...``).

One process per device. The Trainer asks :func:`setup` for a :class:`DistContext`; outside
torchrun (no ``WORLD_SIZE`` in the environment, or 1) it is a no-op context, so
single-process training takes exactly the code path it always took.

* Backend: NCCL when training on CUDA (rank ``r`` uses ``cuda:LOCAL_RANK``), gloo on the CPU.
* Both G and D are wrapped in DistributedDataParallel (``find_unused_parameters=False``: every
  parameter is used in every update that goes through the wrapper). The trainer's G update runs
  the *unwrapped* D with its parameters frozen, so D's gradient all-reduce never fires during G's
  backward and D's weights stay identical on every rank.
* ``batch_size`` is the *global* batch: each rank takes a contiguous ``batch_size / world``
  slice of every global batch (see :class:`ganx.data.BatchIterator`), and draws the full global
  latent batch from the shared noise generator and keeps its slice, so the optimisation is the
  same whatever the number of processes.
* SyncBatchNorm (``sync_batchnorm``): torch's ``nn.SyncBatchNorm`` on CUDA; on the CPU (where
  torch's one refuses to run) :class:`AllReduceBatchNorm2d`, the same math with a differentiable
  all-reduce of the per-channel sums.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "setup", "cleanup", "AllReduceBatchNorm2d", "convert_sync_batchnorm"]


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: Optional[str] = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---------------------------------------------------------------- collectives
    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """DDP around ``module`` when distributed, else ``module`` itself."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids, output_device=device.index if ids else None,
                   broadcast_buffers=True, find_unused_parameters=False)

    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of a tensor (a copy; the input is left alone)."""
        if not self.enabled:
            return t
        t = t.detach().clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t / self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank if ``flag`` is True on any rank."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(device_name: str) -> DistContext:
    """Join the process group that torchrun describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Returns a no-op context without torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return DistContext(rank=rank, world_size=dist.get_world_size(), local_rank=local_rank, backend=backend)


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """Under torchrun each process drives one GPU: cuda:LOCAL_RANK."""
    if ctx.enabled and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def cleanup() -> None:
    """Leave the process group cleanly before the interpreter exits.

    gloo's worker threads destroy finished work items (which hold tensors, and so Python
    objects) asynchronously; one still pending when Python finalises aborts the process
    ("terminate called without an active exception", seen with torch 2.14 on CPU). A barrier
    drains every rank's queue first, and the garbage of the last step is freed while the
    interpreter still runs.
    """
    if dist.is_available() and dist.is_initialized():
        import gc

        try:
            dist.barrier()
        except Exception:  # a peer that already failed must not hide this rank's own error
            pass
        gc.collect()
        dist.destroy_process_group()


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch (all ranks),
    for backends where ``nn.SyncBatchNorm`` does not run (the CPU). Forward all-reduces the
    per-channel count, sum and sum of squares; the all-reduce is differentiable
    (``torch.distributed.nn``), so backward all-reduces their gradients just as SyncBatchNorm
    does, and the gradient equals the single-process one on the concatenated batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        xf = x.float()
        n = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=xf.dtype, device=x.device)
        stats = torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3)), n])
        stats = all_reduce(stats)
        c = x.shape[1]
        count = stats[2 * c]
        mean = stats[:c] / count
        var = (stats[c:2 * c] / count - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var.detach() * (count / (count - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm2d of ``module`` computes its statistics over the global batch."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = AllReduceBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats).to(device)
            new.load_state_dict(child.state_dict())
            if child.affine:  # keep the very Parameter objects (optimisers may already hold them)
                new.weight, new.bias = child.weight, child.bias
            setattr(module, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return module
