"""Fused BCE losses (ganx.ops.bce) against torch and the pure-torch reference.

Oracles: F.binary_cross_entropy_with_logits / F.binary_cross_entropy in float64 where torch is
finite, ganx.ops.reference (a stable fp64 formula) everywhere else (+-inf, NaN).
"""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import ganx
import ganx.functional as GF
from ganx.nn import BCELoss, BCEWithLogitsLoss, DiscriminatorBCELoss, GeneratorBCELoss
from ganx.ops import reference as R

REDUCTIONS = ("none", "mean", "sum")
INF, NAN = float("inf"), float("nan")
cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def logits(*shape, dtype=torch.float64, seed=0, extreme=True, device="cpu"):
    """Fresh random logits, spread like a discriminator's, with +-1e4 and (optionally) +-inf mixed in."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 6
    flat = x.view(-1)
    if extreme and flat.numel() >= 8:
        idx = torch.randperm(flat.numel(), generator=g)[:4]
        flat[idx] = torch.tensor([1e4, -1e4, 30.0, -30.0], dtype=torch.float64)
    return x.to(device=device, dtype=dtype)


def torch_bce(x, t, reduction="mean"):
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, t), reduction=reduction)


def close(a, b, **kw):
    torch.testing.assert_close(a, b, equal_nan=True, **kw)


def grads(loss_fn, *xs):
    xs = [x.detach().clone().requires_grad_(True) for x in xs]
    out = loss_fn(*xs)
    if isinstance(out, tuple):
        out = sum((o * torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype).view(o.shape)).sum() for o in out)
    elif out.dim() > 0:
        out = (out * torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).view(out.shape)).sum()
    return torch.autograd.grad(out, xs)


# ----------------------------------------------------------------- discriminator

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("real_target,fake_target", [(1.0, 0.0), (0.9, 0.0), (0.8, 0.1)])
def test_discriminator_matches_torch(reduction, real_target, fake_target):
    real, fake = logits(8, 1, 5, 5, seed=1), logits(13, seed=2)  # PatchGAN map vs vector, other sizes
    out = GF.bce_discriminator_loss(real, fake, real_target=real_target, fake_target=fake_target, reduction=reduction)
    exp_r, exp_f = torch_bce(real, real_target, reduction), torch_bce(fake, fake_target, reduction)
    if reduction == "none":
        close(out[0], exp_r)
        close(out[1], exp_f)
    else:
        close(out, exp_r + exp_f)
    f = lambda r, fk: GF.bce_discriminator_loss(r, fk, real_target=real_target, fake_target=fake_target,  # noqa: E731
                                                reduction=reduction)
    t = lambda r, fk: (  # noqa: E731
        (torch_bce(r, real_target, reduction), torch_bce(fk, fake_target, reduction)) if reduction == "none"
        else torch_bce(r, real_target, reduction) + torch_bce(fk, fake_target, reduction))
    for a, b in zip(grads(f, real, fake), grads(t, real, fake)):
        close(a, b)


def test_discriminator_stats_and_patchgan_shapes():
    real, fake = logits(4, 1, 30, 30, seed=3, dtype=torch.float32), logits(6, 1, 14, 14, seed=4, dtype=torch.float32)
    real.view(-1)[:5] = 0.0  # logit 0 counts as "fake"
    loss, stats = GF.bce_discriminator_loss(real, fake, real_target=0.9, return_stats=True)
    assert isinstance(stats, ganx.ops.DiscriminatorStats)
    r, f = real.double(), fake.double()
    expected = [(r > 0).double().mean(), (f <= 0).double().mean(), torch.sigmoid(r).mean(), torch.sigmoid(f).mean()]
    for got, exp in zip(stats, expected):
        assert got.dtype == torch.float32 and got.dim() == 0 and not got.requires_grad
        close(got.double(), exp, rtol=1e-6, atol=1e-7)
    close(loss.double(), torch_bce(r, 0.9) + torch_bce(f, 0.0), rtol=1e-6, atol=1e-6)
    ref_loss, ref_stats = R.bce_discriminator_loss(real, fake, real_target=0.9, return_stats=True)
    close(torch.stack(list(stats)), ref_stats)


def test_discriminator_extremes():
    vals = torch.tensor([INF, -INF, 1e4, -1e4, 0.0, 80.0, -80.0, 1e-3], dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        x = vals.to(dtype)
        lr, lf = GF.bce_discriminator_loss(x, x, reduction="none")
        # BCE(l, 1) = softplus(-l) and BCE(l, 0) = softplus(l): finite except softplus(+inf).
        close(lr, F.softplus(-x.double()).to(dtype))
        close(lf, F.softplus(x.double()).to(dtype))
        xr = x.clone().requires_grad_(True)
        xf = x.clone().requires_grad_(True)
        GF.bce_discriminator_loss(xr, xf, reduction="sum").backward()
        close(xr.grad, (torch.sigmoid(x.double()) - 1).to(dtype))
        close(xf.grad, torch.sigmoid(x.double()).to(dtype))
        # real +inf and fake -inf are finite by the math (eager torch gives NaN there)
        assert torch.isfinite(GF.bce_discriminator_loss(x[[0, 2, 3, 4]], x[[1, 2, 3, 4]])).item()
    # Label smoothing at +-inf is infinite by the math; NaN in gives NaN out (loss and gradient).
    x = torch.tensor([NAN, 1.0], dtype=torch.float64, requires_grad=True)
    loss = GF.bce_discriminator_loss(x, x.detach(), real_target=0.9)
    loss.backward()
    assert loss.isnan().item() and x.grad[0].isnan().item() and not x.grad[1].isnan().item()


def test_discriminator_reference_with_inf():
    real, fake = logits(50, seed=5), logits(40, seed=6)
    real[:3] = torch.tensor([INF, -INF, NAN], dtype=torch.float64)
    fake[:2] = torch.tensor([INF, -INF], dtype=torch.float64)
    for rt, ft in [(1.0, 0.0), (0.9, 0.1)]:
        got = GF.bce_discriminator_loss(real, fake, real_target=rt, fake_target=ft, reduction="none")
        exp = R.bce_discriminator_loss(real, fake, real_target=rt, fake_target=ft, reduction="none")
        close(got[0], exp[0])
        close(got[1], exp[1])


def test_empty_inputs():
    e = torch.zeros(0, dtype=torch.float64)
    x = logits(5, seed=7)
    assert GF.bce_discriminator_loss(e, x).isnan().item()  # mean of nothing is NaN, like torch
    assert GF.bce_discriminator_loss(e, e, reduction="sum").item() == 0.0
    close(GF.bce_discriminator_loss(e, x, reduction="sum"), torch_bce(x, 0.0, "sum"))
    lr, lf = GF.bce_discriminator_loss(e, x, reduction="none")
    assert lr.shape == (0,) and lf.shape == (5,)
    _, stats = GF.bce_discriminator_loss(e, x, return_stats=True)
    assert stats.acc_real.isnan().item() and stats.d_real.isnan().item() and not stats.d_fake.isnan().item()
    assert GF.bce_generator_loss(e).isnan().item()
    assert GF.bce_with_logits(e, e, reduction="sum").item() == 0.0
    close(GF.bce_with_logits(e, e), F.binary_cross_entropy_with_logits(e, e))
    close(GF.binary_cross_entropy(e, e), F.binary_cross_entropy(e, e))


# ----------------------------------------------------------------- generator

@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("mode", ["non_saturating", "minimax"])
@pytest.mark.parametrize("target", [1.0, 0.9])
def test_generator_matches_torch(reduction, mode, target):
    x = logits(3, 1, 7, 7, seed=8)
    if mode == "non_saturating":
        t = lambda z: torch_bce(z, target, reduction)  # noqa: E731
    else:
        t = lambda z: -torch_bce(z, 1 - target, reduction)  # noqa: E731
    f = lambda z: GF.bce_generator_loss(z, mode=mode, target=target, reduction=reduction)  # noqa: E731
    close(f(x), t(x))
    close(grads(f, x)[0], grads(t, x)[0])
    close(f(x), R.bce_generator_loss(x, mode=mode, target=target, reduction=reduction))


def test_generator_forms():
    x = torch.tensor([-3.0, 0.0, 2.0, 1e4, -1e4], dtype=torch.float64)
    d = torch.sigmoid(x)
    close(GF.bce_generator_loss(x[:3], reduction="none"), -torch.log(d[:3]))
    close(GF.bce_generator_loss(x[:3], mode="minimax", reduction="none"), torch.log1p(-d[:3]))
    assert torch.isfinite(GF.bce_generator_loss(x)).item()
    assert torch.isfinite(GF.bce_generator_loss(x, mode="minimax")).item()


# ----------------------------------------------------------------- autograd, opcheck, compile

def test_gradcheck():
    real = logits(3, 4, seed=9, extreme=False).requires_grad_(True)
    fake = logits(5, seed=10, extreme=False).requires_grad_(True)
    for red in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, b: GF.bce_discriminator_loss(a, b, real_target=0.9, reduction=red), (real, fake))
        assert torch.autograd.gradcheck(
            lambda a: GF.bce_generator_loss(a, mode="minimax", reduction=red), (fake,))
    t = torch.rand(3, 4, dtype=torch.float64, requires_grad=True)
    w, pw = torch.rand(4, dtype=torch.float64) + 0.5, torch.rand(3, 4, dtype=torch.float64) + 0.5
    for red in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda a, b: GF.bce_with_logits(a, b, w, reduction=red, pos_weight=pw), (real, t))
        p = (torch.rand(3, 4, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
        assert torch.autograd.gradcheck(lambda a, b: GF.binary_cross_entropy(a, b, w, reduction=red), (p, t))


def test_double_backward_raises():
    x = logits(6, seed=11, extreme=False).requires_grad_(True)
    for loss in (GF.bce_discriminator_loss(x, x), GF.bce_generator_loss(x),
                 GF.bce_with_logits(x, torch.rand_like(x)), GF.binary_cross_entropy(torch.sigmoid(x), torch.rand_like(x))):
        with pytest.raises(RuntimeError, match="double backward \\(create_graph=True\\) is not supported"):
            torch.autograd.grad(loss, x, create_graph=True)


def test_opcheck():
    real, fake = logits(2, 1, 3, 3, seed=12, dtype=torch.float32), logits(5, seed=13, dtype=torch.float32)
    t, w, pw = torch.rand(2, 1, 3, 3), torch.rand(3), torch.rand(1, 1, 3, 3) + 0.5
    p = torch.rand(2, 1, 3, 3) * 0.9 + 0.05
    ops = torch.ops.ganx
    for red, need_grad in [(0, True), (1, True), (2, False)]:
        rg, fg = real.clone().requires_grad_(need_grad), fake.clone().requires_grad_(need_grad)
        torch.library.opcheck(ops.bce_discriminator_loss, (rg, fg, 0.9, 0.0, red, need_grad))
        torch.library.opcheck(ops.bce_generator_loss, (fg, red % 2, 1.0, red, need_grad))
        torch.library.opcheck(ops.bce_with_logits, (rg, t, w, pw, red, need_grad))
        torch.library.opcheck(ops.binary_cross_entropy, (p.clone().requires_grad_(need_grad), t, w, red, need_grad))


def test_compile_fullgraph_matches_eager():
    real, fake = logits(4, 1, 6, 6, seed=14, dtype=torch.float32), logits(9, seed=15, dtype=torch.float32)

    def step(r, f):
        d, stats = GF.bce_discriminator_loss(r, f, real_target=0.9, return_stats=True)
        g = GF.bce_generator_loss(f, mode="minimax")
        return d + g, stats.acc_real

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    results = []
    for fn in (step, compiled):
        r, f = real.clone().requires_grad_(True), fake.clone().requires_grad_(True)
        loss, acc = fn(r, f)
        loss.backward()
        results.append((loss.detach(), acc, r.grad, f.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ----------------------------------------------------------------- drop-in modules

WEIGHTS = {"none": None, "full": (2, 3, 4), "row": (4,), "one": (1,), "col": (3, 1)}
POS_WEIGHTS = {"none": None, "row": (4,), "full": (2, 3, 4), "one": (1,)}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bce_with_logits_module_every_combination(dtype):
    g = torch.Generator().manual_seed(16)
    x = (torch.randn(2, 3, 4, generator=g, dtype=torch.float64) * 5).to(dtype)
    x.view(-1)[:2] = torch.tensor([1e4, -1e4])
    tgt = torch.rand(2, 3, 4, generator=g, dtype=torch.float64).to(dtype)
    tol = {} if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    for (wn, ws), (pn, ps), red, tgrad in itertools.product(WEIGHTS.items(), POS_WEIGHTS.items(), REDUCTIONS,
                                                              (False, True)):
        w = None if ws is None else (torch.rand(ws, generator=g, dtype=torch.float64) + 0.1).to(dtype)
        pw = None if ps is None else (torch.rand(ps, generator=g, dtype=torch.float64) * 3).to(dtype)
        outs = []
        for mod in (torch.nn.BCEWithLogitsLoss(w, reduction=red, pos_weight=pw),
                    BCEWithLogitsLoss(w, reduction=red, pos_weight=pw),
                    BCEWithLogitsLoss(w, reduction=red, pos_weight=pw, impl="reference")):
            xi, ti = x.clone().requires_grad_(True), tgt.clone().requires_grad_(tgrad)
            loss = mod(xi, ti)
            gl = torch.linspace(0.5, 1.5, loss.numel(), dtype=dtype).view(loss.shape)
            loss.backward(gl)
            outs.append((loss.detach(), xi.grad, ti.grad))
        for other in outs[1:]:
            for a, b in zip(outs[0], other):
                if a is None:
                    assert b is None
                else:
                    close(b, a, msg=lambda m: f"weight={wn} pos_weight={pn} reduction={red}: {m}", **tol)


def test_bce_with_logits_dtype_promotion_and_legacy_args():
    x, t = torch.randn(5), torch.rand(5, dtype=torch.float64)
    out = GF.bce_with_logits(x, t)
    assert out.dtype == F.binary_cross_entropy_with_logits(x, t).dtype
    close(out, F.binary_cross_entropy_with_logits(x, t))
    assert BCEWithLogitsLoss(size_average=False).reduction == "sum"
    assert dict(BCEWithLogitsLoss(torch.ones(5)).named_buffers()).keys() == {"weight"}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bce_module_every_combination(dtype):
    g = torch.Generator().manual_seed(17)
    p = torch.rand(2, 3, 4, generator=g, dtype=torch.float64).to(dtype)
    p.view(-1)[:4] = torch.tensor([0.0, 1.0, 1e-30, 1 - 1e-7]).to(dtype)
    tgt = torch.rand(2, 3, 4, generator=g, dtype=torch.float64).to(dtype)
    tgt.view(-1)[:2] = torch.tensor([1.0, 0.0]).to(dtype)  # log(0) clamped at -100 on both sides
    tol = {} if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-5)
    for (wn, ws), red, tgrad in itertools.product(WEIGHTS.items(), REDUCTIONS, (False, True)):
        w = None if ws is None else (torch.rand(ws, generator=g, dtype=torch.float64) + 0.1).to(dtype)
        outs = []
        for mod in (torch.nn.BCELoss(w, reduction=red), BCELoss(w, reduction=red)):
            pi, ti = p.clone().requires_grad_(True), tgt.clone().requires_grad_(tgrad)
            loss = mod(pi, ti)
            loss.backward(torch.linspace(0.5, 1.5, loss.numel(), dtype=dtype).view(loss.shape))
            outs.append((loss.detach(), pi.grad, ti.grad))
        for a, b in zip(*outs):
            if a is None:
                assert b is None
            else:
                # p = 0 / 1 with a target of the other side: gradient (p - t) / 1e-12, ~1e12
                close(b, a, msg=lambda m: f"weight={wn} reduction={red}: {m}", **tol)


def test_gan_modules():
    real, fake = logits(4, 1, 8, 8, seed=18), logits(4, 1, 8, 8, seed=19)
    for impl in ("fused", "reference"):
        d = DiscriminatorBCELoss(real_target=0.9, impl=impl)(real, fake)
        close(d, torch_bce(real, 0.9) + torch_bce(fake, 0.0))
        gl = GeneratorBCELoss(mode="minimax", impl=impl)(fake)
        close(gl, -torch_bce(fake, 0.0))
    loss, stats = DiscriminatorBCELoss(return_stats=True)(real, fake)
    assert len(stats) == 4


# ----------------------------------------------------------------- errors

def test_errors():
    x = torch.randn(4)
    with pytest.raises(TypeError, match="bce_discriminator_loss: real and fake must have the same dtype"):
        GF.bce_discriminator_loss(x, x.double())
    with pytest.raises(TypeError, match="bce_discriminator_loss: real must be a floating-point tensor"):
        GF.bce_discriminator_loss(torch.ones(4, dtype=torch.long), x)
    with pytest.raises(TypeError, match="bce_generator_loss: fake must be a floating-point tensor"):
        GF.bce_generator_loss(torch.ones(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="real_target must be in \\[0, 1\\], got 1.5"):
        GF.bce_discriminator_loss(x, x, real_target=1.5)
    with pytest.raises(ValueError, match="fake_target must be in \\[0, 1\\], got -0.1"):
        GF.bce_discriminator_loss(x, x, fake_target=-0.1)
    with pytest.raises(ValueError, match="bce_generator_loss: target must be in \\[0, 1\\]"):
        GF.bce_generator_loss(x, target=float("nan"))
    with pytest.raises(TypeError, match="real_target must be a float"):
        GF.bce_discriminator_loss(x, x, real_target=torch.tensor(1.0))
    with pytest.raises(ValueError, match="reduction must be 'none', 'mean' or 'sum', got 'avg'"):
        GF.bce_discriminator_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="bce_generator_loss: mode must be 'non_saturating' or 'minimax'"):
        GF.bce_generator_loss(x, mode="wasserstein")
    with pytest.raises(ValueError, match="BCEWithLogitsLoss: reduction must be"):
        BCEWithLogitsLoss(reduction="batchmean")
    with pytest.raises(ValueError, match="impl must be 'fused' or 'reference'"):
        GeneratorBCELoss(impl="triton")
    with pytest.raises(ValueError, match="bce_with_logits: weight of shape \\[3\\] must broadcast"):
        GF.bce_with_logits(x, x, torch.ones(3))
    with pytest.raises(ValueError, match="bce_with_logits: pos_weight of shape \\[2, 4\\] must broadcast"):
        GF.bce_with_logits(x, x, pos_weight=torch.ones(2, 4))
    with pytest.raises(ValueError, match="bce_with_logits: target size"):
        GF.bce_with_logits(x, torch.rand(5))
    with pytest.raises(RuntimeError, match="not differentiable with respect to weight"):
        GF.bce_with_logits(x, x, torch.ones(4, requires_grad=True))
    with pytest.raises(RuntimeError, match="binary_cross_entropy: all elements of input should be between 0 and 1"):
        GF.binary_cross_entropy(torch.tensor([0.5, 1.5]), torch.rand(2))
    with pytest.raises(RuntimeError, match="binary_cross_entropy: all elements of input"):
        GF.binary_cross_entropy(torch.tensor([NAN]), torch.rand(1))
    # The op-level checks (called directly, bypassing the Python checks).
    with pytest.raises(ValueError, match="bce_discriminator_loss: reduction must be 0 \\(none\\), 1 \\(mean\\) or 2"):
        torch.ops.ganx.bce_discriminator_loss(x, x, 1.0, 0.0, 3, False)
    with pytest.raises(ValueError, match="bce_generator_loss: mode must be 0"):
        torch.ops.ganx.bce_generator_loss(x, 2, 1.0, 1, False)
    with pytest.raises(ValueError, match="bce_discriminator_loss: real_target must be in"):
        torch.ops.ganx.bce_discriminator_loss(x, x, 2.0, 0.0, 1, False)
    with pytest.raises(RuntimeError, match="need_grad=False"):
        xr = x.clone().requires_grad_(True)
        torch.ops.ganx.bce_generator_loss(xr, 0, 1.0, 1, False)[0].backward()


# ----------------------------------------------------------------- precision, determinism, no-grad

def test_float32_error_at_most_2x_eager():
    real, fake = logits(1 << 16, seed=20), logits(3000, seed=21)
    exact = torch_bce(real, 0.9) + torch_bce(fake, 0.0)
    r32, f32 = real.float(), fake.float()
    ours = GF.bce_discriminator_loss(r32, f32, real_target=0.9).double()
    eager = (torch_bce(r32, 0.9) + torch_bce(f32, 0.0)).double()
    assert (ours - exact).abs() <= 2 * (eager - exact).abs() + 1e-6 * exact.abs()
    g_ours = grads(lambda a: GF.bce_generator_loss(a, reduction="sum"), r32)[0].double()
    g_eager = grads(lambda a: torch_bce(a, 1.0, "sum"), r32)[0].double()
    g_exact = torch.sigmoid(real) - 1
    assert (g_ours - g_exact).abs().max() <= 2 * (g_eager - g_exact).abs().max() + 1e-7


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_cpu(dtype):
    real, fake = logits(4096, seed=22), logits(1000, seed=23)
    exact = torch_bce(real, 1.0, "none")
    ours = GF.bce_discriminator_loss(real.to(dtype), fake.to(dtype), reduction="none")[0].double()
    eager = torch_bce(real.to(dtype), 1.0, "none").double()
    assert (ours - exact).abs().max() <= 2 * (eager - exact).abs().max()
    close(GF.bce_discriminator_loss(real.to(dtype), fake.to(dtype)).double(),
          torch_bce(real, 1.0) + torch_bce(fake, 0.0), rtol=1e-2, atol=1e-2)


def test_deterministic_across_runs_and_threads():
    real = logits(3 * 16384 * 7 + 5, seed=24, dtype=torch.float32)  # many chunks, odd tail
    fake = logits(100_003, seed=25, dtype=torch.float32)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (threads, 1, threads):
            torch.set_num_threads(n)
            loss, stats = GF.bce_discriminator_loss(real, fake, real_target=0.9, return_stats=True)
            outs.append(torch.cat([loss.view(1), torch.stack(list(stats))]))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_no_grad_and_non_contiguous():
    real, fake = logits(6, 8, seed=26), logits(8, 6, seed=27)
    with torch.no_grad():
        a = GF.bce_discriminator_loss(real.t(), fake[:, ::2], reduction="sum")
    b = GF.bce_discriminator_loss(real.t().contiguous(), fake[:, ::2].contiguous(), reduction="sum")
    close(a, b, rtol=0, atol=0)
    x = real.t().requires_grad_(True)
    GF.bce_generator_loss(x).backward()
    close(x.grad, (torch.sigmoid(real.t()) - 1) / x.numel())


# ----------------------------------------------------------------- CUDA (compared with the CPU kernel and fp64)

# One list of CUDA cases for a real GPU (here) and the CUDA emulator (tests/test_emu_bce.py).
CUDA_DISC_SIZES = [(64, 64), (700, 300), (1_000_003, 40_000)]  # 1 block / 1 block / many
CUDA_LOWP_SIZES = [1000, 300_001]
CUDA_LOWP_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@cuda
@needs_cuda
@pytest.mark.parametrize("n_real,n_fake", CUDA_DISC_SIZES)
def test_cuda_matches_cpu_and_reference(n_real, n_fake):
    real, fake = logits(n_real, seed=30), logits(n_fake, seed=31)
    real[:3] = torch.tensor([INF, -INF, NAN], dtype=torch.float64)
    for red in REDUCTIONS:
        cpu = GF.bce_discriminator_loss(real, fake, real_target=0.9, reduction=red, return_stats=True)
        dev = GF.bce_discriminator_loss(real.cuda(), fake.cuda(), real_target=0.9, reduction=red, return_stats=True)
        ref = R.bce_discriminator_loss(real, fake, real_target=0.9, reduction=red, return_stats=True)
        if red == "none":
            for a, b, c in zip(dev[0], cpu[0], ref[0]):
                close(a.cpu(), b)
                close(a.cpu(), c)
        else:
            close(dev[0].cpu(), cpu[0])
            close(dev[0].cpu(), ref[0])
        close(torch.stack(list(dev[1])).cpu(), torch.stack(list(cpu[1])), rtol=1e-6, atol=1e-6)
    fr, ff = real[3:].clone(), fake.clone()
    for dev in ("cpu", "cuda"):
        g = grads(lambda a, b: GF.bce_discriminator_loss(a, b, real_target=0.9), fr.to(dev), ff.to(dev))
        if dev == "cpu":
            g_cpu = g
        else:
            close(g[0].cpu(), g_cpu[0])
            close(g[1].cpu(), g_cpu[1])


@cuda
@needs_cuda
@pytest.mark.parametrize("dtype", CUDA_LOWP_DTYPES)
@pytest.mark.parametrize("n", CUDA_LOWP_SIZES)
def test_cuda_low_precision_2x_eager(dtype, n):
    real, fake = logits(n, seed=32, extreme=False), logits(n // 3 + 1, seed=33, extreme=False)
    exact = torch_bce(real, 0.9) + torch_bce(fake, 0.0)
    rd, fd = real.to("cuda", dtype), fake.to("cuda", dtype)
    ours = GF.bce_discriminator_loss(rd, fd, real_target=0.9).double().cpu()
    eager = (torch_bce(rd, 0.9) + torch_bce(fd, 0.0)).double().cpu()
    assert (ours - exact).abs() <= 2 * (eager - exact).abs() + 1e-6 * exact.abs()
    g_ours = grads(lambda a: GF.bce_generator_loss(a, reduction="sum"), rd)[0].double().cpu()
    g_eager = grads(lambda a: torch_bce(a, 1.0, "sum"), rd)[0].double().cpu()
    g_exact = torch.sigmoid(real) - 1
    assert (g_ours - g_exact).abs().max() <= 2 * (g_eager - g_exact).abs().max() + 1e-7


@cuda
@needs_cuda
def test_cuda_drop_ins_generator_and_determinism():
    x = logits(2, 3, 4, seed=34).cuda()
    t = torch.rand(2, 3, 4, dtype=torch.float64, device="cuda")
    w, pw = torch.rand(4, dtype=torch.float64, device="cuda"), torch.rand(3, 1, dtype=torch.float64, device="cuda")
    for red in REDUCTIONS:
        close(BCEWithLogitsLoss(w, reduction=red, pos_weight=pw)(x, t),
              torch.nn.BCEWithLogitsLoss(w, reduction=red, pos_weight=pw)(x, t))
        p = torch.sigmoid(x)
        close(BCELoss(w, reduction=red)(p, t), torch.nn.BCELoss(w, reduction=red)(p, t))
        for mode in ("non_saturating", "minimax"):
            close(GF.bce_generator_loss(x, mode=mode, reduction=red).cpu(),
                  GF.bce_generator_loss(x.cpu(), mode=mode, reduction=red))
    big_r, big_f = logits(2_000_001, seed=35, dtype=torch.float32).cuda(), logits(77, seed=36, dtype=torch.float32).cuda()
    a = GF.bce_discriminator_loss(big_r, big_f, return_stats=True)
    b = GF.bce_discriminator_loss(big_r, big_f, return_stats=True)
    assert torch.equal(a[0], b[0]) and all(torch.equal(u, v) for u, v in zip(a[1], b[1]))
    e = torch.zeros(0, device="cuda")
    assert GF.bce_discriminator_loss(e, e).isnan().item()
    assert GF.bce_generator_loss(e, reduction="sum").item() == 0.0


@cuda
@needs_cuda
def test_cuda_errors_and_opcheck():
    x = torch.randn(4)
    with pytest.raises(RuntimeError, match="bce_discriminator_loss: fake on device cuda:0 is not on the expected device cpu"):
        GF.bce_discriminator_loss(x, x.cuda())
    with pytest.raises(RuntimeError, match="bce_with_logits: target on device cpu is not on the expected device cuda:0"):
        GF.bce_with_logits(x.cuda(), x)
    real = torch.randn(2, 1, 3, 3, device="cuda", requires_grad=True)
    torch.library.opcheck(torch.ops.ganx.bce_discriminator_loss, (real, real.detach()[0], 1.0, 0.0, 1, True))
    torch.library.opcheck(torch.ops.ganx.bce_generator_loss, (real, 1, 1.0, 0, True))


def test_one_target_range_everywhere():
    # One closed range [0, 1] for every scalar target, checked once per call by the op in C++;
    # the fake kernel (torch.compile / meta), the loss modules and the training config accept and
    # refuse the same values, with the op's message.
    from torch._subclasses.fake_tensor import FakeTensorMode

    from ganx.ops.bce import TARGET_RANGE
    from ganx.train.config import ConfigError, TrainConfig

    assert TARGET_RANGE == (0.0, 1.0)
    x = torch.randn(4)
    for bad in (1.5, -0.1, float("nan")):
        msg = "bce_discriminator_loss: real_target must be in \\[0, 1\\]"
        with pytest.raises(ValueError, match=msg):
            GF.bce_discriminator_loss(x, x, real_target=bad)  # the public function: checked by the op
        with pytest.raises(ValueError, match=msg):
            torch.ops.ganx.bce_discriminator_loss(x, x, bad, 0.0, 1, False)
        with FakeTensorMode() as mode, pytest.raises(ValueError, match=msg):
            fx = mode.from_tensor(x)
            torch.ops.ganx.bce_discriminator_loss(fx, fx, bad, 0.0, 1, False)
        with FakeTensorMode() as mode, pytest.raises(ValueError, match="bce_generator_loss: target must be in"):
            torch.ops.ganx.bce_generator_loss(mode.from_tensor(x), 0, bad, 1, False)
        with pytest.raises(ValueError, match="DiscriminatorBCELoss: real_target must be in \\[0, 1\\]"):
            DiscriminatorBCELoss(real_target=bad)
        with pytest.raises(ConfigError, match="real_target': must be in \\[0, 1\\]"):
            TrainConfig(real_target=bad).validate()
    for ok in (0.0, 1.0):  # both ends are valid in every layer
        GF.bce_discriminator_loss(x, x, real_target=ok)
        DiscriminatorBCELoss(real_target=ok)
        TrainConfig(real_target=ok).validate()
