"""1x1 upsample-convs (the ResNet shortcut) run the conv at the input resolution and replicate
(issue 23 item 6; the "replicate" algorithm of csrc/upsample_conv2d.cpp): nearest upsampling
and a 1x1 convolution commute, so the GEMM runs on x itself (s*s fewer multiply-adds) and the
epilogue adds the bias, activates and writes each value to its s x s block; backward: the
block sums of act'(out) * grad_out, then the 1x1 conv's own backward at the input resolution.

Forward and every gradient against the pure-torch reference in float64 for scales 1-4, every
activation, with and without bias, every layout (x and weight); the rule picks it on every
scale; the convolution really runs at the input resolution; only the requested gradients,
written in full; gradcheck, opcheck, fake strides, forward AD; CUDA (marked) against the
reference and eager's error in float16 / bfloat16. The CUDA kernels themselves run under the
emulator in tests/test_emu_upconv.py.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch._prims_common import suggest_memory_format

import ganx
import ganx.functional as GF
from ganx.ops import reference as R
from ganx.ops import upsample_conv as U
from ganx.ops.activations import ACTIVATION_TABLE

# every activation of the table (csrc/activation.h)
ACTS = [(n, 0.2 if a.takes_slope else 0.01) for n, a in ACTIVATION_TABLE.items()]
SCALES = [1, 2, 3, 4]


# every test with the algorithm choice left to ganx's rule (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("auto_upconv_algorithm")


def _layout(name, n=2, c=5, h=6, w=7, dtype=torch.float64, device="cpu"):
    base = torch.randn(n, c, h, w, dtype=dtype, device=device)
    if name == "channels_last":
        return base.contiguous(memory_format=torch.channels_last)
    if name == "sliced":
        return torch.randn(n, 2 * c, h + 3, w + 1, dtype=dtype, device=device)[:, ::2, 2:h + 2, 1:]
    if name == "transposed":
        return torch.randn(n, c, w, h, dtype=dtype, device=device).transpose(2, 3)
    return base


LAYOUTS = ["contiguous", "channels_last", "sliced", "transposed"]


def _run(fn, x, w, b, go, **kw):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    out = fn(*leaves, **kw)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], go)
    return out.detach(), grads


def _check(x, w, b, scale, act, slope, atol=1e-10):
    kw = dict(scale_factor=scale, activation=act, negative_slope=slope)
    ref = R.upsample_conv2d(x, w, b, **kw)
    go = torch.randn_like(ref)
    out, g = _run(GF.upsample_conv2d, x, w, b, go, **kw)
    rout, rg = _run(R.upsample_conv2d, x, w, b, go, **kw)
    torch.testing.assert_close(out, rout, atol=atol, rtol=0)
    for name, a, r in zip(("x", "weight", "bias"), g, rg):
        torch.testing.assert_close(a, r, atol=atol * 10, rtol=0, msg=lambda m: f"grad {name}: {m}")
    assert out.is_contiguous(memory_format=suggest_memory_format(x))
    return out, g


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("act,slope", ACTS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_replicate_matches_reference_fp64(scale, act, slope, bias, layout):
    x = _layout(layout)
    w = torch.randn(4, 5, 1, 1, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64) if bias else None
    with U.upconv_algorithm("replicate"):  # forced: an unknown name before the 1x1 path existed
        forced = _check(x, w, b, scale, act, slope)
    auto = _check(x, w, b, scale, act, slope)  # the rule's choice (replicate: test_rule_...)
    torch.testing.assert_close(auto[0], forced[0], atol=0, rtol=0)


@pytest.mark.parametrize("layout", ["channels_last", "permuted_weight", "noncontiguous_grad"])
def test_weight_layouts_and_expanded_grad(layout):
    x = _layout("contiguous")
    w = torch.randn(4, 5, 1, 1, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    if layout == "channels_last":
        w = w.contiguous(memory_format=torch.channels_last)
    elif layout == "permuted_weight":
        w = torch.randn(5, 4, 1, 1, dtype=torch.float64).transpose(0, 1)
    for scale in SCALES:
        if layout == "noncontiguous_grad":  # out.sum().backward(): an expanded (stride-0) grad_out
            leaves = [t.clone().requires_grad_() for t in (x, w, b)]
            GF.upsample_conv2d(*leaves, scale_factor=scale, activation="tanh").sum().backward()
            rleaves = [t.clone().requires_grad_() for t in (x, w, b)]
            R.upsample_conv2d(*rleaves, scale_factor=scale, activation="tanh").sum().backward()
            for a, r in zip(leaves, rleaves):
                torch.testing.assert_close(a.grad, r.grad, atol=1e-9, rtol=0)
        else:
            _check(x, w, b, scale, "leaky_relu", 0.2)


def test_rule_takes_replicate_for_1x1_on_every_scale():
    # A 1x1 kernel used to take the stacked form (s*s copies of the weight as output channels:
    # s*s times the multiply-adds of the 1x1 conv of x) or per phase (s*s convs).
    ganx._C.clear_upconv_algorithm_choices()
    for scale in SCALES:
        for hw in (3, 16):
            x = torch.randn(1, 3, hw, hw, requires_grad=True)
            GF.upsample_conv2d(x, torch.randn(4, 3, 1, 1), None, scale).sum().backward()
            for direction in ("forward", "backward"):
                hits = [c for c in U.upconv_algorithm_choices()
                        if f"{direction} x[1, 3, {hw}, {hw}] c_out=4 s={scale} k=1 " in c["key"]]
                assert [(h["algorithm"], h["source"]) for h in hits] == [("replicate", "rule")], (scale, hw, hits)


def _conv_events(fn):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as p:
        fn()
    return [(e.name, [list(s) for s in e.input_shapes]) for e in p.events()
            if not _inside(e, "aten::convolution_backward")]


def _inside(e, name):
    # ops that torch's own convolution backward runs (its single-thread path zero-fills the
    # gradients it accumulates into) are not ganx's doing
    e = e.cpu_parent
    while e is not None:
        if e.name == name:
            return True
        e = e.cpu_parent
    return False


@pytest.mark.parametrize("scale", [2, 3])
def test_the_gemm_runs_at_the_input_resolution(scale):
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    w = torch.randn(4, 6, 1, 1, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    out = GF.upsample_conv2d(x, w, b, scale, activation="relu")
    go = torch.randn_like(out)
    fwd = _conv_events(lambda: GF.upsample_conv2d(x, w, b, scale, activation="relu"))
    convs = [shapes for name, shapes in fwd if name == "aten::convolution"]
    # one convolution, of x itself with the 1x1 weight as it is (no fold, no stacked copies)
    assert len(convs) == 1 and convs[0][0] == [2, 6, 5, 7] and convs[0][1] == [4, 6, 1, 1], convs
    assert sum(name == "ganx::upconv_replicate_fwd" for name, _ in fwd) == 1
    assert not any(name in ("ganx::upconv_fold", "ganx::upconv_epilogue_fwd") for name, _ in fwd)
    bwd = _conv_events(lambda: out.backward(go, retain_graph=True))
    cb = [shapes for name, shapes in bwd if name == "aten::convolution_backward"]
    assert len(cb) == 1 and cb[0][0] == [2, 4, 5, 7] and cb[0][2] == [4, 6, 1, 1], cb  # grad at the input size
    assert sum(name == "ganx::upconv_replicate_bwd" for name, _ in bwd) == 1
    # no zero-fill of ganx's own (a leaked torch.use_deterministic_algorithms(True) fills fresh tensors)
    assert not any(name in ("ganx::upconv_fold", "aten::zero_", "aten::fill_") for name, _ in bwd)


@pytest.mark.parametrize("mask", [(True, True, True), (True, False, False), (False, True, False),
                                  (False, False, True), (False, True, True)])
@pytest.mark.parametrize("scale", [1, 3])
@pytest.mark.parametrize("act", ["none", "tanh"] + [n for n, a in ACTIVATION_TABLE.items() if a.ref == "x"])
def test_only_the_requested_gradients(mask, scale, act):
    x = _layout("channels_last")
    w = torch.randn(4, 5, 1, 1, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    out = torch.ops.ganx.upsample_conv2d(x, w, b, scale, 0, act, 0.0)
    go = torch.randn_like(out)
    # what the backward reads (the table's ref column): the output, or the pre-activation
    saved = (out.new_empty(0) if act == "none" else out if ACTIVATION_TABLE[act].ref == "y"
             else torch.ops.ganx.upsample_conv2d(x, w, b, scale, 0, "none", 0.0))
    gx, gw, gb = torch.ops.ganx.upsample_conv2d_backward(go, x, w, saved, True, scale, 0, act, 0.0, list(mask))
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    rg = torch.autograd.grad(R.upsample_conv2d(*leaves, scale_factor=scale, activation=act), leaves, go)
    for want, got, r, t in zip(mask, (gx, gw, gb), rg, (x, w, b)):
        if want:
            torch.testing.assert_close(got, r, atol=1e-9, rtol=0)
            assert got.is_contiguous(memory_format=torch.channels_last if t is x else torch.contiguous_format)
        else:
            assert got.numel() == 0


def test_weight_gradient_sums_every_replicated_position():
    # x = 1, grad_out = 1, no activation: d w[o, c] = N * H * W * s^2 exactly (each input pixel
    # is read by s^2 output pixels), d b[o] = the same, d x[c] = s^2 * sum_o w[o, c].
    s, n, h, w_ = 3, 2, 4, 5
    x = torch.ones(n, 3, h, w_, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, 1, 1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    GF.upsample_conv2d(x, w, b, s).sum().backward()
    assert torch.equal(w.grad, torch.full_like(w, n * h * w_ * s * s))
    assert torch.equal(b.grad, torch.full_like(b, n * h * w_ * s * s))
    torch.testing.assert_close(x.grad, (s * s * w.detach().sum((0, 2, 3))).view(1, 3, 1, 1).expand_as(x),
                               atol=1e-12, rtol=0)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("act", [None if n == "none" else n for n in ACTIVATION_TABLE])
def test_gradcheck(scale, act):
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64)
    w = torch.randn(2, 3, 1, 1, dtype=torch.float64)
    b = torch.randn(2, dtype=torch.float64) + (3.0 if act == "relu" else 0.0)  # away from relu's kink
    args = [t.requires_grad_() for t in (x, w, b)]
    fn = lambda x, w, b: GF.upsample_conv2d(x, w, b, scale, None, act, 0.2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_opcheck(layout):
    x = _layout(layout, dtype=torch.float32)
    w = torch.randn(4, 5, 1, 1)
    b = torch.randn(4)
    for args in [(x, w, b, 2, 0, "none", 0.01), (x, w, None, 3, 0, "tanh", 0.01), (x, w, b, 1, 0, "relu", 0.01),
                 (x.requires_grad_(), w.requires_grad_(), b.requires_grad_(), 4, 0, "leaky_relu", 0.2)]:
        torch.library.opcheck(torch.ops.ganx.upsample_conv2d.default, args)
    xd, wd = x.detach(), w.detach()
    for scale in (1, 2):
        out = torch.ops.ganx.upsample_conv2d(xd, wd, b.detach(), scale, 0, "relu", 0.01)
        torch.library.opcheck(torch.ops.ganx.upsample_conv2d_backward.default,
                              (torch.randn_like(out), xd, wd, out, True, scale, 0, "relu", 0.01, [True, True, True]))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced", "transposed", "cl_nc11"])
@pytest.mark.parametrize("scale", [1, 2])
def test_fake_strides_match_real(fake_strides_match, layout, scale):
    x = (torch.randn(2, 5, 1, 1).contiguous(memory_format=torch.channels_last) if layout == "cl_nc11"
         else _layout(layout, dtype=torch.float32))
    w = torch.randn(4, 5, 1, 1).contiguous(memory_format=torch.channels_last)
    fwd = lambda x_, w_: torch.ops.ganx.upsample_conv2d(x_, w_, None, scale, 0, "relu", 0.0)  # noqa: E731
    bwd = lambda g_, x_, w_, o_: torch.ops.ganx.upsample_conv2d_backward(  # noqa: E731
        g_, x_, w_, o_, False, scale, 0, "relu", 0.0, [True, True, False])
    fake_strides_match(fwd, bwd, x, w, layout)


def test_forced_replicate_needs_a_1x1_kernel():
    with U.upconv_algorithm("replicate"), pytest.raises(
            ValueError, match="upsample_conv2d: the forced algorithm 'replicate'.*not available for scale 2 with a 3x3"):
        GF.upsample_conv2d(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3))


def test_empty_batch_and_module():
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    w = torch.randn(5, 3, 1, 1, requires_grad=True)
    out = GF.upsample_conv2d(x, w, None, 3)
    assert out.shape == (0, 5, 12, 12)
    out.sum().backward()
    assert torch.equal(w.grad, torch.zeros_like(w))
    m = ganx.nn.UpsampleConv2d(3, 5, kernel_size=1, scale_factor=2, activation="tanh").double()
    xi = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(m(xi), R.upsample_conv2d(xi, m.weight, m.bias, 2, None, "tanh"), atol=1e-12, rtol=0)


@pytest.mark.parametrize("scale", [2, 3])
def test_forward_ad(scale):
    x, w, b = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(4, 3, 1, 1, dtype=torch.float64), \
        torch.randn(4, dtype=torch.float64)
    tx, tw, tb = (torch.randn_like(t) for t in (x, w, b))
    fn = lambda x, w, b: GF.upsample_conv2d(x, w, b, scale, activation="tanh")  # noqa: E731
    fr = lambda x, w, b: R.upsample_conv2d(x, w, b, scale, activation="tanh")  # noqa: E731
    out, t = torch.func.jvp(fn, (x, w, b), (tx, tw, tb))
    out_r, t_r = torch.func.jvp(fr, (x, w, b), (tx, tw, tb))
    torch.testing.assert_close(out, out_r, atol=1e-10, rtol=0)
    torch.testing.assert_close(t, t_r, atol=1e-10, rtol=0)


# ----------------------------------------------------------------- ganx.fuse and backend="ganx" on the CPU

@pytest.mark.parametrize("scale", [1, 3, 4])
def test_fuse_takes_1x1_at_every_scale_on_the_cpu(scale):
    # Before the replicate form a 1x1 upsample-conv at a scale other than 2 was left on the CPU as
    # "not faster"; 3x3 and 5x5 kernels still are.
    seq = nn.Sequential(nn.Upsample(scale_factor=scale), nn.Conv2d(3, 4, 1), nn.ReLU()).double()
    fused, report = ganx.fuse(seq)
    assert [e.what for e in report.fused] == [f"Upsample(x{scale}) + Conv2d(1x1) + ReLU -> UpsampleConv2d"], str(report)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(fused(x), seq(x), atol=1e-12, rtol=0)
    seq3 = nn.Sequential(nn.Upsample(scale_factor=scale), nn.Conv2d(3, 4, 3, padding=1)).double()
    _, report = ganx.fuse(seq3)
    assert not report.fused and f"scale_factor={scale} ganx's kernel is not faster" in report.left[0].reason


class _Shortcut(nn.Module):
    """A residual up-block at scale 3: the main path's Upsample feeds a 3x3 conv, the shortcut's
    functional interpolate a 1x1 conv; and one Upsample feeding both."""

    def __init__(self, shared):
        super().__init__()
        self.shared = shared
        self.up = nn.Upsample(scale_factor=3)
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.sc = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        if self.shared:
            u = self.up(x)
            return self.c(u) + self.sc(u)
        return self.c(self.up(x)) + self.sc(F.interpolate(x, scale_factor=3))


def test_fuse_1x1_shortcut_at_scale_3_in_a_traced_model():
    m = _Shortcut(shared=False).double()
    fused, report = ganx.fuse(m)
    assert [e.what for e in report.fused] == ["F.interpolate(x3) + Conv2d(1x1) -> UpsampleConv2d"], str(report)
    assert len(report.left) == 1 and "not faster" in report.left[0].reason  # the 3x3 main path
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(fused(x), m(x), atol=1e-12, rtol=0)
    # one upsampling feeding a 3x3 and a 1x1 conv: both or neither, so left on the CPU
    _, report = ganx.fuse(_Shortcut(shared=True).double())
    assert not report.fused and "not faster" in report.left[0].reason, str(report)


def test_compile_backend_takes_1x1_at_scale_3_on_the_cpu():
    from ganx.convert import _compile
    m = _Shortcut(shared=False).double()
    torch._dynamo.reset()
    compiled = torch.compile(m, backend=_compile.make_backend("aot_eager"), fullgraph=True)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(compiled(x), m(x), atol=1e-12, rtol=0)
    fused = [line for line in _compile.LAST if line.startswith("fused")]
    left = [line for line in _compile.LAST if line.startswith("left")]
    assert len(fused) == 1 and len(left) == 1 and "3x3 or 5x5" in left[0], _compile.LAST


# ----------------------------------------------------------------- CUDA

@pytest.mark.cuda
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("act,slope", ACTS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "sliced"])
def test_cuda_matches_reference_fp64(scale, act, slope, layout):
    x = _layout(layout, device="cuda")
    w = torch.randn(4, 5, 1, 1, dtype=torch.float64, device="cuda")
    b = torch.randn(4, dtype=torch.float64, device="cuda")
    out, g = _check(x, w, b, scale, act, slope)
    cpu_out, cpu_g = _check(x.cpu(), w.cpu(), b.cpu(), scale, act, slope)
    torch.testing.assert_close(out.cpu(), cpu_out, atol=1e-10, rtol=0)
    _check(x, w, None, scale, act, slope)
    ganx._C.clear_upconv_algorithm_choices()
    GF.upsample_conv2d(x, w, b, scale)
    assert [c["algorithm"] for c in U.upconv_algorithm_choices() if "cuda" in c["key"]] == ["replicate"]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act", [None, "tanh"] + [n for n, a in ACTIVATION_TABLE.items() if a.ref == "x"])
@pytest.mark.parametrize("scale", [2, 3])
def test_cuda_low_precision_error_at_most_twice_eager(dtype, act, scale):
    x = torch.randn(4, 32, 8, 8, device="cuda")
    w = torch.randn(16, 32, 1, 1, device="cuda") / 32 ** 0.5
    b = torch.randn(16, device="cuda")
    kw = dict(scale_factor=scale, activation=act)
    ref = R.upsample_conv2d(x.double(), w.double(), b.double(), **kw)
    go = torch.randn_like(ref)
    leaves = [t.to(dtype).requires_grad_() for t in (x, w, b)]
    out = GF.upsample_conv2d(*leaves, **kw)
    eager_leaves = [t.to(dtype).requires_grad_() for t in (x, w, b)]
    eager = R.upsample_conv2d(*eager_leaves, **kw)
    assert out.dtype == dtype
    assert (out.double() - ref).abs().max() <= 2 * (eager.double() - ref).abs().max() + 1e-6
    out.backward(go.to(dtype))
    eager.backward(go.to(dtype))
    ref_leaves = [t.double().requires_grad_() for t in (x, w, b)]
    R.upsample_conv2d(*ref_leaves, **kw).backward(go)
    for a, e, r in zip(leaves, eager_leaves, ref_leaves):
        ours = (a.grad.double() - r.grad).abs().max().item()
        theirs = (e.grad.double() - r.grad).abs().max().item()
        assert ours <= 2 * theirs + 1e-6, (ours, theirs)
