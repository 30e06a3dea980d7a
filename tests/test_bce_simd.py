"""The SIMD CPU kernel of the logit losses (csrc/cpu/bce_vec.cpp): float32/float16/bfloat16.

Every element is checked against float64 math (its own exp/log1p polynomials must stay within a
few ulp), on every special value, for every coefficient form (constants; target, weight and
pos_weight tensors), for every length 0..80 (all tail lengths of the 16-lane vectors and the
4-vector unroll), and each instruction-set copy of the kernel is run in a subprocess under
ATEN_CPU_CAPABILITY. Also the backward shortcuts: no multiply when the incoming gradient is 1
(the saved gradient is returned, safely), and no zero-filled gradients for unused outputs.
"""
from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import ganx.functional as GF
from ganx import _ext

SPECIAL = [0.0, -0.0, 1e-30, -1e-30, 1e-7, -1e-7, 0.3466, -0.3466, 0.8814, -0.8814, 1.0, -1.0, 15.9, -15.9,
           16.7, -16.7, 86.9, -86.9, 87.5, -87.5, 88.8, -88.8, 103.0, -103.0, 1e4, -1e4, 3e38, -3e38,
           float("inf"), float("-inf"), float("nan")]


def values(n: int, seed: int) -> torch.Tensor:
    """float32-representable logits: specials, then a wide log-uniform spread of both signs."""
    g = torch.Generator().manual_seed(seed)
    mag = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(-12, 5, generator=g))
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    x = (mag * sign).float().double()
    k = min(n, len(SPECIAL))
    x[:k] = torch.tensor(SPECIAL[:k], dtype=torch.float64).float().double()
    return x[torch.randperm(n, generator=g)]


def exact(x, cpos, cneg, w):
    """float64 loss and d loss / d x, terms with zero coefficient dropped (as the kernel does), and
    the size of the gradient's two terms (with 0 < t < 1 they cancel: float32 can only be
    accurate relative to them, eager's float32 included)."""
    sp_neg = F.softplus(-x)  # softplus(-x) = cpos's term
    sp_pos = F.softplus(x)
    a = torch.where(cpos == 0, torch.zeros_like(x), cpos * sp_neg)
    b = torch.where(cneg == 0, torch.zeros_like(x), cneg * sp_pos)
    loss = w * (a + b)
    grad = w * (cneg * torch.sigmoid(x) - cpos * torch.sigmoid(-x))
    grad.scale = (w * (cneg * torch.sigmoid(x) + cpos * torch.sigmoid(-x))).abs()
    return loss, grad


def assert_ulp_close(got32, want64, what, ulps=8):
    got = got32.double()
    both_nan = torch.isnan(got) & torch.isnan(want64)
    same_inf = torch.isinf(got) & (got == want64)
    scale = getattr(want64, "scale", want64.abs())
    tol = ulps * torch.finfo(torch.float32).eps * scale + 1e-37 * ulps
    ok = both_nan | same_inf | ((got - want64).abs() <= tol)
    if not bool(ok.all()):
        i = int((~ok).nonzero()[0])
        raise AssertionError(f"{what}: element {i}: got {got[i].item()!r}, want {want64[i].item()!r} "
                             f"({int((~ok).sum())} bad of {ok.numel()})")


@pytest.mark.parametrize("target", [1.0, 0.0, 0.9, 0.3])
def test_generator_elementwise_float32_every_special_value(target):
    x64 = values(4099, seed=1)
    x = x64.float().requires_grad_(True)
    loss = GF.bce_generator_loss(x, target=target, reduction="none")
    (g,) = torch.autograd.grad(loss, x, torch.ones_like(loss))
    t = torch.full_like(x64, target)
    want_l, want_g = exact(x64, t, 1 - t, torch.ones_like(x64))
    assert_ulp_close(loss.detach(), want_l, "loss")
    assert_ulp_close(g, want_g, "grad")
    # NaN in, NaN out; never silently finite
    assert torch.equal(torch.isnan(loss.detach()), torch.isnan(x64))


