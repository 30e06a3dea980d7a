"""Bad input everywhere (property-based, hypothesis).

Every public op and module, fed random shapes, dtypes, memory layouts, scales, paddings,
activations, targets and extreme values, either matches the pure-torch oracle
(ganx.ops.reference) or raises a clear error: RuntimeError / ValueError / TypeError whose message
starts with the op's name. Never a crash, a hang or a silently wrong result. That includes
forward-mode AD (torch.func.jvp against the oracle's, float64) and one argument on the meta device
(torch's "not on the expected device" error, never an uninitialised tensor). The CLI and config
files get the same treatment: a one-line error, exit status 2, no traceback.
"""
import math
import os
import subprocess
import sys

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import ganx.functional as gf  # noqa: E402
from ganx.nn import UpsampleConv2d  # noqa: E402
from tiny_run import MODEL, QUIET  # noqa: E402  (tests/tiny_run.py)
from ganx.ops import reference as ref  # noqa: E402
from ganx.ops.activations import ACTIVATIONS  # noqa: E402

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CLEAR = (RuntimeError, ValueError, TypeError)
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32]


def _clear_error(e: BaseException, *names: str) -> None:
    assert isinstance(e, CLEAR), f"unexpected {type(e).__name__}: {e}"
    msg = str(e).strip()
    event(f"rejected ({type(e).__name__}: {str(e)[:70]})")
    assert msg.startswith(names), f"error message does not start with the op name {names}: {msg[:300]!r}"


