"""The CPU loss outputs that come from ganx's buffer cache behave like torch's own tensors
(issue 17, item 6): resizable, usable with out=, memory given back to the system on clear,
sizes that vary a little still reuse, and a bad GANX_CPU_BUFFER_CACHE_MB is a clear error."""
import os
import subprocess
import sys

import pytest
import torch

import ganx.functional as GF
from ganx.ops import clear_cpu_buffer_cache, cpu_buffer_cache_stats

N = 600_000  # 2.4 MB of float32: from the cache


def _cached_output(n=N):
    return GF.bce_generator_loss(torch.randn(n), reduction="none")


def test_cached_outputs_resize_and_fill():
    for new in (700_000, 100, 0, 3_000_000):
        t = _cached_output()
        t.resize_(new)
        t.fill_(1.5)
        assert t.shape == (new,) and bool((t == 1.5).all())
    t = _cached_output()
    t.resize_(300, 2000).fill_(2.0)
    assert float(t.sum()) == 2.0 * 600_000


def test_cached_outputs_as_out_arguments():
    x = torch.randn(N)
    out = _cached_output()
    torch.add(x, 1, out=out)
    torch.testing.assert_close(out, x + 1)
    out = _cached_output()
    out.resize_(0)
    torch.mul(torch.ones(2 * N), 3, out=out)  # grows through the storage's allocator
    assert out.shape == (2 * N,) and bool((out == 3).all())
    g = torch.randn(N, requires_grad=True)
    loss = GF.bce_generator_loss(g, reduction="none")
    torch.sigmoid(g.detach(), out=loss.detach())
    torch.testing.assert_close(loss.detach(), torch.sigmoid(g.detach()))


def test_varying_sizes_reuse_buffers():
    clear_cpu_buffer_cache()
    s0 = cpu_buffer_cache_stats()
    for i in range(50):
        GF.bce_generator_loss(torch.randn(N + 37 * i, requires_grad=True)).backward()
    s = cpu_buffer_cache_stats()
    assert s["hits"] - s0["hits"] >= 45, s
    clear_cpu_buffer_cache()


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_clear_returns_memory_to_the_system():
    clear_cpu_buffer_cache()
    outs = [GF.bce_generator_loss(torch.randn(1 << 20) * i, reduction="none") for i in range(6)]  # 6 x 4 MiB
    for o in outs:
        o.fill_(0.5)  # touch every page
    del outs, o
    held = cpu_buffer_cache_stats()["bytes"]
    assert held >= 6 * 4 << 20
    before = _rss()
    clear_cpu_buffer_cache()
    assert cpu_buffer_cache_stats()["bytes"] == 0
    assert before - _rss() >= 0.9 * held


@pytest.mark.parametrize("value", ["17592186044416", "-1", "12abc", "99999999999999999999999"])
def test_bad_cache_size_variable_is_a_clear_error(value):
    code = "import torch, ganx.functional as GF; GF.bce_generator_loss(torch.randn(600000), reduction='none')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "GANX_CPU_BUFFER_CACHE_MB": value})
    assert r.returncode != 0 and "GANX_CPU_BUFFER_CACHE_MB must be a whole number of MiB" in r.stderr, r.stderr
    assert value in r.stderr


def test_cache_off_and_limit_from_variable():
    code = ("import torch, ganx.functional as GF, ganx.ops as O; t = GF.bce_generator_loss(torch.randn(600000), "
            "reduction='none'); del t; print(O.cpu_buffer_cache_stats())")
    for value, limit in (("0", 0), ("3", 3 << 20)):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "GANX_CPU_BUFFER_CACHE_MB": value})
        assert r.returncode == 0, r.stderr
        stats = eval(r.stdout)
        assert stats["limit_bytes"] == limit and stats["blocks"] == (0 if limit == 0 else 1), stats


def test_a_larger_cached_block_serves_a_smaller_request():
    clear_cpu_buffer_cache()
    big = _cached_output(2 * N)
    ptr = big.data_ptr()
    del big
    small = _cached_output(int(1.2 * N))  # fits in the freed block, which is less than twice as large
    assert small.data_ptr() == ptr
    small.fill_(3.0)
    assert small.shape == (int(1.2 * N),) and bool((small == 3.0).all())
    del small
    tiny = _cached_output(N // 2)  # more than twice smaller: a block of its own
    assert tiny.data_ptr() != ptr
    clear_cpu_buffer_cache()


def test_bad_cache_size_variable_stops_training_at_start(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ganx", "train", "--out", str(tmp_path / "r"), "--steps", "2",
                        "--no-metrics", "--no-progress", "--device", "cpu"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "GANX_CPU_BUFFER_CACHE_MB": "-5"})
    assert r.returncode == 2 and "GANX_CPU_BUFFER_CACHE_MB" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "r" / "log.jsonl").exists()
