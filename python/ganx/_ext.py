"""Loads the compiled extension ganx._C and checks it matches the running torch.

There is no fallback: a missing or stale build is an ImportError that says how to rebuild.
"""
from __future__ import annotations

import torch

_REBUILD = (
    "Rebuild ganx against the torch you run, from the ganx source folder:\n"
    "    pip install cmake ninja scikit-build-core numpy\n"
    "    pip install --no-build-isolation --force-reinstall --no-deps .\n"
    "(add -e for an editable developer install; GANX_CUDA=OFF for a CPU-only build)."
)

try:
    from ganx import _C  # noqa: F401  (importing registers torch.ops.ganx.*)
except ImportError as e:  # missing .so, or one linked against another torch
    raise ImportError(
        f"ganx: the compiled extension ganx._C could not be loaded ({e}).\n{_REBUILD}"
    ) from e

if _C.torch_version != torch.__version__:
    raise ImportError(
        f"ganx: ganx._C was built against torch {_C.torch_version}, but torch "
        f"{torch.__version__} is running.\n{_REBUILD}"
    )

CUDA_BUILT: bool = bool(_C.cuda)
CUDA_ARCHS: str = str(_C.cuda_archs)
BUILT_TORCH_VERSION: str = str(_C.torch_version)


def cuda_arch_summary(archs: str = CUDA_ARCHS) -> str:
    """CMake's architecture list ("80-real,90-real,120") in words: "sm_80, sm_90 (SASS); sm_120 (SASS + PTX)"."""
    items = [a.strip() for a in archs.replace(";", ",").split(",") if a.strip()]
    sass = [f"sm_{a[:-5]}" for a in items if a.endswith("-real")]
    both = [f"sm_{a}" for a in items if not a.endswith("-real") and not a.endswith("-virtual")]
    ptx = [f"compute_{a[:-8]}" for a in items if a.endswith("-virtual")]
    parts = []
    if sass:
        parts.append(", ".join(sass) + " (SASS)")
    if both:
        parts.append(", ".join(both) + " (SASS + PTX)")
    if ptx:
        parts.append(", ".join(ptx) + " (PTX)")
    return "; ".join(parts) or "unknown"
