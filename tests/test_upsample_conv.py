"""upsample_conv2d against the pure-torch reference: forward, every gradient, formats, errors."""

import pytest
import torch
from torch import nn
from torch._prims_common import suggest_memory_format

import ganx
from ganx.ops import reference
from ganx.ops.activations import ACTIVATION_TABLE

# every activation of the table (csrc/activation.h): a new one gets these tests for free
ACTS = [(None if n == "none" else n, 0.2 if a.takes_slope else 0.01) for n, a in ACTIVATION_TABLE.items()]


def _inputs(n, ci, co, h, w, k, dtype=torch.float64, device="cpu", bias=True):
    x = torch.randn(n, ci, h, w, dtype=dtype, device=device)
    wt = torch.randn(co, ci, k, k, dtype=dtype, device=device) / (ci * k * k) ** 0.5
    b = torch.randn(co, dtype=dtype, device=device) if bias else None
    return x, wt, b


def _grads(fn, x, w, b, go, **kw):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    out = fn(*leaves, **kw)
    out.backward(go)
    return out.detach(), [t.grad if t is not None else None for t in leaves]


def _compare(x, w, b, scale, act, slope, atol, rtol=0.0):
    kw = dict(scale_factor=scale, activation=act, negative_slope=slope)
    ref_out = reference.upsample_conv2d(x, w, b, **kw)
    go = torch.randn_like(ref_out)
    out, g = _grads(ganx.functional.upsample_conv2d, x, w, b, go, **kw)
    rout, rg = _grads(reference.upsample_conv2d, x, w, b, go, **kw)
    torch.testing.assert_close(out, rout, atol=atol, rtol=rtol)
    for name, a, r in zip(("x", "weight", "bias"), g, rg):
        if r is None:
            assert a is None
        else:
            torch.testing.assert_close(a, r, atol=atol, rtol=rtol, msg=lambda m: f"grad {name}: {m}")
    return out


@pytest.mark.parametrize("scale,k", [(2, 3), (2, 1), (2, 5), (1, 3), (3, 3), (3, 5), (4, 3), (4, 5)])
@pytest.mark.parametrize("act,slope", ACTS)
def test_matches_reference_fp64(scale, k, act, slope):
    x, w, b = _inputs(2, 3, 4, 5, 6, k)
    _compare(x, w, b, scale, act, slope, atol=1e-10)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (1, 1, 7, 3), (3, 5, 2, 9), (2, 16, 4, 4), (1, 2, 13, 11)])
@pytest.mark.parametrize("bias", [True, False])
def test_odd_sizes_float32(shape, bias):
    n, ci, h, w_ = shape
    x, w, b = _inputs(n, ci, 3, h, w_, 3, dtype=torch.float32, bias=bias)
    _compare(x, w, b, 2, "leaky_relu", 0.2, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (1, 2, 17, 23), (2, 2, 16, 5)])
@pytest.mark.parametrize("scale,k", [(2, 3), (3, 5), (2, 1)])
def test_large_maps_fp64(shape, scale, k):
    # maps of 16x16 and more take the CPU kernel's single stacked-GEMM form, smaller ones the
    # per-phase form: both must match the reference
    n, ci, h, w_ = shape
    x, w, b = _inputs(n, ci, 3, h, w_, k)
    _compare(x, w, b, scale, "tanh", 0.01, atol=1e-10)
    _compare(x.contiguous(memory_format=torch.channels_last), w, None, scale, None, 0.01, atol=1e-10)


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last", "sliced", "transposed"])
def test_memory_formats(fmt):
    x, w, b = _inputs(2, 4, 3, 6, 6, 3, dtype=torch.float32)
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif fmt == "sliced":
        x = torch.randn(2, 8, 9, 13)[:, ::2, 1:7, 3:9]
    elif fmt == "transposed":
        x = x.transpose(2, 3)
    out = _compare(x, w, b, 2, "relu", 0.01, atol=2e-5, rtol=1e-5)
    if fmt == "channels_last":
        assert out.is_contiguous(memory_format=torch.channels_last)
    else:
        assert out.is_contiguous()


def test_weight_channels_last_and_noncontiguous_grad_out():
    x, w, b = _inputs(2, 4, 3, 5, 5, 3, dtype=torch.float64)
    w = w.contiguous(memory_format=torch.channels_last)
    xr = x.clone().requires_grad_()
    out = ganx.functional.upsample_conv2d(xr, w, b)
    out.sum().backward()  # grad_out is an expanded (stride-0) tensor
    xr2 = x.clone().requires_grad_()
    reference.upsample_conv2d(xr2, w, b).sum().backward()
    torch.testing.assert_close(xr.grad, xr2.grad)


