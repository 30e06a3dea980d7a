"""The upsample-conv composition (vendor conv + ganx glue kernels): every algorithm against the
reference, the algorithm choice (rule / timed / forced), autocast, exact folds (TF32, overflow,
inf taps), fake-kernel strides over layouts, no host synchronisation, CUDA graph capture."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch._prims_common import suggest_memory_format

import ganx
import ganx.functional as GF
from ganx.ops import reference as R
from ganx.ops import upsample_conv as U
from ganx.ops.activations import ACTIVATION_TABLE, ACTIVATIONS

# every activation of the table (csrc/activation.h)
ACTS = [(n, 0.2 if a.takes_slope else 0.01) for n, a in ACTIVATION_TABLE.items()]
GEOMS = [(2, 3), (1, 3), (3, 3), (2, 5), (4, 5), (2, 1)]


def _run(fn, x, w, b, go, **kw):
    leaves = [t.detach().clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    out = fn(*leaves, **kw)
    grads = torch.autograd.grad(out, [t for t in leaves if t is not None], go)
    return out.detach(), grads


# every test with the algorithm choice left to ganx's rule (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("auto_upconv_algorithm")


# ----------------------------------------------------------------- algorithms

@pytest.mark.parametrize("algo", U.UPCONV_ALGORITHMS)
@pytest.mark.parametrize("scale,k", GEOMS)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_every_algorithm_matches_reference_fp64(algo, scale, k, fmt):
    x = torch.randn(2, 5, 6, 7, dtype=torch.float64).contiguous(memory_format=fmt)
    w = torch.randn(4, 5, k, k, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    stacked_ok = all(t == max(taps) for taps in [_taps(scale, k)] for t in taps)
    ok = {"deconv": (scale, k) == (2, 3), "stacked": stacked_ok, "split": True, "replicate": k == 1}[algo]
    for act, slope in ACTS:
        kw = dict(scale_factor=scale, activation=act, negative_slope=slope)
        ref = R.upsample_conv2d(x, w, b, **kw)
        go = torch.randn_like(ref)
        with U.upconv_algorithm(algo):
            if not ok:
                with pytest.raises(ValueError, match=f"forced algorithm '{algo}'.*not available"):
                    GF.upsample_conv2d(x, w, b, **kw)
                return
            out, g = _run(GF.upsample_conv2d, x, w, b, go, **kw)
        rout, rg = _run(R.upsample_conv2d, x, w, b, go, **kw)
        torch.testing.assert_close(out, rout, atol=1e-10, rtol=0)
        assert out.is_contiguous(memory_format=suggest_memory_format(x))
        for a, r in zip(g, rg):
            torch.testing.assert_close(a, r, atol=1e-9, rtol=0)


def _taps(scale, k):
    p = k // 2
    return [(a + k - 1 - p) // scale - (a - p) // scale + 1 for a in range(scale)]


@pytest.mark.parametrize("algo", U.UPCONV_ALGORITHMS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_every_algorithm(algo, bias):
    x = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    w = torch.randn(4, 3, 4, 4, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64) if bias else None
    if algo == "replicate":  # 1x1 kernels of upsample_conv2d only
        with U.upconv_algorithm(algo), pytest.raises(ValueError, match="conv_transpose2d_4s2: the forced algorithm "
                                                                        "'replicate'.*not available"):
            GF.conv_transpose2d_4s2(x, w, b)
        return
    for act, slope in ACTS:
        ref = R.conv_transpose2d_4s2(x, w, b, act, slope)
        go = torch.randn_like(ref)
        with U.upconv_algorithm(algo):
            out, g = _run(GF.conv_transpose2d_4s2, x, w, b, go, activation=act, negative_slope=slope)
        rout, rg = _run(R.conv_transpose2d_4s2, x, w, b, go, activation=act, negative_slope=slope)
        torch.testing.assert_close(out, rout, atol=1e-10, rtol=0)
        for a, r in zip(g, rg):
            torch.testing.assert_close(a, r, atol=1e-9, rtol=0)


def test_static_rule_is_recorded():
    # The CPU rule (csrc/upsample_conv2d.cpp, rule()): at scale 2 deconv from 4x4 maps on, except
    # the forward to fewer than 16 channels (stacked); stacked from 16x16 where deconv does not
    # apply; split below.
    ganx._C.clear_upconv_algorithm_choices()
    for hw, scale, c_out, want_fwd, want_bwd in [(2, 2, 16, "split", "split"), (4, 2, 4, "stacked", "deconv"),
                                                 (4, 2, 16, "deconv", "deconv"), (8, 2, 16, "deconv", "deconv"),
                                                 (16, 1, 4, "stacked", "stacked"), (16, 3, 4, "split", "split")]:
        x = torch.randn(1, 3, hw, hw, requires_grad=True)
        GF.upsample_conv2d(x, torch.randn(c_out, 3, 3, 3), None, scale).sum().backward()
        for direction, want in (("forward", want_fwd), ("backward", want_bwd)):
            hits = [c for c in U.upconv_algorithm_choices()
                    if f"{direction} x[1, 3, {hw}, {hw}] c_out={c_out} s={scale} " in c["key"]]
            assert hits and hits[0]["algorithm"] == want and hits[0]["source"] == "rule", (hw, scale, c_out, hits)


def test_cudnn_benchmark_times_the_candidates_once():
    ganx._C.clear_upconv_algorithm_choices()
    x, w, b = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(4, 3, 3, 3, dtype=torch.float64), None
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        out = GF.upsample_conv2d(x, w, b)
        out2 = GF.upsample_conv2d(x, w, b)
    finally:
        torch.backends.cudnn.benchmark = old
    torch.testing.assert_close(out, R.upsample_conv2d(x, w, b), atol=1e-10, rtol=0)
    torch.testing.assert_close(out2, out, atol=0, rtol=0)
    timed = [c for c in U.upconv_algorithm_choices() if c["source"] == "timed"]
    assert len(timed) == 1 and timed[0]["algorithm"] in U.UPCONV_ALGORITHMS, timed


class _SimulatedCapture:
    """The CPU kernels behave as while a CUDA graph is captured (ganx._C._simulate_cpu_graph_capture)."""

    def __enter__(self):
        ganx._C._simulate_cpu_graph_capture(True)

    def __exit__(self, *exc):
        ganx._C._simulate_cpu_graph_capture(False)


def _algorithms_run(fn):
    """The forms fn's upsample-convs ran, from the ATen ops they issued (one call each way)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
        fn()
    names = [e.name for e in p.events()]
    return names.count("aten::conv_transpose2d"), names.count("aten::conv2d"), names.count("aten::convolution_backward")


@pytest.fixture
def _benchmark_on():
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    yield
    torch.backends.cudnn.benchmark = old


@pytest.mark.parametrize("cached", [True, False])
def test_capture_runs_the_cached_choice_and_records_nothing(cached, _benchmark_on):
    # While a CUDA graph is captured the choice must be what eager runs (the timed entry when
    # there is one, else the rule), with nothing timed (timing syncs the stream) and nothing
    # written: the cache used to be overwritten with the rule, so the graph ran another
    # algorithm than eager and the next eager call timed again.
    ganx._C.clear_upconv_algorithm_choices()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)

    def step():
        GF.upsample_conv2d(x, w, None, activation="relu").sum().backward()

    if cached:
        step()  # times the candidates, each way
        eager_ops = _algorithms_run(step)  # the cached choices, nothing timed
    before = U.upconv_algorithm_choices()
    assert [c["source"] for c in before] == (["timed", "timed"] if cached else [])
    with _SimulatedCapture():
        captured_ops = _algorithms_run(step)
    assert U.upconv_algorithm_choices() == before
    if cached:
        assert captured_ops == eager_ops, (captured_ops, eager_ops, before)
    else:
        # the rule (forward stacked: 1 conv2d, backward deconv: 1 convolution_backward), run once
        assert captured_ops == (0, 1, 1), captured_ops


def test_deterministic_mode_takes_the_rule(_benchmark_on):
    # A timed choice may differ from run to run: under use_deterministic_algorithms(True) the
    # rule, even with cudnn.benchmark on and a timed entry cached.
    ganx._C.clear_upconv_algorithm_choices()
    x, w = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3)
    GF.upsample_conv2d(x, w)
    assert [c["source"] for c in U.upconv_algorithm_choices()] == ["timed"]
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        ops = _algorithms_run(lambda: GF.upsample_conv2d(x, w))
        ganx._C.clear_upconv_algorithm_choices()
        GF.upsample_conv2d(x, w)
    finally:
        torch.use_deterministic_algorithms(old)
    assert ops == (0, 1, 0), ops  # the CPU rule's stacked form (8x8 maps, 4 channels), once
    assert [(c["algorithm"], c["source"]) for c in U.upconv_algorithm_choices()] == [("stacked", "rule")]


