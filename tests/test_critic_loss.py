"""The fused critic losses (hinge, Wasserstein; ganx.ops.critic, torch.ops.ganx.critic_*): against
their pure-PyTorch twins (ganx.ops.reference) and eager torch in float64 (loss, every gradient,
statistics), every reduction and dtype the BCE ops take, the hinge's kinks, +-inf / NaN, empty
inputs, gradcheck, opcheck, torch.compile, forward mode, autocast, errors, every CPU instruction-set
copy of the SIMD kernel, and the modules of ganx.nn. The CUDA kernel runs under the emulator in
tests/test_emu_bce.py (and on a real GPU in test_cuda_matches_cpu below)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import ganx
import ganx.functional as GF
from ganx.ops import reference as R
from ganx.ops.critic import CriticStats
from test_bce_loss import logits

ops = torch.ops.ganx
KINDS = {"hinge": 1, "wasserstein": 2}
INF, NAN = float("inf"), float("nan")
REDS = ("mean", "sum", "none")
FUSED_D = {"hinge": GF.hinge_discriminator_loss, "wasserstein": GF.wasserstein_discriminator_loss}
FUSED_G = {"hinge": GF.hinge_generator_loss, "wasserstein": GF.wasserstein_generator_loss}
REF_D = {"hinge": R.hinge_discriminator_loss, "wasserstein": R.wasserstein_discriminator_loss}


def eager_d(kind, real, fake, reduction="mean"):
    """The textbook formulas, written independently of ganx.ops.reference."""
    red = {"mean": torch.mean, "sum": torch.sum, "none": lambda t: t}[reduction]
    if kind == "hinge":
        lr, lf = red(torch.relu(1 - real)), red(torch.relu(1 + fake))
    else:
        lr, lf = red(-real), red(fake)
    return (lr, lf) if reduction == "none" else lr + lf


def scores(shape, seed, dtype=torch.float64, kinks=True):
    """logits() (D-like spread, +-1e4 mixed in) with the hinge's kinks (+-1, 0) and near-kinks."""
    x = logits(*((shape,) if isinstance(shape, int) else shape), seed=seed, dtype=torch.float64)
    if kinks and x.numel() >= 8:
        x.view(-1)[:5] = torch.tensor([1.0, -1.0, 0.0, 0.999, -1.001], dtype=torch.float64)
    return x.to(dtype)


def grads(loss, inputs):
    if isinstance(loss, tuple):
        outs = [l for l in loss]
        return torch.autograd.grad(outs, inputs, [torch.linspace(-1, 2, l.numel(), dtype=l.dtype).view(l.shape)
                                                  for l in outs])
    return torch.autograd.grad(loss * 1.7, inputs)  # an incoming gradient that is not 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", REDS)