def test_only_needed_grads():
    x, w, b = _inputs(2, 3, 4, 5, 5, 3)
    w.requires_grad_()
    out = ganx.functional.upsample_conv2d(x, w, b)
    out.square().sum().backward()
    ref_w = w.detach().clone().requires_grad_()
    reference.upsample_conv2d(x, ref_w, b).square().sum().backward()
    torch.testing.assert_close(w.grad, ref_w.grad)
    assert not x.requires_grad


def test_empty_batch():
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    w = torch.randn(5, 3, 3, 3, requires_grad=True)
    out = ganx.functional.upsample_conv2d(x, w, None)
    assert out.shape == (0, 5, 8, 8)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert torch.equal(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("scale,k,act", [(2, 3, "tanh"), (2, 5, "leaky_relu"), (3, 3, None), (2, 1, "relu")] +
                         [(s, k, n) for n, a in ACTIVATION_TABLE.items() if a.ref == "x" for s, k in ((2, 3), (3, 1))])
def test_gradcheck(scale, k, act):
    x, w, b = _inputs(2, 2, 3, 3, 4, k)
    # keep pre-activations away from relu's kink so finite differences are meaningful
    b = b + 3.0 if act == "relu" else b
    args = [t.requires_grad_() for t in (x, w, b)]
    fn = lambda x, w, b: ganx.functional.upsample_conv2d(x, w, b, scale, None, act, 0.2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


def test_opcheck():
    x, w, b = _inputs(2, 3, 4, 5, 4, 3, dtype=torch.float32)
    for args in [(x, w, b, 2, 1, "none", 0.01), (x.requires_grad_(), w.requires_grad_(), None, 2, 1, "tanh", 0.01),
                 (x.contiguous(memory_format=torch.channels_last), w, b, 3, 1, "leaky_relu", 0.2)]:
        torch.library.opcheck(torch.ops.ganx.upsample_conv2d.default, args)
    go = torch.randn(2, 4, 10, 8)
    for act, slope in ACTS:  # every activation of the table, forward and backward
        act = act or "none"
        x1, w1 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
        torch.library.opcheck(torch.ops.ganx.upsample_conv2d.default, (x1, w1, b, 2, 1, act, slope))
        # what the backward reads: the output, or the pre-activation (the table's ref column)
        ref = torch.ops.ganx.upsample_conv2d(x.detach(), w.detach(), b, 2, 1,
                                             "none" if ACTIVATION_TABLE[act].ref == "x" else act, slope)
        torch.library.opcheck(torch.ops.ganx.upsample_conv2d_backward.default,
                              (go, x.detach(), w.detach(), ref, True, 2, 1, act, slope, [True, True, True]))
    out = torch.ops.ganx.upsample_conv2d(x.detach(), w.detach(), b, 2, 1, "relu", 0.01)
    torch.library.opcheck(torch.ops.ganx.upsample_conv2d_backward.default,
                          (go, x.detach(), w.detach(), out, True, 2, 1, "relu", 0.01, [True, True, True]))


def test_compile_fullgraph_matches_eager():
    m = ganx.nn.UpsampleConv2d(3, 4, activation="leaky_relu", negative_slope=0.2)
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    eager = m(x)
    eager.sum().backward()
    gx, gw = x.grad.clone(), m.weight.grad.clone()
    x.grad = None
    m.weight.grad = None
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    out.sum().backward()
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(x.grad, gx)
    torch.testing.assert_close(m.weight.grad, gw)


@pytest.mark.slow
def test_compile_inductor_fullgraph():
    m = ganx.nn.UpsampleConv2d(2, 3, activation="tanh")
    x = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(torch.compile(m, fullgraph=True)(x), m(x))


def test_double_backward_is_a_clear_error():
    x, w, b = _inputs(1, 2, 2, 3, 3, 3)
    x.requires_grad_()
    out = ganx.functional.upsample_conv2d(x, w, b, activation="tanh")
    with pytest.raises(RuntimeError, match="upsample_conv2d: double backward"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


# ----------------------------------------------------------------- module

@pytest.mark.parametrize("k", [1, 3, 5])
def test_module_initialised_like_conv2d_and_loads_its_state_dict(k):
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 4, k, padding=k // 2)
    torch.manual_seed(3)
    m = ganx.nn.UpsampleConv2d(6, 4, k)
    assert m.weight.shape == conv.weight.shape and m.bias.shape == conv.bias.shape
    torch.testing.assert_close(m.weight, conv.weight, atol=0, rtol=0)
    torch.testing.assert_close(m.bias, conv.bias, atol=0, rtol=0)
    m2 = ganx.nn.UpsampleConv2d(6, 4, k)
    m2.load_state_dict(conv.state_dict())
    x = torch.randn(2, 6, 5, 5)
    eager = conv(nn.Upsample(scale_factor=2, mode="nearest")(x))
    torch.testing.assert_close(m2(x), eager, atol=1e-5, rtol=1e-5)
    assert set(m2.state_dict()) == set(conv.state_dict())


def test_module_reference_impl_and_repr():
    m = ganx.nn.UpsampleConv2d(3, 2, activation="leaky_relu", negative_slope=0.2)
    r = ganx.nn.UpsampleConv2d(3, 2, activation="leaky_relu", negative_slope=0.2, impl="reference")
    r.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(m(x), r(x), atol=1e-5, rtol=1e-5)
    assert "activation='leaky_relu'" in repr(m) and "impl='reference'" in repr(r)
    m2 = ganx.nn.UpsampleConv2d(3, 2, bias=False)
    assert m2.bias is None and m2(x).shape == (2, 2, 8, 8)


# ----------------------------------------------------------------- errors

def _call(**over):
    args = dict(x=torch.randn(2, 3, 4, 4), weight=torch.randn(5, 3, 3, 3), bias=torch.randn(5))
    args.update(over)
    return ganx.functional.upsample_conv2d(**args)


@pytest.mark.parametrize("over,exc,match", [
    (dict(x=torch.randn(3, 4, 4)), RuntimeError, r"upsample_conv2d: x must be 4-D \(N, C_in, H, W\), got 3-D"),
    (dict(weight=torch.randn(5, 3, 3)), ValueError, r"upsample_conv2d: weight must be 4-D \(C_out, C_in, kH, kW\), got 3-D"),
    (dict(weight=torch.randn(5, 2, 3, 3)), RuntimeError, r"upsample_conv2d: weight has 2 input channels .* x has 3 channels"),
    (dict(weight=torch.randn(5, 3, 4, 4)), ValueError, r"upsample_conv2d: kernel size must be 1, 3 or 5"),
    (dict(weight=torch.randn(5, 3, 7, 7)), ValueError, r"upsample_conv2d: kernel size must be 1, 3 or 5"),
    (dict(weight=torch.randn(5, 3, 3, 1)), ValueError, r"upsample_conv2d: weight must have a square kernel"),
    (dict(bias=torch.randn(4)), RuntimeError, r"upsample_conv2d: bias must be 1-D of size C_out=5"),
    (dict(bias=torch.randn(5, dtype=torch.float64)), RuntimeError, r"upsample_conv2d: bias must have the dtype of x"),
    (dict(weight=torch.randn(5, 3, 3, 3, dtype=torch.float64)), RuntimeError, r"upsample_conv2d: weight must have the dtype of x"),
    (dict(x=torch.randint(0, 3, (2, 3, 4, 4))), RuntimeError, r"upsample_conv2d: x must be a floating-point tensor"),
    (dict(x=torch.randn(2, 3, 4, 4).half(), weight=torch.randn(5, 3, 3, 3).half(), bias=None), RuntimeError,
     r"upsample_conv2d: on CPU x must be float32 or float64"),
    (dict(scale_factor=0), ValueError, r"upsample_conv2d: scale_factor must be an integer in \[1, 4\], got 0"),
    (dict(scale_factor=5), ValueError, r"upsample_conv2d: scale_factor must be an integer in \[1, 4\], got 5"),
    (dict(scale_factor=1.5), ValueError, r"upsample_conv2d: scale_factor must be an integer"),
    (dict(scale_factor="2"), TypeError, r"upsample_conv2d: scale_factor must be an integer"),
    (dict(padding=0), ValueError, r"upsample_conv2d: padding must be kernel_size // 2 = 1"),
    (dict(padding=1.0), TypeError, r"upsample_conv2d: padding must be an integer"),
    (dict(activation="no_such_act"), ValueError, r"upsample_conv2d: activation must be one of"),
    (dict(activation="leaky_relu", negative_slope=-0.1), ValueError, r"upsample_conv2d: negative_slope must be finite and >= 0"),
])
def test_errors(over, exc, match):
    with pytest.raises(exc, match=match):
        _call(**over)


def test_errors_on_raw_op():
    x, w = torch.randn(1, 2, 3, 3), torch.randn(2, 2, 3, 3)
    with pytest.raises(ValueError, match="upsample_conv2d: scale_factor must be an integer in"):
        torch.ops.ganx.upsample_conv2d(x, w, None, 9, 1, "none", 0.0)
    with pytest.raises(ValueError, match="upsample_conv2d: activation must be one of"):
        torch.ops.ganx.upsample_conv2d(x, w, None, 2, 1, "swish", 0.0)
    with pytest.raises(RuntimeError, match="upsample_conv2d_backward: grad_out must have shape"):
        torch.ops.ganx.upsample_conv2d_backward(torch.randn(1, 2, 5, 6), x, w, torch.empty(0), False, 2, 1,
                                                "none", 0.0, [True, True, False])


def test_module_errors():
    with pytest.raises(ValueError, match="UpsampleConv2d: kernel_size must be 1, 3 or 5"):
        ganx.nn.UpsampleConv2d(2, 2, 2)
    with pytest.raises(ValueError, match="UpsampleConv2d: impl must be"):
        ganx.nn.UpsampleConv2d(2, 2, impl="triton")
    with pytest.raises(ValueError, match="UpsampleConv2d: activation must be one of"):
        ganx.nn.UpsampleConv2d(2, 2, activation="elu")


# ----------------------------------------------------------------- CUDA (run wherever a GPU exists)

def _eager_error(fn_args, dtype, scale, act, slope, k):
    """Max error of eager PyTorch in `dtype` against the fp64 reference."""
    x, w, b = fn_args
    ref = reference.upsample_conv2d(x.double(), w.double(), b.double(), scale, None, act, slope)
    low = reference.upsample_conv2d(x.to(dtype), w.to(dtype), b.to(dtype), scale, None, act, slope)
    return (low.double() - ref).abs().max().item(), ref


@pytest.mark.cuda
@pytest.mark.parametrize("scale,k", [(2, 3), (2, 1), (2, 5), (3, 3), (1, 5), (4, 3)])
@pytest.mark.parametrize("act,slope", ACTS)
def test_cuda_matches_cpu_and_reference_fp64(scale, k, act, slope):
    x, w, b = _inputs(2, 5, 9, 7, 6, k)
    cpu_out = _compare(x, w, b, scale, act, slope, atol=1e-10)
    out = _compare(x.cuda(), w.cuda(), b.cuda(), scale, act, slope, atol=1e-10)
    torch.testing.assert_close(out.cpu(), cpu_out, atol=1e-10, rtol=0)


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 17, 19, 5), (2, 64, 8, 8), (1, 9, 33, 31), (4, 130, 4, 4)])
@pytest.mark.parametrize("fmt", ["contiguous", "channels_last", "sliced"])
def test_cuda_shapes_and_formats_float32(shape, fmt, no_tf32):
    n, ci, h, w_ = shape
    x, w, b = _inputs(n, ci, 11, h, w_, 3, dtype=torch.float32, device="cuda")
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif fmt == "sliced":
        x = torch.randn(n, ci, h + 2, w_ + 3, device="cuda")[:, :, 1:h + 1, 2:w_ + 2]
    out = _compare(x, w, b, 2, "leaky_relu", 0.2, atol=1e-4, rtol=1e-4)
    # The output takes x's suggest_memory_format(): c10 calls an N x C x 1 x 1 tensor
    # contiguous, so (1, 1, 1, 1) channels_last is an ordinary contiguous tensor.
    assert out.is_contiguous(memory_format=suggest_memory_format(x))
    if fmt == "channels_last" and x.shape[1] > 1 and x.shape[2] * x.shape[3] > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act", [None, "tanh"] + [n for n, a in ACTIVATION_TABLE.items() if a.ref == "x"])