@pytest.mark.parametrize("algo, want_fills", [("deconv", 0), ("stacked", 1), ("split", 2)])
def test_backward_fills_only_what_it_does_not_write(algo, want_fills):
    # gx, gw and gb are written in full by the composition: they used to be zero-filled first
    # (three wasted kernels per layer on a GPU). Only the stacked form's unused border of the
    # phase-map gradient and the split form's accumulated gx / padding taps of gw need zeros.
    x, w, b = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4)
    out, grad = torch.randn(2, 4, 16, 16).relu(), torch.randn(2, 4, 16, 16)
    with U.upconv_algorithm(algo), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
        gx, gw, gb = torch.ops.ganx.upsample_conv2d_backward(grad, x, w, out, True, 2, 1, "relu", 0.0,
                                                             [True, True, True])
    names = [e.name for e in p.events()]
    assert names.count("aten::zero_") == want_fills, names
    assert "aten::to" not in names and "aten::_to_copy" not in names, names
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape


def test_forced_algorithm_errors_and_is_recorded():
    with pytest.raises(ValueError, match="algorithm must be one of 'auto', 'deconv', 'stacked', 'split', 'replicate', "
                                         "got 'fast'"):
        U.set_upconv_algorithm("fast")
    with U.upconv_algorithm("split"):
        assert U.get_upconv_algorithm() == "split"
        GF.upsample_conv2d(torch.randn(1, 2, 9, 9), torch.randn(3, 2, 3, 3))
    assert U.get_upconv_algorithm() is None
    assert any(c["source"] == "forced" and c["algorithm"] == "split" and "x[1, 2, 9, 9]" in c["key"]
               for c in U.upconv_algorithm_choices())


def test_env_var_forces_and_bad_value_is_an_error():
    code = ("import torch, ganx, ganx.functional as GF; from ganx.ops import upsample_conv as U;"
            "GF.upsample_conv2d(torch.randn(1, 2, 16, 16), torch.randn(3, 2, 3, 3));"
            "print(U.get_upconv_algorithm(), U.upconv_algorithm_choices()[0]['algorithm'])")
    env = dict(os.environ, GANX_UPCONV_ALGO="stacked")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["stacked", "stacked"]
    env["GANX_UPCONV_ALGO"] = "quick"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "GANX_UPCONV_ALGO: algorithm must be one of" in r.stderr


# ----------------------------------------------------------------- activation table

def test_activation_table_is_the_cpp_table():
    assert ACTIVATIONS == tuple(name for name, _, _, _ in ganx._C.activations())
    assert ACTIVATIONS[:6] == ("none", "relu", "leaky_relu", "tanh", "silu", "gelu")
    assert [a.enum for a in ACTIVATION_TABLE.values()] == list(range(len(ACTIVATIONS)))
    assert [n for n, a in ACTIVATION_TABLE.items() if a.takes_slope] == ["leaky_relu"]
    # what the backward reads: the output, or the pre-activation (silu, gelu)
    known = {"none": "y", "relu": "y", "leaky_relu": "y", "tanh": "y", "silu": "x", "gelu": "x"}
    assert {n: ACTIVATION_TABLE[n].ref for n in known} == known
    assert all(a.ref in ("x", "y") for a in ACTIVATION_TABLE.values())
    y = torch.randn(100, dtype=torch.float64)
    for name, a in ACTIVATION_TABLE.items():
        torch.testing.assert_close(a.reference(y, 0.3), R.apply_activation(y, name, 0.3))
        if a.ref == "x":  # the derivative the forward-mode rule uses is the reference's
            yd = y.clone().requires_grad_()
            (g,) = torch.autograd.grad(a.reference(yd, 0.3).sum(), yd)
            torch.testing.assert_close(a.derivative(y, 0.3), g, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ACTIVATION_TABLE["gelu"].reference(y, 0.0), F.gelu(y, approximate="tanh"))
    cpp = ", ".join(repr(n) for n in ACTIVATIONS)
    with pytest.raises(ValueError, match=f"activation must be one of {cpp}, got 'no_such_act'"):
        torch.ops.ganx.upsample_conv2d(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 3, 3), None, 2, 1, "no_such_act", 0.0)
    py = ", ".join(["None"] + [repr(n) for n in ACTIVATIONS if n != "none"])
    with pytest.raises(ValueError, match=f"activation must be one of {py}, got 'no_such_act'"):
        GF.upsample_conv2d(torch.randn(1, 1, 2, 2), torch.randn(1, 1, 3, 3), activation="no_such_act")
    with pytest.raises(ValueError, match=f"UpsampleConv2d: activation must be one of {py}, got 'elu'"):
        ganx.nn.UpsampleConv2d(1, 1, activation="elu")


