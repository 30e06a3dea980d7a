"""Rules of the CUDA host code that a CPU-only machine can check in the source.

Every function of csrc/cuda/*.cu that touches a stream (the current stream, a capture status, a
memset or a launch on it) must first take a device guard from a tensor or device it was given: with
tensors on cuda:1 while the current device is 0, an unguarded `getCurrentCUDAStream()` is cuda:0's
stream, so a timing sync waits on the wrong GPU and every DDP rank touches cuda:0.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
STREAM_USE = re.compile(r"getCurrentCUDAStream|currentStreamCaptureStatus|cudaMemsetAsync|cudaStreamSynchronize")
GUARD = re.compile(r"CUDAGuard\s+\w+\s*\(")


def functions(text: str):
    """(name, body) of each top-level function definition: a line ending in '{' at column 0 whose
    signature has a parenthesis, up to the matching brace."""
    out = []
    for m in re.finditer(r"^(?=[A-Za-z_])(?:[\w:<>,&*\s]+?)\b(\w+)\s*\([^;{]*\)\s*(?:const\s*)?\{", text, re.M):
        depth, i = 0, m.end() - 1
        while i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        out.append((m.group(1), text[m.end():i]))
    return out


CU_FILES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))


@pytest.mark.parametrize("path", CU_FILES, ids=lambda p: p.name)
def test_stream_users_take_a_device_guard_first(path):
    checked = 0
    for name, body in functions(path.read_text()):
        use = STREAM_USE.search(body)
        if use is None:
            continue
        guard = GUARD.search(body)
        assert guard is not None and guard.start() < use.start(), \
            f"{path.name}: {name}() uses the current stream without a device guard taken first"
        checked += 1
    assert checked > 0, f"{path.name}: no function using a stream found (is the parser broken?)"


def test_the_check_catches_an_unguarded_sync():
    bad = "void sync_cuda(c10::Device device) {\n  at::cuda::getCurrentCUDAStream().synchronize();\n}\n"
    (name, body), = functions(bad)
    assert name == "sync_cuda" and STREAM_USE.search(body) and not GUARD.search(body)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_timed_choice_on_the_second_gpu():
    """cudnn.benchmark timing with tensors on cuda:1 while the current device is 0: right results,
    and the current device is left alone."""
    import ganx.functional as GF
    from ganx.ops import reference

    torch.cuda.set_device(0)
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        x = torch.randn(2, 8, 5, 6, device="cuda:1", dtype=torch.float64)
        w = torch.randn(4, 8, 3, 3, device="cuda:1", dtype=torch.float64)
        y = GF.upsample_conv2d(x, w, scale_factor=2)
        torch.testing.assert_close(y, reference.upsample_conv2d(x, w, None, 2))
        assert torch.cuda.current_device() == 0
    finally:
        torch.backends.cudnn.benchmark = old