def _layout(t: torch.Tensor, how: str) -> torch.Tensor:
    """The same values in another memory layout."""
    if t.dim() != 4:
        return t
    if how == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if how == "strided":  # a non-contiguous view (every other column of a wider tensor)
        wide = torch.zeros(*t.shape[:3], t.shape[3] * 2, dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    if how == "transposed":  # H and W swapped twice: a permuted-stride view with the same values
        return t.transpose(2, 3).contiguous().transpose(2, 3)
    return t


@st.composite
def tensors(draw, shape, dtype, extreme=True):
    n = math.prod(shape)
    mag = draw(st.sampled_from([1.0, 1e-30, 1e6, 1e15] if extreme else [1.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    t = torch.randn(shape, generator=g, dtype=torch.float64) * mag
    if extreme and n and draw(st.booleans()):
        t.view(-1)[draw(st.integers(0, n - 1))] = float("nan")
    if dtype.is_floating_point:
        return t.to(dtype)
    return t.clamp(-100, 100).to(dtype)


def _pick(d, broken, name, valid, invalid):
    """A valid value, unless ``name`` is the one aspect this case breaks."""
    return d(st.sampled_from(invalid if broken == name else valid))


def _tol(dtype):
    return {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]


def _close(out, want, dtype, scale):
    """Same shape and dtype; equal to the fp64 oracle within the dtype's precision times the
    magnitude of the sums involved (NaN exactly where the oracle has NaN)."""
    event("compared with the reference")
    assert out.shape == want.shape, (out.shape, want.shape)
    assert out.dtype == dtype, (out.dtype, dtype)
    o, w = out.double(), want.double()
    assert torch.equal(o.isnan(), w.isnan()), "NaN pattern differs from the reference"
    inf = w.isinf()
    assert torch.equal(o[inf], w[inf]), "infinities differ from the reference"
    m = ~w.isnan() & ~inf
    err = (o[m] - w[m]).abs()
    bound = _tol(dtype) * (scale + w[m].abs())
    assert bool((err <= bound).all()), f"max error {float(err.max())} over the bound {float(bound.min())}"


def _meta_one(d, broken, args):
    """When ``broken`` is "device": one tensor argument moved to the meta device (the fake kernel runs,
    and must refuse the mix, not return an uninitialised CPU tensor)."""
    if broken != "device":
        return args
    idx = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    i = d(st.sampled_from(idx))
    return [a.to("meta") if j == i else a for j, a in enumerate(args)]


def _check_jvp(fn, fn_ref, primals, d):
    """Forward mode: torch.func.jvp through the op equals the reference's (float64, finite inputs)."""
    if not all(p.dtype == torch.float64 and bool(p.isfinite().all()) and (p.numel() == 0 or float(p.abs().max()) < 1e3)
               for p in primals):
        return
    event("forward-mode AD compared with the reference")
    g = torch.Generator().manual_seed(d(st.integers(0, 2**31 - 1)))
    tangents = tuple(torch.randn(p.shape, generator=g, dtype=p.dtype) for p in primals)
    out, t = torch.func.jvp(fn, primals, tangents)
    _, t_ref = torch.func.jvp(fn_ref, primals, tangents)
    torch.testing.assert_close(t, t_ref, rtol=1e-7, atol=1e-9, equal_nan=True)


# ---------------------------------------------------------------------------- upsample_conv2d
@FUZZ
@given(data=st.data())
def test_upsample_conv2d_fuzz(data):
    d = data.draw
    # Half the cases are valid; the others break one aspect (so each error path is reached alone).
    broken = d(st.sampled_from(["none"] * 6 + ["dtype", "wdtype", "k", "wshape", "scale", "padding", "act",
                                               "bias", "device"]))
    dtype = _pick(d, broken, "dtype", [torch.float32, torch.float64], [torch.float16, torch.bfloat16, torch.int32])
    wdtype = _pick(d, broken, "wdtype", [dtype], [t for t in DTYPES if t != dtype])
    n, cin, cout = d(st.integers(0, 3)), d(st.integers(1, 4)), d(st.integers(1, 4))
    # Small maps and >= 16x16 ones: the CPU kernel picks per-phase or stacked-phase GEMMs by size.
    h, w = d(st.sampled_from([1, 2, 3, 5, 6, 16, 17])), d(st.sampled_from([1, 2, 3, 5, 6, 16, 17]))
    k = _pick(d, broken, "k", [1, 3, 5], [2, 4])
    wshape = _pick(d, broken, "wshape", [(cout, cin, k, k)], [(cout, cin + 1, k, k), (cout, cin, k),
                                                               (cout, cin, k, k + 2)])
    scale = _pick(d, broken, "scale", [1, 2, 3, 4, 2.0], [0, 5, 2.5, True, "2"])
    padding = _pick(d, broken, "padding", [None, k // 2], [k // 2 + 1, -1, 2.0])
    act = _pick(d, broken, "act", [None] + list(ACTIVATIONS), ["no_such_act", "ReLU", 3])
    slope = d(st.sampled_from([0.01, 0.2, 0.0]))
    has_bias = _pick(d, broken, "bias", ["yes", "no"], ["wrong"])
    x = _layout(d(tensors((n, cin, h, w), dtype)), d(st.sampled_from(["contiguous", "channels_last", "strided",
                                                                       "transposed"])))
    weight = d(tensors(wshape, wdtype, extreme=False)) * 0.3
    bias = {"yes": torch.randn(cout, dtype=torch.float64).to(wdtype), "no": None,
            "wrong": torch.randn(cout + 1, dtype=torch.float64).to(wdtype)}[has_bias]
    x, weight, bias = _meta_one(d, broken, [x, weight, bias])
    try:
        out = gf.upsample_conv2d(x, weight, bias, scale, padding, act, slope)
    except Exception as e:  # noqa: BLE001
        _clear_error(e, "upsample_conv2d")
        return
    # It accepted the input: it must be a valid one, and the result must match the oracle.
    assert broken != "device", "accepted a mix of devices"
    assert dtype in (torch.float32, torch.float64) and wdtype == dtype, "accepted a dtype it does not support"
    assert has_bias != "wrong" and len(wshape) == 4 and wshape[1] == cin and wshape[2] == wshape[3]
    want = ref.upsample_conv2d(x.double(), weight.double(), None if bias is None else bias.double(), int(scale),
                               padding, None if act == "none" else act, slope)
    fan = cin * k * k
    xmax = float(x.double().nan_to_num(0).abs().max()) if x.numel() else 0.0
    _close(out, want, dtype, scale=fan * xmax * float(weight.double().abs().max()) + 1.0)
    assert out.is_contiguous(memory_format=torch.channels_last) or out.is_contiguous()
    ps = (x, weight) if bias is None else (x, weight, bias)
    _check_jvp(lambda x, w, b=None: gf.upsample_conv2d(x, w, b, scale, padding, act, slope),
               lambda x, w, b=None: ref.upsample_conv2d(x, w, b, int(scale), padding, None if act == "none" else act,
                                                        slope), ps, d)


# Found by the fuzzer: at scales 3 and 4 some phases have fewer taps than the others, and the
# zero padding taps must not read x (0 * NaN = NaN would leak into outputs whose receptive field
# does not contain the NaN). Forward and the weight gradient.
@pytest.mark.parametrize("scale,k", [(3, 3), (4, 3), (3, 5), (4, 5), (2, 3)])
def test_upsample_conv2d_nan_stays_in_receptive_field(scale, k):
    x = torch.randn(1, 1, 1, 2)
    x[..., 1] = float("nan")
    w = torch.randn(1, 1, k, k)
    want = ref.upsample_conv2d(x.double(), w.double(), None, scale)
    got = gf.upsample_conv2d(x, w, None, scale)
    assert torch.equal(got.isnan(), want.isnan())
    for big in (False, True):  # the per-phase and (for 16x16+ maps) the stacked CPU forms
        xb = torch.randn(1, 2, 16 if big else 3, 17 if big else 4, dtype=torch.float64)
        xb[0, 0, 1, 2] = float("nan")
        wb = torch.randn(2, 2, k, k, dtype=torch.float64, requires_grad=True)
        go = torch.randn(1, 2, xb.shape[2] * scale, xb.shape[3] * scale, dtype=torch.float64)
        got = gf.upsample_conv2d(xb, wb, None, scale)
        (gw,) = torch.autograd.grad(got, wb, go)
        wr = wb.detach().clone().requires_grad_()
        want = ref.upsample_conv2d(xb, wr, None, scale)
        (gwr,) = torch.autograd.grad(want, wr, go)
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(gw.isnan(), gwr.isnan())


# ---------------------------------------------------------------------------- conv_transpose2d_4s2
@FUZZ
@given(data=st.data())
def test_conv_transpose2d_4s2_fuzz(data):
    d = data.draw
    broken = d(st.sampled_from(["none"] * 4 + ["dtype", "wshape", "act", "bias", "device"]))
    dtype = _pick(d, broken, "dtype", [torch.float32, torch.float64], [torch.float16, torch.bfloat16, torch.int32])
    n, cin, cout = d(st.integers(0, 3)), d(st.integers(1, 4)), d(st.integers(1, 4))
    h, w = d(st.integers(1, 6)), d(st.integers(1, 6))
    wshape = _pick(d, broken, "wshape", [(cin, cout, 4, 4)], [(cin, cout, 3, 3), (cin + 1, cout, 4, 4), (cin, cout, 4)])
    act = _pick(d, broken, "act", [None] + [n for n in ACTIVATIONS if n != "none"], ["swish"])
    has_bias = _pick(d, broken, "bias", ["yes", "no"], ["wrong"])
    x = _layout(d(tensors((n, cin, h, w), dtype)), d(st.sampled_from(["contiguous", "channels_last", "strided"])))
    weight = d(tensors(wshape, dtype, extreme=False)) * 0.3
    bias = {"yes": torch.randn(cout, dtype=torch.float64).to(dtype), "no": None,
            "wrong": torch.randn(cout + 2, dtype=torch.float64).to(dtype)}[has_bias]
    x, weight, bias = _meta_one(d, broken, [x, weight, bias])
    try:
        out = gf.conv_transpose2d_4s2(x, weight, bias, act, 0.1)
    except Exception as e:  # noqa: BLE001
        _clear_error(e, "conv_transpose2d_4s2")
        return
    assert broken != "device", "accepted a mix of devices"
    assert dtype in (torch.float32, torch.float64), "accepted a dtype it does not support"
    assert has_bias != "wrong" and wshape == (cin, cout, 4, 4)
    want = ref.conv_transpose2d_4s2(x.double(), weight.double(), None if bias is None else bias.double(), act, 0.1)
    xmax = float(x.double().nan_to_num(0).abs().max()) if x.numel() else 0.0
    _close(out, want, dtype, scale=4 * cin * xmax * float(weight.double().abs().max()) + 1.0)
    ps = (x, weight) if bias is None else (x, weight, bias)
    _check_jvp(lambda x, w, b=None: gf.conv_transpose2d_4s2(x, w, b, act, 0.1),
               lambda x, w, b=None: ref.conv_transpose2d_4s2(x, w, b, act, 0.1), ps, d)


# ---------------------------------------------------------------------------- BCE losses
LOGIT_SHAPES = [(0,), (1,), (7,), (5, 1), (2, 1, 3, 3), ()]


@st.composite
def logits(draw, dtype):
    shape = draw(st.sampled_from(LOGIT_SHAPES))
    t = draw(tensors(shape, dtype if dtype.is_floating_point else torch.float64))
    if t.numel() and draw(st.booleans()):  # saturated logits: +-inf, +-1e30
        flat = t.view(-1)
        flat[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from([float("inf"), -float("inf"), 1e30, -1e30,
                                                                           80.0, -80.0]))
    if draw(st.booleans()) and t.dim() == 2:
        t = t.t()  # non-contiguous
    return t.to(dtype)


def _grads(fn, *ins):
    ins = [i.detach().requires_grad_(True) for i in ins]
    out = fn(*ins)
    loss = sum(o.sum() for o in out) if isinstance(out, tuple) else out.sum()
    return out, torch.autograd.grad(loss, ins, allow_unused=True)


@FUZZ
@given(data=st.data())
def test_bce_discriminator_loss_fuzz(data):
    d = data.draw
    dtype = d(st.sampled_from(DTYPES))
    real = d(logits(dtype))
    fake = d(logits(d(st.sampled_from([dtype, dtype, torch.float64]))))
    rt = d(st.sampled_from([1.0, 0.9, 0.0, 0.5, 1.5, -0.1, float("nan"), "1"]))
    ft = d(st.sampled_from([0.0, 0.1, 1.0, -1.0]))
    red = d(st.sampled_from(["mean", "sum", "none", "avg", None]))
    kw = dict(real_target=rt, fake_target=ft, reduction=red)
    grad = dtype in (torch.float32, torch.float64) and d(st.booleans())
    meta = d(st.sampled_from([None] * 6 + ["real", "fake"]))
    if meta is not None:
        real, fake = (t.to("meta") if name == meta else t for name, t in (("real", real), ("fake", fake)))
    try:
        if grad:
            out, g = _grads(lambda a, b: gf.bce_discriminator_loss(a, b, **kw), real, fake)
        else:
            out = gf.bce_discriminator_loss(real, fake, **kw)
        _, stats = gf.bce_discriminator_loss(real, fake, **kw, return_stats=True)
    except Exception as e:  # noqa: BLE001
        _clear_error(e, "bce_discriminator_loss")
        return
    assert isinstance(rt, float) and 0 <= rt <= 1 and 0 <= ft <= 1 and red in ("mean", "sum", "none")
    assert real.dtype == fake.dtype and dtype.is_floating_point
    assert meta is None, "accepted a mix of devices"
    kw64 = dict(kw)
    want_fn = lambda a, b: ref.bce_discriminator_loss(a, b, **kw64)  # noqa: E731
    if grad:
        want, gw = _grads(want_fn, real.double(), fake.double())
        for a, b in zip(g, gw):
            _close(a, b, dtype, scale=1.0)
    else:
        want = want_fn(real.double(), fake.double())
    outs = out if isinstance(out, tuple) else (out,)
    wants = want if isinstance(want, tuple) else (want,)
    n = max(1, real.numel() + fake.numel())
    for o, w in zip(outs, wants):
        _close(o, w, dtype, scale=n if red == "sum" else 1.0)
    want_stats = ref.discriminator_stats(real.double(), fake.double())
    for i, s in enumerate(stats):
        _close(s.float(), want_stats[i].float(), torch.float32, scale=1e-2 * 1e3)
    _check_jvp(lambda a, b: gf.bce_discriminator_loss(a, b, **kw), want_fn, (real, fake), d)


@FUZZ
@given(data=st.data())
def test_bce_generator_loss_fuzz(data):
    d = data.draw
    dtype = d(st.sampled_from(DTYPES))
    fake = d(logits(dtype))
    mode = d(st.sampled_from(["non_saturating", "minimax", "wasserstein", 1]))
    target = d(st.sampled_from([1.0, 0.9, 0.0, 2.0, -0.5]))
    red = d(st.sampled_from(["mean", "sum", "none", "max"]))
    grad = dtype in (torch.float32, torch.float64) and d(st.booleans())
    fn = lambda a: gf.bce_generator_loss(a, mode=mode, target=target, reduction=red)  # noqa: E731
    try:
        out, g = _grads(fn, fake) if grad else (fn(fake), None)
    except Exception as e:  # noqa: BLE001
        _clear_error(e, "bce_generator_loss")
        return
    assert mode in ("non_saturating", "minimax") and 0 <= target <= 1 and red in ("mean", "sum", "none")
    assert dtype.is_floating_point
    want_fn = lambda a: ref.bce_generator_loss(a, mode=mode, target=target, reduction=red)  # noqa: E731
    if grad:
        want, gw = _grads(want_fn, fake.double())
        _close(g[0], gw[0], dtype, scale=1.0)
    else:
        want = want_fn(fake.double())
    _close(out, want, dtype, scale=max(1, fake.numel()) if red == "sum" else 1.0)
    _check_jvp(fn, want_fn, (fake,), d)


@FUZZ
@given(data=st.data())
def test_critic_losses_fuzz(data):
    # hinge / Wasserstein D and G: the public functions' own checks name them, the op's (C++) name
    # critic_discriminator_loss / critic_generator_loss
    d = data.draw
    kind = d(st.sampled_from(["hinge", "wasserstein"]))
    dtype = d(st.sampled_from(DTYPES))
    real = d(logits(dtype))
    fake = d(logits(d(st.sampled_from([dtype, dtype, torch.float64]))))
    red = d(st.sampled_from(["mean", "sum", "none", "avg"]))
    grad = dtype in (torch.float32, torch.float64) and d(st.booleans())
    meta = d(st.sampled_from([None] * 6 + ["real", "fake"]))
    if meta is not None:
        real, fake = (t.to("meta") if name == meta else t for name, t in (("real", real), ("fake", fake)))
    fn_d = lambda a, b: getattr(gf, f"{kind}_discriminator_loss")(a, b, reduction=red)  # noqa: E731
    fn_g = lambda a: getattr(gf, f"{kind}_generator_loss")(a, reduction=red)  # noqa: E731
    try:
        out, g = _grads(fn_d, real, fake) if grad else (fn_d(real, fake), None)
        _, stats = getattr(gf, f"{kind}_discriminator_loss")(real, fake, reduction=red, return_stats=True)
        out_g = fn_g(fake)
    except Exception as e:  # noqa: BLE001
        _clear_error(e, f"{kind}_discriminator_loss", f"{kind}_generator_loss", "critic_discriminator_loss",
                     "critic_generator_loss")
        return
    assert red in ("mean", "sum", "none") and real.dtype == fake.dtype and dtype.is_floating_point
    assert meta is None, "accepted a mix of devices"
    want_d = lambda a, b: getattr(ref, f"{kind}_discriminator_loss")(a, b, reduction=red)  # noqa: E731
    want_g = lambda a: ref.critic_generator_loss(a, reduction=red)  # noqa: E731
    if grad:
        want, gw = _grads(want_d, real.double(), fake.double())
        for a, b in zip(g, gw):
            _close(a, b, dtype, scale=1.0)
    else:
        want = want_d(real.double(), fake.double())
    n = max(1, real.numel() + fake.numel())
    for o, w in zip(out if isinstance(out, tuple) else (out,), want if isinstance(want, tuple) else (want,)):
        _close(o, w, dtype, scale=n if red == "sum" else 1.0)
    _close(out_g, want_g(fake.double()), dtype, scale=max(1, fake.numel()) if red == "sum" else 1.0)
    want_stats = ref.critic_stats(real.double(), fake.double())
    for i, s in enumerate(stats[:2]):  # the accuracies (the mean scores: tests/test_critic_loss.py)
        _close(s.float(), want_stats[i].float(), torch.float32, scale=1e-2 * 1e3)
    _check_jvp(fn_d, want_d, (real, fake), d)


# ---------------------------------------------------------------------------- nn.UpsampleConv2d
@FUZZ
@given(data=st.data())
def test_upsample_conv2d_module_fuzz(data):
    d = data.draw
    broken = d(st.sampled_from(["none"] * 6 + ["cin", "cout", "k", "scale", "act", "dtype", "x"]))
    args = dict(in_channels=_pick(d, broken, "cin", [1, 3], [0, -2]),
                out_channels=_pick(d, broken, "cout", [1, 2], [0]),
                kernel_size=_pick(d, broken, "k", [1, 3, 5], [2]),
                scale_factor=_pick(d, broken, "scale", [1, 2, 3, 4], [0, 7]),
                bias=d(st.booleans()),
                activation=_pick(d, broken, "act", [None] + [n for n in ACTIVATIONS if n != "none"], ["elu"]))
    dtype = _pick(d, broken, "dtype", [torch.float32, torch.float64], [torch.float16])
    try:
        m = UpsampleConv2d(**args, dtype=dtype)
        cin = args["in_channels"] + (1 if broken == "x" else 0)
        x = _layout(d(tensors((d(st.integers(0, 2)), max(cin, 1), d(st.integers(1, 5)), d(st.integers(1, 5))),
                              dtype)), d(st.sampled_from(["contiguous", "channels_last", "strided"])))
        out = m(x)
    except Exception as e:  # noqa: BLE001
        _clear_error(e, "UpsampleConv2d", "upsample_conv2d")
        return
    assert args["in_channels"] >= 1 and args["out_channels"] >= 1 and args["kernel_size"] in (1, 3, 5)
    assert 1 <= args["scale_factor"] <= 4 and dtype != torch.float16 and cin == args["in_channels"]
    want = ref.upsample_conv2d(x.double(), m.weight.double(), None if m.bias is None else m.bias.double(),
                               args["scale_factor"], m.padding, args["activation"], m.negative_slope)
    xmax = float(x.double().nan_to_num(0).abs().max()) if x.numel() else 0.0
    _close(out.detach(), want.detach(), dtype,
           scale=cin * args["kernel_size"] ** 2 * xmax * float(m.weight.detach().abs().max()) + 1.0)


# ---------------------------------------------------------------------------- CLI and config files
# One step of the tiny model (tests/tiny_run.py); no batch size, so a config file's stays in force.
ONE_STEP = [*MODEL, *QUIET, "--steps", "1"]

BAD_CONFIGS = [
    ("yaml", "stepz: 3\n", "unknown config key"),
    ("yaml", "steps: many\n", "'steps': expected int"),
    ("yaml", "steps: 1.5\n", "'steps': expected int"),
    ("yaml", "lr_g: -1\n", "'lr_g': must be > 0"),
    ("yaml", "batch_size: 0\n", "'batch_size': must be >= 1"),
    ("yaml", "batch_size: 100000\n", "larger than the dataset"),
    ("yaml", "image_size: 17\n", "'image_size': must be one of"),
    ("yaml", "- a\n- b\n", "must hold a mapping"),
    ("yaml", "steps: [1, 2\n", "could not be parsed"),
    ("yaml", "device: tpu\n", "'device'"),
    ("toml", "steps = \"3\"\n", "'steps': expected int"),
    ("toml", "[section]\nsteps = 3\n", "unknown config key"),
    ("json", "{}", "use a .yaml"),
]


@pytest.mark.parametrize("ext,text,expect", BAD_CONFIGS, ids=[c[2][:20] + "-" + c[0] for c in BAD_CONFIGS])
def test_bad_config_files_in_process(tmp_path, capsys, ext, text, expect):
    """In-process (fast): the same code path as `ganx train --config`, without a process each."""
    from ganx.cli import main

    cfg = tmp_path / f"c.{ext}"
    cfg.write_text(text)
    # No other flags: they would override the file's (bad) keys. Every case fails before training.
    rc = main(["train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and "Traceback" not in err, err
    assert err.startswith("ganx train: error:")


BAD_FLAGS = [
    (["--steps", "abc"], "invalid int value"),
    (["--steps", "0"], "'steps': must be >= 1"),
    (["--batch-size", "-4"], "'batch_size': must be >= 1"),
    (["--image-size", "20"], "invalid choice"),
    (["--lr-d", "nan"], "'lr_d': must be > 0"),
    (["--beta1", "1.0"], "'beta1': must be in [0, 1)"),
    (["--threads", "-1"], "must be >= 0"),
    (["--device", "cuda:x"], "'device'"),
    (["--amp", "bf16"], "needs a CUDA device"),
    (["--no-such-flag"], "unrecognized arguments"),
    (["--resume", "auto"], "needs the run folder"),
]


@pytest.mark.parametrize("flags,expect", BAD_FLAGS, ids=[f[1][:24] for f in BAD_FLAGS])
def test_bad_cli_flags_in_process(tmp_path, capsys, flags, expect):
    from ganx.cli import main

    argv = ["train", *ONE_STEP, *flags] + ([] if "--resume" in flags else ["--out", str(tmp_path / "r")])
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors (usage + message)
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and expect in err and "Traceback" not in err, err


def test_bad_input_real_process(tmp_path):
    """One real process per kind of failure path (argparse, config, data, checkpoint)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    (tmp_path / "c.yaml").write_text("batch_size: 100000\n")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    for args, expect in ((["train", "--image-size", "20"], "invalid choice"),
                         (["train", "--config", tmp_path / "c.yaml", *ONE_STEP, "--out", tmp_path / "r"],
                          "larger than the dataset"),
                         (["train", "--resume", tmp_path / "junk.pt"], "junk.pt")):
        r = subprocess.run([sys.executable, "-m", "ganx", *map(str, args)], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr
