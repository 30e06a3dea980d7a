"""What `ganx info` says about the build: the CUDA architecture list the module holds."""
import subprocess
import sys

import pytest

from ganx import _ext


@pytest.mark.parametrize("archs, words", [
    ("80-real,90-real,100-real,120", "sm_80, sm_90, sm_100 (SASS); sm_120 (SASS + PTX)"),
    ("90a-real", "sm_90a (SASS)"),
    ("80-real;90", "sm_80 (SASS); sm_90 (SASS + PTX)"),
    ("", "unknown"),
])
def test_cuda_arch_summary(archs, words):
    assert _ext.cuda_arch_summary(archs) == words


def test_module_arch_string_is_one_list():
    # A multi-architecture build once split the list into several compile flags; the module
    # must carry it as one comma-separated string (empty for a CPU-only build).
    assert ";" not in _ext.CUDA_ARCHS
    if _ext.CUDA_BUILT:
        assert all(a.split("-")[0][:2].isdigit() for a in _ext.CUDA_ARCHS.split(","))
    else:
        assert _ext.CUDA_ARCHS == ""


def test_info_prints_the_build():
    out = subprocess.run([sys.executable, "-m", "ganx", "info"], capture_output=True, text=True, check=True).stdout
    assert "CUDA kernels built: " + ("yes, for sm_" if _ext.CUDA_BUILT else "no") in out
