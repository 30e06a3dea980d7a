"""torch.compile(model, backend="ganx"): the fused ops put into Dynamo's graph, exact in float64."""
import importlib.metadata

import pytest
import torch
from torch import nn

import ganx  # noqa: F401
from ganx.convert import _compile
from test_convert_styles import CONVS, TOL, AliasG, BigGANStyleG, FunctionalStyles, InForwardUp

_compile.register()


def _compare(ref, model, compiled, *inputs):
    """compiled(model) against ref (a copy of model): outputs and every parameter gradient."""
    o, c = ref(*inputs), compiled(*inputs)
    torch.testing.assert_close(c, o, **TOL)
    g = torch.randn_like(o)
    gp = torch.autograd.grad(o, list(ref.parameters()), g, allow_unused=True)
    gc = torch.autograd.grad(c, list(model.parameters()), g, allow_unused=True)
    for a, b in zip(gc, gp):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, **TOL)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("make,inputs,n_fused", [
    (lambda: AliasG(), lambda: (torch.randn(2, 8),), 4),
    (lambda: BigGANStyleG(CONVS["parametrizations.spectral_norm"]), lambda: (torch.randn(2, 8),), 4),
    (lambda: BigGANStyleG(CONVS["power_iter_subclass"]), lambda: (torch.randn(2, 8),), 4),
    (lambda: InForwardUp(), lambda: (torch.randn(2, 3, 5, 5),), 1),
    (lambda: FunctionalStyles(), lambda: (torch.randn(2, 3, 3, 3),), 4),
])
@pytest.mark.parametrize("train", [True, False])
def test_backend_rewrites_and_is_exact(make, inputs, n_fused, train):
    torch.manual_seed(0)
    model = make().double().train(train)
    ref = make().double().train(train)
    ref.load_state_dict(model.state_dict())
    xs = tuple(x.double() for x in inputs())
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=_compile.make_backend("aot_eager"), fullgraph=True)
    _compare(ref, model, compiled, *xs)
    assert sum(line.startswith("fused") for line in _compile.LAST) == n_fused, _compile.LAST
    _compare(ref, model, compiled, *xs)   # a second call: power iterations / BatchNorm statistics moved the same way
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, **TOL)


def test_backend_name_with_inductor():
    torch.manual_seed(0)
    model = InForwardUp().eval()
    torch._dynamo.reset()
    out = torch.compile(model, backend="ganx", fullgraph=True)(x := torch.randn(2, 3, 5, 5))
    assert any(line.startswith("fused") for line in _compile.LAST)
    torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-4)


def test_entry_point_is_declared():
    text = open(__file__.rsplit("/tests/", 1)[0] + "/pyproject.toml").read()
    assert '[project.entry-points.torch_dynamo_backends]\nganx = "ganx.convert._compile:ganx_backend"' in text
    eps = importlib.metadata.entry_points(group="torch_dynamo_backends")
    if not any(e.name == "ganx" for e in eps):
        pytest.skip("this install's metadata predates the entry point (reinstall ganx)")
    assert next(e for e in eps if e.name == "ganx").load() is _compile.ganx_backend


def test_make_backend_rejects_unknown_inner():
    with pytest.raises(ValueError, match="ganx backend: inner"):
        _compile.make_backend("tvm")


class _UpConvAct(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.conv(torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")))


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fn,act", [
    (torch.nn.functional.silu, "silu"),
    (lambda y: torch.nn.functional.gelu(y, approximate="tanh"), "gelu"),
    (torch.nn.functional.gelu, None),  # the erf form stays after the fused layer
    (lambda y: torch.nn.functional.leaky_relu(y, 0.2), "leaky_relu"),
])
def test_backend_joins_table_activations(fn, act):
    torch.manual_seed(0)
    model = _UpConvAct(fn).double()
    ref = _UpConvAct(fn).double()
    ref.load_state_dict(model.state_dict())
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=_compile.make_backend("aot_eager"), fullgraph=True)
    _compare(ref, model, compiled, torch.randn(2, 3, 4, 4, dtype=torch.float64))
    fused = [line for line in _compile.LAST if line.startswith("fused")]
    assert len(fused) == 1, _compile.LAST
    assert (act is not None and act in fused[0]) or (act is None and not any(
        n in fused[0] for n in ("silu", "gelu"))), fused