def test_cuda_low_precision_error_at_most_twice_eager(dtype, act):
    x, w, b = _inputs(4, 32, 16, 8, 8, 3, dtype=torch.float32, device="cuda")
    eager_err, ref = _eager_error((x, w, b), dtype, 2, act, 0.01, 3)
    out = ganx.functional.upsample_conv2d(x.to(dtype), w.to(dtype), b.to(dtype), activation=act)
    assert out.dtype == dtype
    err = (out.double() - ref).abs().max().item()
    assert err <= 2 * eager_err + 1e-6, (err, eager_err)
    # gradients too
    go = torch.randn_like(ref)
    leaves = [t.to(dtype).requires_grad_() for t in (x, w, b)]
    ganx.functional.upsample_conv2d(*leaves, activation=act).backward(go.to(dtype))
    ref_leaves = [t.double().requires_grad_() for t in (x, w, b)]
    reference.upsample_conv2d(*ref_leaves, activation=act).backward(go)
    eager_leaves = [t.to(dtype).requires_grad_() for t in (x, w, b)]
    reference.upsample_conv2d(*eager_leaves, activation=act).backward(go.to(dtype))
    for a, r, e in zip(leaves, ref_leaves, eager_leaves):
        ours = (a.grad.double() - r.grad).abs().max().item()
        theirs = (e.grad.double() - r.grad).abs().max().item()
        assert ours <= 2 * theirs + 1e-6, (ours, theirs)


