"""cmake/cuda_headers.cmake: which CUDA headers the build takes from pip's nvidia/*/include.

The toolkit's own headers must win: a CUDA torch's pip dependencies bring a whole CUDA runtime
and CCCL of the wheels' version, and with those first on the include path a toolkit older than
the wheels stopped the build ("CUDA compiler and CUDA toolkit headers are incompatible").
These run the CMake functions in script mode on folders made here (no nvcc, no CUDA torch).
"""
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The cmake the build uses (pip's, next to the interpreter) first, then PATH's.
CMAKE = shutil.which("cmake", path=os.path.dirname(sys.executable)) or shutil.which("cmake")
pytestmark = pytest.mark.skipif(CMAKE is None, reason="needs cmake")


def _touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _run_cmake(tmp_path: Path, body: str) -> str:
    script = tmp_path / "run.cmake"
    script.write_text("cmake_minimum_required(VERSION 3.20)\n"  # policies (IN_LIST) as in a project
                      f'include("{ROOT}/cmake/cuda_headers.cmake")\n' + textwrap.dedent(body))
    out = subprocess.run([CMAKE, "-P", str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stderr  # message() writes there


def test_only_headers_the_toolkit_lacks_are_taken(tmp_path):
    tk = tmp_path / "toolkit"
    for name in ("cuda_runtime.h", "cuda/std/version", "cccl/cuda/std/version", "cub/cub.cuh"):
        _touch(tk / name, "toolkit")
    pip13 = tmp_path / "nvidia/cu13/include"
    for name in ("cuda_runtime.h", "cuda/std/version", "cccl/cuda/std/version", "cub/cub.cuh",
                 "cusparse.h", "cublas_v2.h"):
        _touch(pip13 / name, "pip")
    nccl = tmp_path / "nvidia/nccl/include"
    _touch(nccl / "nccl.h", "nccl")
    _touch(nccl / "cusparse.h", "second copy")   # the first folder that has an entry wins
    out_dir = tmp_path / "linked"
    err = _run_cmake(tmp_path, f"""
        ganx_cuda_pip_headers("{out_dir}" "{tk}" "{pip13};{nccl}" names)
        message("NAMES=${{names}}")
    """)
    assert "NAMES=cublas_v2.h;cusparse.h;nccl.h" in err
    assert sorted(os.listdir(out_dir)) == ["cublas_v2.h", "cusparse.h", "nccl.h"]
    assert (out_dir / "cusparse.h").read_text() == "pip"
    # The toolkit has CCCL in a subfolder (cccl/) and at the top (cuda/, cub/): neither is shadowed.
    assert not (out_dir / "cuda").exists() and not (out_dir / "cccl").exists()


def test_pip_cuda_header_version(tmp_path):
    inc = tmp_path / "nvidia/cu13/include"
    _touch(inc / "cuda_runtime_api.h", "#pragma once\n#define CUDART_VERSION  13020\n")
    err = _run_cmake(tmp_path, f"""
        ganx_cuda_header_version("{tmp_path}/none;{inc}" v)
        message("V=${{v}}")
    """)
    assert "V=13.2" in err


def test_probe_reports_the_compiler_error(tmp_path):
    # An nvcc that cannot compile torch's headers: the probe says so with the first error line.
    fake = tmp_path / "nvcc"
    fake.write_text("#!/bin/sh\necho 'In file included from x.cu:1:'\n"
                    "echo 'cuda_toolkit.h(39): error: #error CUDA compiler and CUDA toolkit headers are incompatible' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    err = _run_cmake(tmp_path, f"""
        set(TORCH_VERSION 9.9.9)
        ganx_cuda_probe("{fake}" 90 17 "{tmp_path}" "A=1" ok error)
        message("OK=${{ok}}")
        message("ERROR=${{error}}")
    """)
    assert "OK=FALSE" in err
    assert "ERROR=cuda_toolkit.h(39): error: #error CUDA compiler and CUDA toolkit headers are incompatible" in err


def test_reconfigure_keeps_right_links_and_drops_stale_ones(tmp_path):
    tk = tmp_path / "toolkit"
    _touch(tk / "cuda_runtime.h", "toolkit")
    pip = tmp_path / "nvidia/cu13/include"
    _touch(pip / "cusparse.h", "pip")
    _touch(pip / "nccl_device/core.h", "pip")
    out_dir = tmp_path / "linked"
    body = f"""
        ganx_cuda_pip_headers("{out_dir}" "{tk}" "{pip}" names)
        message("NAMES=${{names}}")
    """
    _run_cmake(tmp_path, body)
    kept = os.lstat(out_dir / "cusparse.h")
    # The toolkit now has the folder (a newer toolkit): its link goes, what it pointed to stays.
    _touch(tk / "nccl_device/core.h", "toolkit")
    err = _run_cmake(tmp_path, body)
    assert "NAMES=cusparse.h" in err
    assert sorted(os.listdir(out_dir)) == ["cusparse.h"]
    assert (pip / "nccl_device/core.h").read_text() == "pip"
    # A re-configure leaves a right link as it was (no new link, so nothing looks changed).
    assert os.lstat(out_dir / "cusparse.h").st_ino == kept.st_ino