@pytest.mark.parametrize("n", list(range(0, 81)) + [1000, 16384 + 17])
def test_every_tail_length_reduced_and_stats(n):
    real64, fake64 = values(n, seed=n), values(n + 3, seed=1000 + n)
    # NaN would make every sum NaN; +-inf stay (their terms are 0 or inf, as the math says)
    real64 = torch.where(real64.isnan(), 0.5, real64)
    fake64 = torch.where(fake64.isnan(), -0.5, fake64)
    r, f = real64.float(), fake64.float()
    loss, stats = GF.bce_discriminator_loss(r, f, real_target=0.9, fake_target=0.05, return_stats=True)
    lr, _ = exact(real64, torch.full_like(real64, 0.9), torch.full_like(real64, 0.1), torch.ones_like(real64))
    lf, _ = exact(fake64, torch.full_like(fake64, 0.05), torch.full_like(fake64, 0.95), torch.ones_like(fake64))
    want = lr.mean() + lf.mean()
    if n == 0:
        assert torch.isnan(loss)
        return
    if torch.isfinite(want):
        assert abs(loss.item() - want.item()) <= 1e-5 * abs(want.item()), (loss.item(), want.item())
    else:
        assert loss.item() == want.item()
    s = [v.item() for v in stats]
    assert s[0] == pytest.approx((real64 > 0).double().mean().item(), abs=1e-7)
    assert s[1] == pytest.approx((fake64 <= 0).double().mean().item(), abs=1e-7)
    assert s[2] == pytest.approx(torch.sigmoid(real64).mean().item(), rel=1e-6, abs=1e-7)
    assert s[3] == pytest.approx(torch.sigmoid(fake64).mean().item(), rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("wform,pwform", list(itertools.product(["none", "one", "full"], ["none", "one", "full"])))
def test_bce_with_logits_every_coefficient_form_float32(wform, pwform):
    n = 16 * 4 * 3 + 11  # full unrolled blocks, single vectors and a tail
    x64 = values(n, seed=7).nan_to_num(nan=2.0).clamp(-1e4, 1e4)
    g = torch.Generator().manual_seed(8)
    t64 = torch.rand(n, generator=g, dtype=torch.float64).float().double()
    t64[:6] = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.5, 0.0])
    shapes = {"none": None, "one": (1,), "full": (n,)}
    w64 = None if shapes[wform] is None else (torch.rand(shapes[wform], generator=g, dtype=torch.float64) + .2).float().double()
    pw64 = None if shapes[pwform] is None else (torch.rand(shapes[pwform], generator=g, dtype=torch.float64) * 3).float().double()
    x = x64.float().requires_grad_(True)
    loss = GF.bce_with_logits(x, t64.float(), None if w64 is None else w64.float(),
                              pos_weight=None if pw64 is None else pw64.float(), reduction="none")
    (gx,) = torch.autograd.grad(loss, x, torch.ones_like(loss))
    w = torch.ones_like(x64) if w64 is None else w64.expand(n)
    pw = torch.ones_like(x64) if pw64 is None else pw64.expand(n)
    want_l, want_g = exact(x64, pw * t64, 1 - t64, w)
    assert_ulp_close(loss.detach(), want_l, "loss", ulps=16)
    assert_ulp_close(gx, want_g, "grad", ulps=16)
    ref = F.binary_cross_entropy_with_logits(x64, t64, w64, pos_weight=pw64, reduction="sum")
    got = GF.bce_with_logits(x64.float(), t64.float(), None if w64 is None else w64.float(),
                             pos_weight=None if pw64 is None else pw64.float(), reduction="sum")
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_round_the_float32_result(dtype):
    """float16/bfloat16 run the float32 kernel on converted blocks: each output must be the float32
    kernel's value rounded once (blocks of 2048 and a tail)."""
    x = values(2048 * 2 + 77, seed=9).nan_to_num(nan=1.0).clamp(-60000, 60000).to(dtype)
    xl = x.clone().requires_grad_(True)
    loss = GF.bce_generator_loss(xl, target=0.8, reduction="none")
    (g,) = torch.autograd.grad(loss, xl, torch.ones_like(loss))
    x32 = x.float().requires_grad_(True)
    l32 = GF.bce_generator_loss(x32, target=0.8, reduction="none")
    (g32,) = torch.autograd.grad(l32, x32, torch.ones_like(l32))
    assert torch.equal(loss.detach(), l32.detach().to(dtype))
    assert torch.equal(g, g32.to(dtype))


_ISA_SCRIPT = r"""
import json, sys, torch
import ganx.functional as GF
from ganx import _ext
x, r, t, w, pw = torch.load(sys.argv[1])
r = r.requires_grad_(True)
f = x.clone().requires_grad_(True)
loss, stats = GF.bce_discriminator_loss(r, f, real_target=0.9, return_stats=True)
gr, gf = torch.autograd.grad(loss, (r, f))
per = GF.bce_with_logits(x, t, w, pos_weight=pw, reduction='none')
parts = {"sums": torch.cat([loss.view(1), torch.stack(list(stats))]), "gr": gr, "gf": gf, "per": per}
print(json.dumps({"isa": _ext._C.cpu_isa(), "cap": torch.backends.cpu.get_cpu_capability(),
                  "bits": {k: v.view(torch.int32).tolist() for k, v in parts.items()}}))
"""


