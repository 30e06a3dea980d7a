"""conv_transpose2d_4s2 (ConvTranspose2d(4, 2, 1) on the phase kernels) against torch."""
import pytest
import torch
from torch import nn

import ganx
from ganx.ops import reference
from ganx.ops.activations import ACTIVATION_TABLE

# every activation of the table (csrc/activation.h)
ACTS = [(None if n == "none" else n, 0.2 if a.takes_slope else 0.01) for n, a in ACTIVATION_TABLE.items()]


def _inputs(n, ci, co, h, w, dtype=torch.float64, device="cpu", bias=True):
    x = torch.randn(n, ci, h, w, dtype=dtype, device=device)
    wt = torch.randn(ci, co, 4, 4, dtype=dtype, device=device) / (ci * 4) ** 0.5
    b = torch.randn(co, dtype=dtype, device=device) if bias else None
    return x, wt, b


def _check(x, w, b, act, slope, atol, rtol=0.0):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    ref_leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    out = ganx.functional.conv_transpose2d_4s2(*leaves, activation=act, negative_slope=slope)
    ref = reference.conv_transpose2d_4s2(*ref_leaves, activation=act, negative_slope=slope)
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    go = torch.randn_like(ref)
    out.backward(go)
    ref.backward(go)
    for a, r in zip(leaves, ref_leaves):
        if r is not None:
            torch.testing.assert_close(a.grad, r.grad, atol=atol, rtol=rtol)
    return out


@pytest.mark.parametrize("act,slope", ACTS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 6), (1, 1, 1, 1, 1), (3, 7, 2, 3, 9), (2, 3, 4, 9, 8), (1, 2, 3, 16, 17)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_fp64(act, slope, shape, bias):
    x, w, b = _inputs(*shape, bias=bias)
    _check(x, w, b, act, slope, atol=1e-10)


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last", "sliced"])
def test_formats_float32(fmt):
    x, w, b = _inputs(2, 8, 4, 5, 5, dtype=torch.float32)
    if fmt == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif fmt == "sliced":
        x = torch.randn(2, 16, 7, 7)[:, ::2, 1:6, 2:7]
    out = _check(x, w, b, "relu", 0.0, atol=2e-5, rtol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last if fmt == "channels_last" else torch.contiguous_format)


@pytest.mark.parametrize("act", ["tanh"] + [n for n, a in ACTIVATION_TABLE.items() if a.ref == "x"])
def test_gradcheck_and_opcheck(act):
    x, w, b = _inputs(2, 2, 3, 3, 2)
    args = [t.requires_grad_() for t in (x, w, b)]
    fn = lambda x, w, b: ganx.functional.conv_transpose2d_4s2(x, w, b, act)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)
    xf, wf, bf = (t.detach().float() for t in (x, w, b))
    torch.library.opcheck(torch.ops.ganx.conv_transpose2d_4s2.default, (xf, wf, bf, "none", 0.0))
    torch.library.opcheck(torch.ops.ganx.conv_transpose2d_4s2.default,
                          (xf.requires_grad_(), wf.requires_grad_(), None, "leaky_relu", 0.2))
    torch.library.opcheck(torch.ops.ganx.conv_transpose2d_4s2.default,
                          (xf.detach().requires_grad_(), wf.detach().requires_grad_(), bf, act, 0.01))


def test_module_matches_and_loads_convtranspose_state_dict():
    torch.manual_seed(5)
    ct = nn.ConvTranspose2d(6, 4, 4, 2, 1)
    torch.manual_seed(5)
    m = ganx.nn.FusedConvTranspose2d(6, 4)
    torch.testing.assert_close(m.weight, ct.weight, atol=0, rtol=0)
    torch.testing.assert_close(m.bias, ct.bias, atol=0, rtol=0)
    m2 = ganx.nn.FusedConvTranspose2d(6, 4, activation="relu")
    m2.load_state_dict(ct.state_dict())
    x = torch.randn(3, 6, 4, 4)
    torch.testing.assert_close(m2(x), torch.relu(ct(x)), atol=1e-5, rtol=1e-5)
    assert set(m2.state_dict()) == set(ct.state_dict())


def test_compile_fullgraph():
    m = ganx.nn.FusedConvTranspose2d(3, 2, activation="tanh")
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    out = torch.compile(m, fullgraph=True, backend="aot_eager")(x)
    torch.testing.assert_close(out, m(x))
    out.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("over,exc,match", [
    (dict(weight=torch.randn(3, 5, 3, 3)), ValueError, r"conv_transpose2d_4s2: weight must have a 4x4 kernel, got 3x3"),
    (dict(weight=torch.randn(4, 5, 4, 4)), RuntimeError, r"conv_transpose2d_4s2: weight has 4 input channels \(dim 0\) but x has 3"),
    (dict(weight=torch.randn(3, 5, 4)), RuntimeError, r"conv_transpose2d_4s2: weight must be 4-D \(C_in, C_out, 4, 4\)"),
    (dict(bias=torch.randn(3)), RuntimeError, r"conv_transpose2d_4s2: bias must be 1-D of size C_out=5"),
    (dict(x=torch.randn(3, 4, 4)), RuntimeError, r"conv_transpose2d_4s2: x must be 4-D"),
    (dict(activation="selu"), ValueError, r"conv_transpose2d_4s2: activation must be one of"),
])
def test_errors(over, exc, match):
    args = dict(x=torch.randn(2, 3, 4, 4), weight=torch.randn(3, 5, 4, 4), bias=torch.randn(5))
    args.update(over)
    with pytest.raises(exc, match=match):
        ganx.functional.conv_transpose2d_4s2(**args)


@pytest.mark.cuda
@pytest.mark.parametrize("act,slope", ACTS)
def test_cuda_matches_torch(act, slope, no_tf32):
    x, w, b = _inputs(3, 9, 5, 7, 6, device="cuda")
    out = _check(x, w, b, act, slope, atol=1e-10)
    cpu = ganx.functional.conv_transpose2d_4s2(x.cpu(), w.cpu(), b.cpu(), act, slope)
    torch.testing.assert_close(out.detach().cpu(), cpu, atol=1e-10, rtol=0)
    xh = x.float().contiguous(memory_format=torch.channels_last)
    _check(xh, w.float(), b.float(), act, slope, atol=1e-4, rtol=1e-4)
