"""What the built CUDA kernels do in SASS (the GPU's machine code), read from the installed
module with cuobjdump: the properties their speed depends on and that no emulator can see.

- Every BCE kernel (`bce_kernel`, each functor and dtype, and the backward's `bce_scale_kernel`)
  moves full 16-byte items with 128-bit global loads *and* stores (LDG.E.128 / STG.E.128).
- The upsample-conv epilogue kernels (the phase epilogues and the 1x1 kernels' replicate form)
  in their 32-bit index instantiation make no call (the only routine they could call is the
  compiler's 64-bit integer division, ~70 instructions each); the 64-bit instantiation does (so
  the check can fail).

Runs wherever ganx was built with CUDA kernels and cuobjdump is found (the triton wheel that
comes with a CUDA torch ships one; so does a CUDA toolkit): in CI, the README's test command
builds the CUDA kernels, so these run there on every submission without a GPU.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ganx import _ext

pytestmark = pytest.mark.skipif(not _ext.CUDA_BUILT, reason="ganx was built without CUDA kernels")


def _cuobjdump() -> str | None:
    try:
        import triton  # noqa: F401  (ships cuobjdump with a CUDA torch)

        p = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    except ImportError:
        pass
    for cand in (shutil.which("cuobjdump"), "/usr/local/cuda/bin/cuobjdump"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def _demangle(names: list[str]) -> list[str]:
    filt = shutil.which("c++filt") or shutil.which("cu++filt")
    if filt is None:
        return names
    out = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True, check=True).stdout
    return out.splitlines()


@functools.lru_cache(maxsize=None)
def sass() -> dict[str, str]:
    """Demangled kernel name -> its SASS, for one architecture the module holds (sm_90 if built)."""
    tool = _cuobjdump()
    if tool is None:
        pytest.skip("no cuobjdump (install a CUDA torch with triton, or a CUDA toolkit)")
    so = _ext._C.__file__
    archs = [a.split("-")[0] for a in _ext.CUDA_ARCHS.split(",") if a]
    arch = "90" if "90" in archs else archs[0]
    res = subprocess.run([tool, "-sass", "-arch", f"sm_{arch}", so], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    parts = re.split(r"^\s*Function : (\S+)\s*$", res.stdout, flags=re.M)
    mangled, bodies = parts[1::2], parts[2::2]
    assert mangled, f"cuobjdump found no kernels for sm_{arch} in {so}"
    return dict(zip(_demangle(mangled), bodies))


def kernels(name: str) -> dict[str, str]:
    found = {k: v for k, v in sass().items() if re.search(r"\b" + name + r"<", k)}
    assert found, f"no instantiation of {name} in the module's SASS: {sorted(sass())[:20]}"
    return found


# The epilogue kernels call nothing but the compiler's 64-bit division / remainder routine, whose
# calls cuobjdump shows as `CALL.REL.NOINC <address>` (no symbol name).
DIV64 = re.compile(r"\bCALL\.[A-Z.]*\s+[^\n]*")


@pytest.mark.parametrize("kernel", ["bce_kernel", "bce_scale_kernel"])
def test_bce_kernels_move_16_byte_items(kernel):
    for name, body in kernels(kernel).items():
        assert re.search(r"\bLDG\.E\.128\b", body), f"{name}: no 128-bit global load"
        assert re.search(r"\bSTG\.E\.128\b", body), f"{name}: no 128-bit global store"


def test_every_bce_kernel_instantiation_is_checked():
    # 4 dtypes x (discriminator/generator constants, logits with tensors, probabilities, critic losses)
    assert len(kernels("bce_kernel")) >= 16
    assert len([k for k in kernels("bce_kernel") if "CriticConst" in k]) == 4
    assert len(kernels("bce_scale_kernel")) == 4


@pytest.mark.parametrize("kernel", ["upconv_epilogue_fwd_kernel", "upconv_epilogue_bwd_planes_kernel",
                                    "upconv_epilogue_bwd_rows_kernel", "upconv_replicate_fwd_kernel",
                                    "upconv_replicate_bwd_planes_kernel", "upconv_replicate_bwd_rows_kernel"])
def test_epilogue_32_bit_index_has_no_64_bit_division(kernel):
    found = kernels(kernel)
    i32 = {k: v for k, v in found.items() if re.search(r", int>", k)}
    i64 = {k: v for k, v in found.items() if re.search(r", long>", k)}
    assert len(i32) == 4 and len(i64) == 4, sorted(found)  # one per dtype
    for name, body in i32.items():
        assert not DIV64.search(body), f"{name}: calls a 64-bit division routine:\n" + "\n".join(DIV64.findall(body))
    # the pattern does find the routine where it is used (the check can fail)
    assert any(DIV64.search(body) for body in i64.values()), "the 64-bit instantiations show no 64-bit division call"