def _cpu_isa_ceiling() -> str:
    """The best copy of the kernel this CPU can run, from the CPU's own flags (not torch's
    capability, which follows ATEN_CPU_CAPABILITY): 'avx512', 'avx2' or 'default' (also on
    non-x86 CPUs, where only the baseline copy exists)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "default"
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:  # no /proc (macOS): ask ganx, which reads cpuid itself
        return _ext._C.cpu_isa()
    flags = set(flags)
    if {"avx512f", "avx512dq", "avx512vl", "avx512bw", "fma"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "default"


def _run_isa(cap: str, inputs: str) -> dict:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=cap, OMP_NUM_THREADS="2")
    res = subprocess.run([sys.executable, "-c", _ISA_SCRIPT, inputs], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_every_instruction_set_copy(tmp_path):
    """Each compiled copy of the kernel (as far as this CPU runs it) is selected through torch's own
    ATEN_CPU_CAPABILITY; AVX2 and AVX-512 (both FMA) must agree bit for bit, and the baseline
    copy (no FMA) within rounding. The inputs are made here and loaded by every run: torch's
    own random generators give different numbers under different capabilities."""
    native = _ext._C.cpu_isa()
    assert native in ("avx512", "avx2", "default")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50_003, generator=g) * 8
    x[:6] = torch.tensor([float("inf"), -float("inf"), float("nan"), 1e4, -1e4, 0.0])
    inputs = (x, torch.randn(40_001, generator=g) * 5, torch.rand(50_003, generator=g),
              torch.rand(50_003, generator=g), torch.rand(50_003, generator=g) * 2)
    torch.save(inputs, tmp_path / "inputs.pt")
    runs = {cap: _run_isa(cap, str(tmp_path / "inputs.pt")) for cap in ("default", "avx2", "avx512")}
    assert runs["default"]["isa"] == "default"
    order = ["default", "avx2", "avx512"]
    cpu_best = _cpu_isa_ceiling()
    for cap, r in runs.items():
        # ganx takes torch's capability, capped by what this CPU really runs: torch may report
        # AVX512 under ATEN_CPU_CAPABILITY=avx512 on a CPU without AVX-512 (torch 2.14)
        torch_cap = {"DEFAULT": "default", "AVX2": "avx2", "AVX512": "avx512"}.get(r["cap"], "default")
        want = order[min(order.index(cap), order.index(torch_cap), order.index(cpu_best))]
        assert r["isa"] == want, (cap, r["cap"], cpu_best, r["isa"])
    if runs["avx2"]["isa"] == "avx2" and runs["avx512"]["isa"] == "avx512":
        assert runs["avx2"]["bits"] == runs["avx512"]["bits"]
    for cap in ("avx2", "avx512"):
        for part in ("sums", "gr", "gf", "per"):
            base = torch.tensor(runs["default"]["bits"][part], dtype=torch.int32).view(torch.float32)
            other = torch.tensor(runs[cap]["bits"][part], dtype=torch.int32).view(torch.float32)
            # real_target 0.9 makes the real gradient a difference of two terms: compare it on
            # the scale of the terms (their sum is at most max |g| / 0.8 here)
            atol = 1e-6 * float(base.nan_to_num(0.0).abs().max()) if part == "gr" else 0.0
            torch.testing.assert_close(other, base, rtol=1e-6, atol=atol, equal_nan=True,
                                       msg=lambda m: f"{cap} vs default, {part}: {m}")


# ----------------------------------------------------------------- backward shortcuts

def test_unit_grad_returns_saved_gradient_and_is_safe():
    r = torch.randn(300, requires_grad=True)
    f = torch.randn(200, requires_grad=True)
    loss = GF.bce_discriminator_loss(r, f)
    gr1, gf1 = torch.autograd.grad(loss, (r, f), retain_graph=True)
    gr2, gf2 = torch.autograd.grad(loss, (r, f), torch.tensor(2.0), retain_graph=True)
    torch.testing.assert_close(gr2, 2 * gr1, rtol=0, atol=0)
    torch.testing.assert_close(gf2, 2 * gf1, rtol=0, atol=0)
    torch.testing.assert_close(gr1, (torch.sigmoid(r) - 1).detach() / 300)
    # with the graph kept the returned gradients are the caller's (copies): writing into one changes
    # neither the saved gradient nor the next backward (issue 25, item 14)
    gr1.mul_(3)
    gr3, _ = torch.autograd.grad(loss, (r, f))
    torch.testing.assert_close(gr3, gr2 / 2, rtol=0, atol=0)


def test_unit_grad_accumulates_into_grad_twice():
    x = torch.randn(1000, requires_grad=True)
    loss = GF.bce_generator_loss(x)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first, rtol=0, atol=0)
    r = torch.randn(64, requires_grad=True)
    f = torch.randn(32, requires_grad=True)
    for _ in range(2):
        GF.bce_discriminator_loss(r, f).backward()
    torch.testing.assert_close(r.grad, 2 * (torch.sigmoid(r) - 1).detach() / 64)
    torch.testing.assert_close(f.grad, 2 * torch.sigmoid(f).detach() / 32)


def test_loss_not_used_in_backward_and_stats_only():
    r = torch.randn(10, requires_grad=True)
    f = torch.randn(10, requires_grad=True)
    loss, stats = GF.bce_discriminator_loss(r, f, return_stats=True)
    assert not stats.d_real.requires_grad
    (2 * loss + 0).backward()
    torch.testing.assert_close(r.grad, 2 * (torch.sigmoid(r) - 1).detach() / 10)


# ----------------------------------------------------------------- the CPU output-buffer cache

def test_buffer_cache_reuses_freed_buffers_only():
    from ganx.ops import clear_cpu_buffer_cache, cpu_buffer_cache_stats
    clear_cpu_buffer_cache()
    n = 1 << 18  # 2 x 256K float32 gradients = 2 MiB: cached
    r = torch.randn(n, requires_grad=True)
    f = torch.randn(n, requires_grad=True)
    ga, _ = torch.autograd.grad(GF.bce_discriminator_loss(r, f), (r, f))
    ptr = ga.data_ptr()
    r2 = (2 * r).detach().requires_grad_(True)
    gb, _ = torch.autograd.grad(GF.bce_discriminator_loss(r2, f), (r2, f))  # ga alive: a new buffer
    assert gb.data_ptr() != ptr
    torch.testing.assert_close(ga, (torch.sigmoid(r) - 1).detach() / n)
    del ga
    s0 = cpu_buffer_cache_stats()
    assert s0["blocks"] >= 1 and s0["bytes"] >= 8 * n
    r3 = (3 * r).detach().requires_grad_(True)
    gc, _ = torch.autograd.grad(GF.bce_discriminator_loss(r3, f), (r3, f))  # reuses ga's buffer
    assert gc.data_ptr() == ptr
    assert cpu_buffer_cache_stats()["hits"] == s0["hits"] + 1
    torch.testing.assert_close(gc, (torch.sigmoid(r3) - 1).detach() / n)  # fully rewritten
    torch.testing.assert_close(gb, (torch.sigmoid(r2) - 1).detach() / n)  # untouched
    # small buffers never go through the cache
    before = cpu_buffer_cache_stats()
    for _ in range(3):
        GF.bce_generator_loss(torch.randn(100, requires_grad=True)).backward()
    after = cpu_buffer_cache_stats()
    assert (after["hits"], after["misses"]) == (before["hits"], before["misses"])
    clear_cpu_buffer_cache()
    assert cpu_buffer_cache_stats()["blocks"] == 0


def test_buffer_cache_as_parameter_grads_and_threads():
    from concurrent.futures import ThreadPoolExecutor
    x = torch.randn(1 << 19, requires_grad=True)
    for _ in range(3):  # .grad takes the buffer; set_to_none returns it; values stay right
        GF.bce_generator_loss(x, reduction="sum").backward()
        torch.testing.assert_close(x.grad, (torch.sigmoid(x) - 1).detach())
        x.grad = None

    def work(seed):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(300_000, generator=g, requires_grad=True)
        b = torch.randn(200_000, generator=g, requires_grad=True)
        out = []
        for _ in range(5):
            loss = GF.bce_discriminator_loss(a, b, reduction="none")
            out.append(torch.autograd.grad(loss, (a, b), loss))
        return a, b, out

    with ThreadPoolExecutor(4) as ex:
        for a, b, out in ex.map(work, range(4)):
            la = F.softplus(-a.detach())
            lb = F.softplus(b.detach())
            for ga, gb in out:
                torch.testing.assert_close(ga, la * (torch.sigmoid(a) - 1).detach())
                torch.testing.assert_close(gb, lb * torch.sigmoid(b).detach())


def test_buffer_cache_can_be_turned_off():
    code = ("import torch, ganx.functional as GF; from ganx.ops import cpu_buffer_cache_stats as s\n"
            "x = torch.randn(1 << 20, requires_grad=True)\n"
            "for _ in range(3): GF.bce_generator_loss(x).backward()\n"
            "print(s())")
    for env, limit in (("0", 0), ("64", 64 << 20)):
        res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, GANX_CPU_BUFFER_CACHE_MB=env),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        st = eval(res.stdout.strip().splitlines()[-1])
        assert st["limit_bytes"] == limit
        assert (st["hits"] > 0) == (limit > 0)
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, GANX_CPU_BUFFER_CACHE_MB="lots"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "GANX_CPU_BUFFER_CACHE_MB" in res.stderr