@pytest.mark.parametrize("shapes", [((64,), (64,)), ((8, 1, 4, 4), (5, 1)), ((3,), (1000,))])
def test_discriminator_matches_reference_and_eager_float64(kind, reduction, shapes):
    real = scores(shapes[0], 1).view(shapes[0]).requires_grad_(True)
    fake = scores(shapes[1], 2).view(shapes[1]).requires_grad_(True)
    loss, stats = FUSED_D[kind](real, fake, reduction=reduction, return_stats=True)
    want, want_stats = REF_D[kind](real, fake, reduction=reduction, return_stats=True)
    eager = eager_d(kind, real, fake, reduction)
    for got, w, e in zip(*(x if isinstance(x, tuple) else (x,) for x in (loss, want, eager))):
        assert got.shape == e.shape
        torch.testing.assert_close(got, w, rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(got, e, rtol=1e-13, atol=1e-13)
    for g, w, e in zip(grads(loss, (real, fake)), grads(want, (real, fake)), grads(eager, (real, fake))):
        torch.testing.assert_close(g, e, rtol=1e-15, atol=0)  # piecewise constants: exact
        torch.testing.assert_close(g, w, rtol=1e-15, atol=0)
    assert isinstance(stats, CriticStats)
    torch.testing.assert_close(torch.stack(list(stats)), want_stats, rtol=1e-6, atol=1e-6)
    assert stats.acc_real.dtype == torch.float32 and stats.acc_real.dim() == 0


def test_hinge_subgradient_at_the_kink_is_torchs():
    # relu'(0) = 0 in torch: a real score of exactly 1 and a fake of exactly -1 get no gradient.
    real = torch.tensor([1.0, 0.5, 2.0, -3.0], requires_grad=True)
    fake = torch.tensor([-1.0, -0.5, -2.0, 3.0], requires_grad=True)
    loss = GF.hinge_discriminator_loss(real, fake, reduction="sum")
    gr, gf = torch.autograd.grad(loss, (real, fake))
    assert gr.tolist() == [0.0, -1.0, 0.0, -1.0] and gf.tolist() == [0.0, 1.0, 0.0, 1.0]
    assert loss.item() == 0.5 + 4.0 + 0.5 + 4.0
    gr, gf = torch.autograd.grad(GF.wasserstein_discriminator_loss(real, fake), (real, fake))
    assert gr.tolist() == [-0.25] * 4 and gf.tolist() == [0.25] * 4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", REDS)
def test_generator_matches_eager(kind, reduction):
    fake = scores((7, 9), 3).requires_grad_(True)
    loss = FUSED_G[kind](fake, reduction=reduction)
    red = {"mean": torch.mean, "sum": torch.sum, "none": lambda t: t}[reduction]
    eager = red(-fake)
    torch.testing.assert_close(loss, eager, rtol=1e-13, atol=1e-12)  # +-1e4 among the scores: cancellation
    (g,) = torch.autograd.grad(loss, fake, torch.ones_like(loss) * 0.5)
    (ge,) = torch.autograd.grad(eager, fake, torch.ones_like(eager) * 0.5)
    assert torch.equal(g, ge)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # the scalar code and the SIMD kernel
@pytest.mark.parametrize("kind", KINDS)
def test_extremes_and_nan(kind, dtype):
    real = torch.tensor([INF, -INF, NAN, 1e4, -1e4], dtype=dtype, requires_grad=True)
    fake = torch.tensor([INF, -INF, NAN, 1e4, -1e4], dtype=dtype, requires_grad=True)
    per = FUSED_D[kind](real, fake, reduction="none")
    want = eager_d(kind, real, fake, "none")
    for a, b in zip(per, want):
        torch.testing.assert_close(a, b, equal_nan=True)
    gr, gf = torch.autograd.grad(per, (real, fake), [torch.ones(5, dtype=dtype)] * 2)
    wr, wf = torch.autograd.grad(want, (real, fake), [torch.ones(5, dtype=dtype)] * 2)
    # relu at NaN: loss NaN, the gradient passes (torch's threshold backward zeroes only where the
    # output is <= 0); the linear loss: +-1 everywhere
    assert torch.equal(gr, wr) and torch.equal(gf, wf)
    assert torch.isnan(FUSED_D[kind](real, fake))


@pytest.mark.parametrize("kind", KINDS)
def test_empty_inputs(kind):
    e, x = torch.empty(0), torch.randn(5)
    loss, stats = FUSED_D[kind](e, x, return_stats=True)
    assert torch.isnan(loss) and torch.isnan(stats.acc_real) and torch.isnan(stats.logit_real)
    assert not torch.isnan(stats.logit_fake)
    assert FUSED_D[kind](e, e, reduction="sum").item() == 0.0
    assert torch.isnan(FUSED_G[kind](e)) and FUSED_G[kind](e, reduction="sum").item() == 0.0
    assert FUSED_G[kind](e, reduction="none").shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", KINDS)
def test_lower_precision_dtypes(dtype, kind):
    # float32 math on every dtype (fp16 / bf16 converted block by block), rounded once per element:
    # the per-element loss and gradient equal the float64 result rounded to the dtype.
    n = 70_001  # several parallel chunks and a tail
    real, fake = scores(n, 4, kinks=True).to(dtype), scores(n // 3, 5).to(dtype)
    r, f = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
    lr, lf = FUSED_D[kind](r, f, reduction="none")
    assert lr.dtype == dtype
    want_r, want_f = eager_d(kind, real.double(), fake.double(), "none")
    assert torch.equal(lr, want_r.to(dtype)) and torch.equal(lf, want_f.to(dtype))
    gr, gf = torch.autograd.grad(FUSED_D[kind](r, f, reduction="sum"), (r, f))
    rd, fd = real.double().requires_grad_(True), fake.double().requires_grad_(True)
    wr, wf = torch.autograd.grad(eager_d(kind, rd, fd, "sum"), (rd, fd))
    assert torch.equal(gr, wr.to(dtype)) and torch.equal(gf, wf.to(dtype))
    # the generator (linear in both kinds): -fake, rounded once
    g = FUSED_G[kind](f, reduction="none")
    assert torch.equal(g, -fake)
    (gg,) = torch.autograd.grad(FUSED_G[kind](f), f)
    torch.testing.assert_close(gg, torch.full_like(fake, -1 / fake.numel()))
    mean = FUSED_D[kind](real, fake)
    exact = eager_d(kind, real.double(), fake.double())
    eager = eager_d(kind, real, fake).double()
    # at most twice eager's error, or one rounding to the dtype (ours is rounded once, at the end)
    err = (mean.double() - exact).abs()
    assert err <= max(2 * (eager - exact).abs(), torch.finfo(dtype).eps * exact.abs() + 1e-7)


def test_deterministic_across_threads():
    real, fake = scores(300_001, 6).float(), scores(200_003, 7).float()
    old = torch.get_num_threads()
    try:
        outs = []
        for t in (1, 2, 3):
            torch.set_num_threads(t)
            loss, stats = GF.hinge_discriminator_loss(real, fake, return_stats=True)
            outs.append(torch.cat([loss.view(1), torch.stack(list(stats))]))
    finally:
        torch.set_num_threads(old)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


# ----------------------------------------------------------------- autograd, opcheck, compile

@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind):
    # away from the hinge's kinks (gradcheck's finite differences would straddle them)
    real = (torch.randn(6, dtype=torch.float64) * 3).requires_grad_(True)
    fake = (torch.randn(4, 2, dtype=torch.float64) * 3).requires_grad_(True)
    with torch.no_grad():
        real[(real - 1).abs() < 1e-3] += 0.1
        fake[(fake + 1).abs() < 1e-3] += 0.1
    for red in REDS:
        assert torch.autograd.gradcheck(lambda a, b: FUSED_D[kind](a, b, reduction=red), (real, fake))
        assert torch.autograd.gradcheck(lambda b: FUSED_G[kind](b, reduction=red), (fake,))


def test_double_backward_raises():
    real = torch.randn(5, dtype=torch.float64, requires_grad=True)
    for op, loss in (("critic_discriminator_loss", GF.hinge_discriminator_loss(real, real * 2)),
                     ("critic_generator_loss", GF.wasserstein_generator_loss(real))):
        with pytest.raises(RuntimeError, match=f"{op}: double backward \\(create_graph=True\\) is not supported"):
            torch.autograd.grad(loss, real, create_graph=True)


def test_opcheck():
    for need_grad in (True, False):
        r = torch.randn(5, 3, dtype=torch.float64, requires_grad=need_grad)
        f = torch.randn(7, dtype=torch.float64, requires_grad=need_grad)
        for kind in (1, 2):
            for red in (0, 1, 2):
                torch.library.opcheck(ops.critic_discriminator_loss, (r, f, kind, red, need_grad))
                torch.library.opcheck(ops.critic_generator_loss, (f, kind, red, need_grad))


@pytest.mark.parametrize("kind", KINDS)
def test_compile_fullgraph_matches_eager(kind):
    def step(r, f):
        d, s = FUSED_D[kind](r, f, return_stats=True)
        return d + FUSED_G[kind](f), s.acc_real
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    r = torch.randn(16, requires_grad=True)
    f = torch.randn(16, requires_grad=True)
    a, sa = step(r, f)
    b, sb = compiled(r, f)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(sa, sb, rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(a, (r, f)), torch.autograd.grad(b, (r, f)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_mode(kind):
    real, fake = scores(9, 8), scores(6, 9)
    tr, tf = torch.randn(9, dtype=torch.float64), torch.randn(6, dtype=torch.float64)
    out, tangent = torch.func.jvp(lambda a, b: FUSED_D[kind](a, b), (real, fake), (tr, tf))
    want, want_t = torch.func.jvp(lambda a, b: eager_d(kind, a, b), (real, fake), (tr, tf))
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(tangent, want_t)
    out, tangent = torch.func.jvp(lambda b: FUSED_G[kind](b, reduction="sum"), (fake,), (tf,))
    torch.testing.assert_close(tangent, -tf.sum())


def test_autocast_runs_in_float32():
    real, fake = torch.randn(8, dtype=torch.bfloat16), torch.randn(8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = GF.hinge_discriminator_loss(real, fake)
        g = GF.wasserstein_generator_loss(fake)
    assert loss.dtype == torch.float32 and g.dtype == torch.float32
    torch.testing.assert_close(loss, eager_d("hinge", real.float(), fake.float()))


def test_no_grad_and_non_contiguous():
    x = torch.randn(6, 8, dtype=torch.float64)
    real, fake = x.t(), x[:, ::2]
    with torch.no_grad():
        torch.testing.assert_close(GF.hinge_discriminator_loss(real, fake), eager_d("hinge", real, fake))
    loss, grad, _ = ops.critic_discriminator_loss(real, fake, 1, 1, False)
    assert grad.numel() == 0


def test_errors():
    x = torch.randn(4)
    with pytest.raises(ValueError, match="critic_discriminator_loss: kind must be 1 \\(hinge\\) or 2"):
        ops.critic_discriminator_loss(x, x, 0, 1, False)
    with pytest.raises(ValueError, match="critic_generator_loss: kind must be"):
        ops.critic_generator_loss(x, 3, 1, False)
    with pytest.raises(ValueError, match="critic_discriminator_loss: reduction must be"):
        ops.critic_discriminator_loss(x, x, 1, 3, False)
    with pytest.raises(ValueError, match="hinge_discriminator_loss: reduction must be 'none', 'mean' or 'sum'"):
        GF.hinge_discriminator_loss(x, x, reduction="avg")
    with pytest.raises(TypeError, match="wasserstein_generator_loss: fake_logits must be a torch.Tensor"):
        GF.wasserstein_generator_loss([1.0])
    with pytest.raises(TypeError, match="critic_discriminator_loss: real and fake must have the same dtype"):
        GF.hinge_discriminator_loss(x, x.double())
    with pytest.raises(TypeError, match="critic_generator_loss: fake must be a floating-point tensor"):
        GF.hinge_generator_loss(torch.ones(3, dtype=torch.int64))


def test_modules_fused_and_reference():
    real = scores(33, 10).requires_grad_(True)
    fake = scores(17, 11).requires_grad_(True)
    for cls_d, cls_g, kind in ((ganx.nn.HingeDiscriminatorLoss, ganx.nn.HingeGeneratorLoss, "hinge"),
                               (ganx.nn.WassersteinDiscriminatorLoss, ganx.nn.WassersteinGeneratorLoss,
                                "wasserstein")):
        for impl in ("fused", "reference"):
            d = cls_d(return_stats=True, impl=impl)
            loss, stats = d(real, fake)
            torch.testing.assert_close(loss, eager_d(kind, real, fake))
            torch.testing.assert_close(torch.stack(list(stats)).float(), R.critic_stats(real, fake))
            torch.testing.assert_close(cls_g(reduction="sum", impl=impl)(fake), -fake.sum())
            assert "impl" in repr(d)
        with pytest.raises(ValueError, match=f"{cls_d.__name__}: impl must be"):
            cls_d(impl="triton")
        with pytest.raises(ValueError, match=f"{cls_g.__name__}: reduction must be"):
            cls_g(reduction="avg")


_ISA_SCRIPT = r"""
import json, sys, torch
import ganx.functional as GF
from ganx import _ext
r, f = torch.load(sys.argv[1])
out = {"isa": _ext._C.cpu_isa()}
for kind in ("hinge", "wasserstein"):
    rr, ff = r.clone().requires_grad_(True), f.clone().requires_grad_(True)
    fn = getattr(GF, kind + "_discriminator_loss")
    loss, stats = fn(rr, ff, return_stats=True)
    gr, gf = torch.autograd.grad(loss, (rr, ff))
    per = torch.cat(fn(r, f, reduction="none"))
    parts = [loss.view(1), torch.stack(list(stats)), gr, gf, per, getattr(GF, kind + "_generator_loss")(f).view(1)]
    out[kind] = torch.cat(parts).view(torch.int32).tolist()
print(json.dumps(out))
"""


def test_every_instruction_set_copy_bit_identical(tmp_path):
    # The critic math is exact per element (a product by +-1, one rounding with or without FMA),
    # and the sums' order is fixed: every copy of the kernel (baseline included) gives the same bits.
    g = torch.Generator().manual_seed(0)
    r, f = torch.randn(50_003, generator=g) * 3, torch.randn(40_001, generator=g) * 3
    r[:4] = torch.tensor([1.0, -1.0, 0.0, 1e4])
    torch.save((r, f), tmp_path / "in.pt")
    runs = []
    for cap in ("default", "avx2", "avx512"):
        env = dict(os.environ, ATEN_CPU_CAPABILITY=cap, OMP_NUM_THREADS="2")
        res = subprocess.run([sys.executable, "-c", _ISA_SCRIPT, str(tmp_path / "in.pt")], env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    assert runs[0]["isa"] == "default"
    for run in runs[1:]:
        assert run["hinge"] == runs[0]["hinge"] and run["wasserstein"] == runs[0]["wasserstein"], run["isa"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(kind, dtype):
    real, fake = scores(100_003, 12).to(dtype), scores(777, 13).to(dtype)
    for red in REDS:
        rc, fc = real.cuda().requires_grad_(True), fake.cuda().requires_grad_(True)
        r, f = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
        lc, sc = FUSED_D[kind](rc, fc, reduction=red, return_stats=True)
        l, s = FUSED_D[kind](r, f, reduction=red, return_stats=True)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype != torch.float64 else dict(rtol=1e-12, atol=1e-12)
        for a, b in zip(lc if red == "none" else (lc,), l if red == "none" else (l,)):
            torch.testing.assert_close(a.cpu(), b, **tol)
        torch.testing.assert_close(torch.stack(list(sc)).cpu(), torch.stack(list(s)), rtol=1e-5, atol=1e-5)
        ga = torch.autograd.grad(sum(x.sum() for x in (lc if red == "none" else (lc,))), (rc, fc))
        gb = torch.autograd.grad(sum(x.sum() for x in (l if red == "none" else (l,))), (r, f))
        for a, b in zip(ga, gb):
            assert torch.equal(a.cpu(), b)
        torch.testing.assert_close(FUSED_G[kind](fc, reduction=red).cpu(), FUSED_G[kind](f, reduction=red), **tol)
    torch.library.opcheck(ops.critic_discriminator_loss, (rc, fc, KINDS[kind], 1, True))