@pytest.mark.cuda
def test_cuda_autocast():
    m = ganx.nn.UpsampleConv2d(8, 4).cuda()
    x = torch.randn(2, 8, 6, 6, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = m(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert m.weight.grad.dtype == torch.float32
    torch.testing.assert_close(out.float(), m(x), atol=5e-2, rtol=5e-2)


@pytest.mark.cuda
@pytest.mark.parametrize("act", ["tanh"] + [n for n, a in ACTIVATION_TABLE.items() if a.ref == "x"])
def test_cuda_gradcheck_and_opcheck(act):
    x, w, b = _inputs(2, 3, 2, 3, 3, 3, device="cuda")
    args = [t.requires_grad_() for t in (x, w, b)]
    fn = lambda x, w, b: ganx.functional.upsample_conv2d(x, w, b, 2, None, act)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)
    torch.library.opcheck(torch.ops.ganx.upsample_conv2d.default, (x.float(), w.float(), b.float(), 2, 1, "relu", 0.0))
    xf, wf = x.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    torch.library.opcheck(torch.ops.ganx.upsample_conv2d.default, (xf, wf, b.detach().float(), 2, 1, act, 0.0))


@pytest.mark.cuda
def test_cuda_errors_and_empty():
    x = torch.randn(0, 3, 4, 4, device="cuda", requires_grad=True)
    w = torch.randn(2, 3, 3, 3, device="cuda", requires_grad=True)
    out = ganx.functional.upsample_conv2d(x, w)
    assert out.shape == (0, 2, 8, 8)
    out.sum().backward()
    with pytest.raises(RuntimeError, match="upsample_conv2d: weight on device cpu is not on the expected device cuda:0 \\(the device of x\\)"):
        ganx.functional.upsample_conv2d(torch.randn(1, 3, 4, 4, device="cuda"), torch.randn(2, 3, 3, 3))


@pytest.mark.cuda
def test_cuda_large_batch_chunking():
    # more than 65535 / 4 images exercises the grid chunking of the forward
    x = torch.randn(16400, 1, 2, 2, device="cuda")
    w = torch.randn(2, 1, 3, 3, device="cuda")
    torch.testing.assert_close(ganx.functional.upsample_conv2d(x, w), reference.upsample_conv2d(x, w),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize("scale,k", [(3, 3), (4, 5), (2, 3)])
def test_cuda_nan_stays_in_receptive_field(scale, k):
    # phases with fewer taps than T (odd scales) must not read x through their zero padding taps
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, device="cuda")
    x[0, 0, 1, 2] = float("nan")
    w = torch.randn(2, 2, k, k, dtype=torch.float64, device="cuda", requires_grad=True)
    out = ganx.functional.upsample_conv2d(x, w, None, scale)
    go = torch.randn_like(out)
    (gw,) = torch.autograd.grad(out, w, go)
    wr = w.detach().clone().requires_grad_()
    ref = reference.upsample_conv2d(x, wr, None, scale)
    (gwr,) = torch.autograd.grad(ref, wr, go)
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(gw.isnan(), gwr.isnan())


# ----------------------------------------------------------------- the folded weight (reference)

@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 3, 5, 4, 7), (1, 8, 2, 6, 3)])
def test_deconv_weight_is_the_upsample_conv(shape):
    n, ci, co, h, w = shape
    x = torch.randn(n, ci, h, w, dtype=torch.float64)
    wt = torch.randn(co, ci, 3, 3, dtype=torch.float64)
    ref = nn.functional.conv2d(nn.functional.interpolate(x, scale_factor=2, mode="nearest"), wt, padding=1)
    got = nn.functional.conv_transpose2d(x, reference.deconv_weight(wt), stride=2, padding=1)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


def test_deconv_weight_rejects_other_kernels():
    with pytest.raises(ValueError, match="deconv_weight: only 3x3"):
        reference.deconv_weight(torch.randn(2, 2, 5, 5))