@pytest.mark.parametrize("act", [n for n in ACTIVATIONS if n != "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_activation_op_is_the_kernels_act_forward(act, dtype):
    # ganx::activation (the autograd's forward for "x"-ref activations) against the reference,
    # NCHW and channels_last, and its fake kernel's layout
    z = torch.randn(2, 3, 5, 4, dtype=dtype) * 4
    for t in (z, z.contiguous(memory_format=torch.channels_last)):
        out = torch.ops.ganx.activation(t, act, 0.2)
        tol = dict(atol=1e-6, rtol=1e-6) if dtype == torch.float32 else dict(atol=1e-14, rtol=1e-14)
        torch.testing.assert_close(out, ACTIVATION_TABLE[act].reference(t, 0.2), **tol)
        assert out.stride() == t.stride()
    torch.library.opcheck(torch.ops.ganx.activation.default, (z, act, 0.2),
                          test_utils=("test_schema", "test_faketensor"))


# ----------------------------------------------------------------- autocast

def test_cpu_autocast_runs_in_float32_forward_backward_and_raw_op():
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    want = R.upsample_conv2d(x.detach(), w.detach(), b.detach(), activation="tanh")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = GF.upsample_conv2d(x, w, b, activation="tanh")
        raw = torch.ops.ganx.upsample_conv2d(x.bfloat16(), w.bfloat16(), b.bfloat16(), 2, 1, "tanh", 0.0)
        out.sum().backward()  # backward inside the autocast block
        ct = GF.conv_transpose2d_4s2(torch.randn(1, 3, 4, 4), torch.randn(3, 2, 4, 4), None)
    assert out.dtype == torch.float32 and raw.dtype == torch.float32 and ct.dtype == torch.float32
    torch.testing.assert_close(out.detach(), want, atol=1e-5, rtol=1e-5)
    assert x.grad.dtype == w.grad.dtype == torch.float32
    xd = x.detach().double().requires_grad_()
    R.upsample_conv2d(xd, w.detach().double(), b.detach().double(), activation="tanh").sum().backward()
    torch.testing.assert_close(x.grad.double(), xd.grad, atol=1e-4, rtol=1e-4)


def test_cpu_autocast_keeps_float64():
    x, w = torch.randn(1, 2, 4, 4, dtype=torch.float64), torch.randn(2, 2, 3, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert GF.upsample_conv2d(x, w).dtype == torch.float64


def test_cpu_autocast_bce_runs_in_float32():
    logits = torch.randn(64).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grad = torch.ops.ganx.bce_with_logits(logits, torch.rand(64).bfloat16(), None, None, 1, True)
        gl, gg = torch.ops.ganx.bce_generator_loss(logits, 0, 1.0, 1, True)
        dl, dg, stats = torch.ops.ganx.bce_discriminator_loss(logits, logits, 1.0, 0.0, 1, True)
    assert loss.dtype == gl.dtype == dl.dtype == torch.float32
    assert grad.dtype == gg.dtype == dg.dtype == torch.float32
    torch.testing.assert_close(gl, F.softplus(-logits.float()).mean())


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_autocast_every_op(dtype):
    x = torch.randn(2, 8, 6, 6, device="cuda", requires_grad=True)
    w = torch.randn(4, 8, 3, 3, device="cuda", requires_grad=True)
    w4 = torch.randn(8, 4, 4, 4, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=dtype):
        out = torch.ops.ganx.upsample_conv2d(x, w, None, 2, 1, "relu", 0.0)
        ct = GF.conv_transpose2d_4s2(x, w4, None, "tanh")
        (out.float().sum() + ct.float().sum()).backward()
        loss, _ = torch.ops.ganx.bce_generator_loss(out.flatten(), 0, 1.0, 1, True)
    assert out.dtype == ct.dtype == dtype and loss.dtype == torch.float32
    assert x.grad.dtype == w.grad.dtype == torch.float32


# ----------------------------------------------------------------- exact folds

def _impulse_taps(w, scale, algo):
    """Output of the layer for a single 1 in x: each output pixel is one folded tap (exact)."""
    x = torch.zeros(1, w.shape[1], 5, 5, dtype=w.dtype)
    x[0, 0, 2, 2] = 1
    with U.upconv_algorithm(algo):
        return GF.upsample_conv2d(x, w, None, scale)


@pytest.mark.parametrize("algo,scale", [("deconv", 2), ("stacked", 2), ("split", 2), ("split", 3)])
def test_fold_is_exact_under_reduced_matmul_precision(algo, scale):
    w = torch.randn(3, 1, 3, 3) * 1.2345
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        got = _impulse_taps(w, scale, algo)
    finally:
        torch.set_float32_matmul_precision(old)
    want = R.upsample_conv2d(torch.zeros_like(got[:, :1, :5, :5]).double().index_put_(
        (torch.tensor([0]), torch.tensor([0]), torch.tensor([2]), torch.tensor([2])), torch.tensor([1.0],
                                                                                                 dtype=torch.float64)),
        w.double(), None, scale)
    # the fold's sums are made in float64 and rounded once: the correctly rounded float32 taps
    assert torch.equal(got, want.float())


@pytest.mark.parametrize("algo", ["deconv", "stacked", "split"])
def test_fold_exact_range(algo):
    # The documented exact range: a folded tap sums at most 4 taps (s = 2, k = 3), in float64,
    # so |w| <= float32 max / 4 never overflows where the unfused layer does not.
    A = torch.finfo(torch.float32).max / 4
    w = torch.full((2, 1, 3, 3), A)
    w[1] = -A
    x = torch.rand(1, 1, 7, 7) * 0.1
    ref = R.upsample_conv2d(x.double(), w.double(), None)
    with U.upconv_algorithm(algo):
        out = GF.upsample_conv2d(x, w, None)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, atol=0, rtol=1e-5)


@pytest.mark.parametrize("algo", ["deconv", "stacked", "split"])
def test_inf_tap_reaches_only_its_receptive_field(algo):
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    w[1, 0, 0, 2] = float("inf")
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64) + 0.5  # positive: no 0 * inf inside the map
    ref = R.upsample_conv2d(x, w, None)
    with U.upconv_algorithm(algo):
        out = GF.upsample_conv2d(x, w, None)
    finite = torch.isfinite(ref)
    torch.testing.assert_close(out[finite], ref[finite], atol=1e-10, rtol=0)
    inf = torch.isinf(ref)
    assert torch.equal(out[inf], ref[inf])
    assert torch.isfinite(out[0, 0]).all()  # the other output channel never sees the inf tap


# ----------------------------------------------------------------- fake kernels: strides

def _layouts():
    base = torch.randn(2, 3, 5, 6)
    return {
        "contiguous": base,
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "cl_sliced": torch.randn(2, 8, 11, 6).contiguous(memory_format=torch.channels_last)[:, :3, ::2, :],
        "cl_1111": torch.randn(1, 1, 1, 1).contiguous(memory_format=torch.channels_last),
        "cl_nc11": torch.randn(2, 3, 1, 1).contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(2, 3),
        "permuted": torch.randn(5, 6, 2, 3).permute(2, 3, 0, 1),
        "sliced": torch.randn(2, 6, 7, 9)[:, ::2, 1:6, 2:8],
    }


@pytest.mark.parametrize("layout", list(_layouts()))
@pytest.mark.parametrize("op", ["upsample_conv2d", "conv_transpose2d_4s2"])
def test_fake_strides_match_real(fake_strides_match, layout, op):
    x = _layouts()[layout]
    c = x.shape[1]
    if op == "upsample_conv2d":
        w = torch.randn(4, c, 3, 3).contiguous(memory_format=torch.channels_last)
        fwd = lambda x_, w_: torch.ops.ganx.upsample_conv2d(x_, w_, None, 2, 1, "relu", 0.0)  # noqa: E731
        bwd = lambda g_, x_, w_, o_: torch.ops.ganx.upsample_conv2d_backward(  # noqa: E731
            g_, x_, w_, o_, False, 2, 1, "relu", 0.0, [True, True, False])
    else:
        w = torch.randn(c, 4, 4, 4).contiguous(memory_format=torch.channels_last)
        fwd = lambda x_, w_: torch.ops.ganx.conv_transpose2d_4s2(x_, w_, None, "relu", 0.0)  # noqa: E731
        bwd = lambda g_, x_, w_, o_: torch.ops.ganx.conv_transpose2d_4s2_backward(  # noqa: E731
            g_, x_, w_, o_, False, "relu", 0.0, [True, True, False])
    fake_strides_match(fwd, bwd, x, w, layout)


@pytest.mark.parametrize("layout", ["channels_last", "cl_sliced", "cl_1111", "permuted"])
def test_opcheck_over_layouts(layout):
    x = _layouts()[layout].double()
    w = torch.randn(2, x.shape[1], 3, 3, dtype=torch.float64)
    torch.library.opcheck(torch.ops.ganx.upsample_conv2d.default, (x, w, None, 2, 1, "tanh", 0.0))
    w4 = torch.randn(x.shape[1], 2, 4, 4, dtype=torch.float64)
    torch.library.opcheck(torch.ops.ganx.conv_transpose2d_4s2.default, (x, w4, None, "none", 0.0))


def test_compile_across_layouts():
    for layout in ("channels_last", "cl_sliced", "transposed"):
        x = _layouts()[layout]
        w = torch.randn(4, x.shape[1], 3, 3)
        fn = torch.compile(lambda x_, w_: GF.upsample_conv2d(x_, w_, None, 2, activation="relu") * 2,
                           fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(fn(x, w), GF.upsample_conv2d(x, w, None, 2, activation="relu") * 2)


# ----------------------------------------------------------------- no synchronisation

def test_fold_path_has_no_host_copies_or_einsum():
    # The fold used to be a CPU-built 0/1 matrix copied with .to(device) and an einsum (which
    # autocast and TF32 round). Now: the glue kernels only; the profiler sees every ATen op the
    # composition issues on the CPU, which are the ones it issues on CUDA.
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    w1 = torch.randn(4, 3, 1, 1, requires_grad=True)
    names = set()
    for algo in U.UPCONV_ALGORITHMS:
        with U.upconv_algorithm(algo), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as p:
            GF.upsample_conv2d(x, w1 if algo == "replicate" else w, None, activation="tanh").sum().backward()
        names |= {e.name for e in p.events()}
    bad = {n for n in names if n in ("aten::einsum", "aten::bmm", "aten::_local_scalar_dense", "aten::item",
                                     "aten::lift_fresh", "aten::tensor", "aten::_to_copy", "aten::pin_memory")}
    assert not bad, bad


@pytest.mark.cuda
@pytest.mark.parametrize("algo", U.UPCONV_ALGORITHMS)
def test_cuda_no_sync(algo):
    x = torch.randn(2, 3, 8, 8, device="cuda", requires_grad=True)
    w = torch.randn(4, 3, 3, 3, device="cuda", requires_grad=True)
    if algo == "replicate":  # 1x1 kernels only
        w = torch.randn(4, 3, 1, 1, device="cuda", requires_grad=True)
    b = torch.randn(4, device="cuda", requires_grad=True)
    w4 = torch.randn(3, 4, 4, 4, device="cuda", requires_grad=True)
    GF.upsample_conv2d(x, w, b).sum().backward()  # warm-up (cuDNN handles, allocator)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with U.upconv_algorithm(algo):
            y = GF.upsample_conv2d(x, w, b, activation="leaky_relu", negative_slope=0.2)
            y.backward(torch.ones_like(y))
        with U.upconv_algorithm(None if algo == "replicate" else algo):  # replicate: upsample_conv2d's 1x1 only
            y2 = GF.conv_transpose2d_4s2(x, w4, b, activation="tanh")
            y2.backward(torch.ones_like(y2))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
def test_cuda_graph_capture_generator_and_d_loss():
    # G's forward + backward and the D loss captured in one CUDA graph and replayed: nothing in
    # the ops may synchronise or copy from the host.
    G = ganx.models.Generator(latent_dim=16, image_size=16, channels=3).cuda()
    z = torch.randn(8, 16, device="cuda")
    real = torch.randn(8, device="cuda")

    def step():
        fake = G(z)
        loss = GF.bce_discriminator_loss(real, fake.flatten(1).mean(1))
        loss.backward()
        return loss

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):  # warm-up outside the capture (cuDNN, allocator)
            step()
    torch.cuda.current_stream().wait_stream(s)
    for p in G.parameters():
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.isfinite(static_loss).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())


def test_ganx_info_shows_the_algorithm_choice():
    env = dict(os.environ, GANX_UPCONV_ALGO="split")
    r = subprocess.run([sys.executable, "-m", "ganx", "info"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "upsample-conv algorithms: deconv, stacked, split, replicate; forced: split" in r.stdout
