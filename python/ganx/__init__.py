"""ganx: a GAN toolkit for PyTorch whose hot paths are fused C++/CUDA kernels."""
from ganx._version import __version__  # noqa: F401
from ganx import _ext  # noqa: F401  (loads _C; raises ImportError with a fix if it cannot)
from ganx import functional, nn, ops  # noqa: F401
from ganx.convert import fuse, logits_and_bce  # noqa: F401

