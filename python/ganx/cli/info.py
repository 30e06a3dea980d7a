"""``ganx info``: versions, the build, the devices and the choices ganx makes on them."""
from __future__ import annotations

import argparse
import importlib
import os
import platform

import torch

import ganx
from ganx import _ext
from ganx.ops import upsample_conv as _uc

__all__ = ["add_parser", "run"]


def add_parser(sub) -> argparse.ArgumentParser:
    return sub.add_parser("info", help="print versions, build and devices")


def run(args) -> int:
    print(f"ganx {ganx.__version__} ({os.path.dirname(ganx.__file__)})")
    print(f"python {platform.python_version()} on {platform.platform()}")
    print(f"torch running: {torch.__version__}; ganx built against torch {_ext.BUILT_TORCH_VERSION}")
    print(f"CUDA kernels built: {'yes' if _ext.CUDA_BUILT else 'no'}"
          + (f", for {_ext.cuda_arch_summary()}" if _ext.CUDA_BUILT else ""))
    print(f"torch CUDA: {torch.version.cuda or 'none (CPU build)'}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            print(f"device cuda:{i}: {p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB")
    else:
        print("visible CUDA devices: none")
    print(f"CPU threads: {torch.get_num_threads()}; CPU loss kernels: {_ext._C.cpu_isa()} "
          f"(torch's CPU capability: {torch.backends.cpu.get_cpu_capability()})")
    forced = _uc.get_upconv_algorithm()
    print(f"upsample-conv algorithms: {', '.join(_uc.UPCONV_ALGORITHMS)}; "
          + (f"forced: {forced} (GANX_UPCONV_ALGO / ganx.ops.set_upconv_algorithm)" if forced else
             "automatic (static rule; timed once per shape when torch.backends.cudnn.benchmark is on); "
             "choices made so far: ganx.ops.upconv_algorithm_choices()"))
    try:
        importlib.import_module("torch.utils.tensorboard")  # an optional extra: its absence is reported
        tb = "yes"
    except Exception:
        tb = 'no (logs go to log.jsonl only; pip install "ganx[tensorboard]" for TensorBoard)'
    print(f"tensorboard: {tb}")
    return 0
