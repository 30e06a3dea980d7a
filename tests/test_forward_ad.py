"""Forward-mode AD, mixed devices and gradient ownership of every fused op (issue 25, items 1, 2, 14).

Forward mode: torch.func.jvp, torch.func.jacfwd and torch.autograd.forward_ad through every op,
compared in float64 with the same transform of the pure-torch reference (ganx.ops.reference),
for every activation, with and without bias, a tangent on each differentiable argument; a
tangent that cannot be carried is a clear error, never zeros or a missing tangent.
Mixed devices: a CPU tensor with a meta one (the fake kernel runs) raises torch's "not on the
expected device" naming the op and the argument, for every tensor argument of every op.
"""
import pytest
import torch
from torch.autograd import forward_ad as fwAD

import ganx.functional as gf
from ganx.ops import reference as ref
from ganx.ops.activations import ACTIVATIONS

D = torch.float64
ACTS = [None if n == "none" else n for n in ACTIVATIONS]  # every activation of the table


def _close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def _jvp_both(fn, fn_ref, primals, tangents):
    out, t = torch.func.jvp(fn, primals, tangents)
    out_r, t_r = torch.func.jvp(fn_ref, primals, tangents)
    _close(out, out_r)
    _close(t, t_r)
    assert t.abs().max() > 0  # the case has a non-zero tangent (a test that cannot pass with zeros)
    return t


def _fwad_tangent(fn, primals, tangents):
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) if t is not None else p for p, t in zip(primals, tangents)]
        out = fn(*duals)
        tangent = fwAD.unpack_dual(out).tangent
    assert tangent is not None, "forward_ad lost the tangent"
    return tangent


# ----------------------------------------------------------------- upsample_conv2d, conv_transpose2d_4s2

def _upconv_case(op, scale=2, k=3, bias=True):
    x = torch.randn(2, 3, 3, 4, dtype=D)
    if op == "up":
        w = torch.randn(2, 3, k, k, dtype=D) * 0.5
    else:
        w = torch.randn(3, 2, 4, 4, dtype=D) * 0.5
    b = torch.randn(2, dtype=D) if bias else None
    return x, w, b


def _upconv_fns(op, act, scale=2, slope=0.2):
    if op == "up":
        return (lambda x, w, b: gf.upsample_conv2d(x, w, b, scale, None, act, slope),
                lambda x, w, b: ref.upsample_conv2d(x, w, b, scale, None, act, slope))
    return (lambda x, w, b: gf.conv_transpose2d_4s2(x, w, b, act, slope),
            lambda x, w, b: ref.conv_transpose2d_4s2(x, w, b, act, slope))


@pytest.mark.parametrize("op", ["up", "ct"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("which", ["x", "w", "b", "all"])
def test_upconv_jvp_matches_reference(op, act, bias, which):
    if which == "b" and not bias:
        pytest.skip("no bias")
    x, w, b = _upconv_case(op, bias=bias)
    fn, fn_ref = _upconv_fns(op, act)
    if not bias:
        fn2, fr2 = (lambda x, w: fn(x, w, None)), (lambda x, w: fn_ref(x, w, None))
        primals = (x, w)
    else:
        fn2, fr2, primals = fn, fn_ref, (x, w, b)
    tangents = tuple(torch.randn_like(p) if which in ("all", "xwb"[i]) else torch.zeros_like(p)
                     for i, p in enumerate(primals))
    t = _jvp_both(fn2, fr2, primals, tangents)
    # torch.autograd.forward_ad gives the same tangent (None tangents where the case has zeros)
    t_ad = _fwad_tangent(fn2, primals, [tt if tt.any() else None for tt in tangents])
    _close(t_ad, t)


@pytest.mark.parametrize("scale,k", [(1, 1), (3, 3), (4, 5), (2, 5)])
def test_upsample_conv2d_jvp_every_scale(scale, k):
    x, w, b = _upconv_case("up", scale, k)
    fn, fn_ref = _upconv_fns("up", "tanh", scale)
    _jvp_both(fn, fn_ref, (x, w, b), tuple(torch.randn_like(p) for p in (x, w, b)))


@pytest.mark.parametrize("op", ["up", "ct"])
def test_upconv_jacfwd_matches_reference_and_reverse(op):
    x, w, b = _upconv_case(op)
    x = x[:1, :, :2, :2]
    fn, fn_ref = _upconv_fns(op, "leaky_relu")
    for argnums in (0, 1, 2):
        j = torch.func.jacfwd(fn, argnums=argnums)(x, w, b)
        _close(j, torch.func.jacfwd(fn_ref, argnums=argnums)(x, w, b))
        _close(j, torch.func.jacrev(fn_ref, argnums=argnums)(x, w, b))


def test_upsample_conv2d_raw_op_with_a_tangent_is_an_error():
    # the op itself (torch.ops.ganx) has a C++ Autograd kernel (host overhead), which carries no
    # tangent: torch refuses the tangent instead of dropping it (the Python wrappers carry it)
    x = torch.randn(1, 2, 4, 4, dtype=D)
    w = torch.randn(3, 2, 3, 3, dtype=D)
    with pytest.raises(RuntimeError, match="forward-mode AD"):
        torch.func.jvp(lambda a: torch.ops.ganx.upsample_conv2d(a, w, None, 2, 1, "none", 0.01), (x,),
                       (torch.ones_like(x),))
    with fwAD.dual_level(), pytest.raises(RuntimeError, match="forward-mode AD"):
        torch.ops.ganx.upsample_conv2d(fwAD.make_dual(x, torch.ones_like(x)), w, None, 2, 1, "none", 0.01)


def test_upconv_forward_and_reverse_together():
    # reverse mode through a call that carried tangents still gives the right gradient (outside
    # the dual level), and the tangent is right
    x, w, b = (t.requires_grad_() for t in _upconv_case("up"))
    tx = torch.randn_like(x)
    want = torch.func.jvp(lambda a: ref.upsample_conv2d(a, w.detach(), b.detach(), 2, None, "relu"),
                          (x.detach(),), (tx,))[1]
    with fwAD.dual_level():
        out = gf.upsample_conv2d(fwAD.make_dual(x, tx), w, b, 2, None, "relu")
        primal, tangent = fwAD.unpack_dual(out)
    _close(tangent, want)
    go = torch.randn_like(primal)
    g = torch.autograd.grad(primal, (x, w, b), go)
    xr, wr, br = (t.detach().clone().requires_grad_() for t in (x, w, b))
    gr = torch.autograd.grad(ref.upsample_conv2d(xr, wr, br, 2, None, "relu"), (xr, wr, br), go)
    for a, e in zip(g, gr):
        _close(a, e)


def test_upconv_forward_over_reverse_is_an_error():
    x, w, b = _upconv_case("up")
    f = lambda x: gf.upsample_conv2d(x, w, b, 2, None, "tanh").sum()  # noqa: E731
    # torch.func.grad itself does not run through these ops (torch's own error for a custom op's
    # autograd under functorch), so jacfwd(grad(f)) is an error before any tangent is involved
    with pytest.raises(RuntimeError, match="functorch transforms"):
        torch.func.jacfwd(torch.func.grad(f))(x)
    xr = x.clone().requires_grad_()
    with fwAD.dual_level():
        out = gf.upsample_conv2d(fwAD.make_dual(xr, torch.randn_like(x)), w, b, 2, None, "tanh")
        with pytest.raises(RuntimeError, match="upsample_conv2d: forward-mode AD of a gradient"):
            torch.autograd.grad(out.sum(), xr)


# ----------------------------------------------------------------- the losses

REDS = ["mean", "sum", "none"]


def _logits(*shape):
    return torch.randn(*shape, dtype=D) * 3


@pytest.mark.parametrize("red", REDS)
@pytest.mark.parametrize("factors", ["none", "weight", "pos_weight", "both"])
@pytest.mark.parametrize("which", ["input", "target", "both"])
def test_bce_with_logits_jvp(red, factors, which):
    x, t = _logits(3, 4), torch.rand(3, 4, dtype=D)
    w = torch.rand(4, dtype=D) + 0.5 if factors in ("weight", "both") else None
    pw = torch.rand(3, 4, dtype=D) * 2 if factors in ("pos_weight", "both") else None
    fn = lambda a, b: gf.bce_with_logits(a, b, w, reduction=red, pos_weight=pw)  # noqa: E731
    fr = lambda a, b: torch.nn.functional.binary_cross_entropy_with_logits(a, b, w, reduction=red,  # noqa: E731
                                                                            pos_weight=pw)
    tx = torch.randn_like(x) if which != "target" else torch.zeros_like(x)
    tt = torch.randn_like(t) if which != "input" else torch.zeros_like(t)
    t_out = _jvp_both(fn, fr, (x, t), (tx, tt))
    _close(_fwad_tangent(fn, (x, t), (tx if tx.any() else None, tt if tt.any() else None)), t_out)
    if red == "none":
        for argnums in (0, 1):
            _close(torch.func.jacfwd(fn, argnums=argnums)(x, t), torch.func.jacfwd(fr, argnums=argnums)(x, t))


@pytest.mark.parametrize("red", REDS)
@pytest.mark.parametrize("weighted", [False, True])
def test_binary_cross_entropy_jvp(red, weighted):
    p, t = torch.rand(5, 2, dtype=D) * 0.9 + 0.05, torch.rand(5, 2, dtype=D)
    w = torch.rand(5, 2, dtype=D) if weighted else None
    fn = lambda a, b: gf.binary_cross_entropy(a, b, w, reduction=red)  # noqa: E731
    fr = lambda a, b: torch.nn.functional.binary_cross_entropy(a, b, w, reduction=red)  # noqa: E731
    t_out = _jvp_both(fn, fr, (p, t), (torch.randn_like(p), torch.randn_like(t)))
    _close(_fwad_tangent(fn, (p, t), (torch.randn_like(p) * 0 + 1, None)),
           torch.func.jvp(fr, (p, t), (torch.ones_like(p), torch.zeros_like(t)))[1])
    assert t_out is not None
    _close(torch.func.jacfwd(fn)(p, t), torch.func.jacrev(fr)(p, t))


def test_loss_weight_tangent_is_an_error():
    x, t, w = _logits(4), torch.rand(4, dtype=D), torch.rand(4, dtype=D)
    with pytest.raises(RuntimeError, match="bce_with_logits: the loss is not differentiable with respect to weight"):
        torch.func.jvp(lambda w: gf.bce_with_logits(x, t, w), (w,), (torch.ones_like(w),))
    with pytest.raises(RuntimeError, match="bce_with_logits: .* respect to pos_weight"):
        torch.func.jvp(lambda pw: gf.bce_with_logits(x, t, pos_weight=pw), (w,), (torch.ones_like(w),))
    with pytest.raises(RuntimeError, match="binary_cross_entropy: .* respect to weight"):
        torch.func.jvp(lambda w: gf.binary_cross_entropy(t, t, w), (w,), (torch.ones_like(w),))


@pytest.mark.parametrize("red", REDS)
@pytest.mark.parametrize("which", ["real", "fake", "both"])
def test_discriminator_loss_jvp(red, which):
    r, f = _logits(6), _logits(2, 3)
    kw = dict(real_target=0.9, fake_target=0.1, reduction=red)
    fn = lambda a, b: gf.bce_discriminator_loss(a, b, **kw)  # noqa: E731
    fr = lambda a, b: ref.bce_discriminator_loss(a, b, **kw)  # noqa: E731
    tr = torch.randn_like(r) if which != "fake" else torch.zeros_like(r)
    tf = torch.randn_like(f) if which != "real" else torch.zeros_like(f)
    out, t = torch.func.jvp(fn, (r, f), (tr, tf))
    out_r, t_r = torch.func.jvp(fr, (r, f), (tr, tf))
    _close(out, out_r)
    _close(t, t_r)
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, tp) if tp.any() else p for p, tp in ((r, tr), (f, tf))]
        o = fn(*duals)
        got = tuple(fwAD.unpack_dual(oo).tangent for oo in (o if red == "none" else (o,)))
    assert all(g is not None for g in got)
    _close(got if red == "none" else got[0], t_r)
    if red != "none":
        _close(torch.func.jacfwd(fn, argnums=(0, 1))(r, f), torch.func.jacrev(fr, argnums=(0, 1))(r, f))


@pytest.mark.parametrize("red", REDS)
@pytest.mark.parametrize("mode", ["non_saturating", "minimax"])
def test_generator_loss_jvp(red, mode):
    f = _logits(3, 2)
    fn = lambda a: gf.bce_generator_loss(a, mode=mode, target=0.9, reduction=red)  # noqa: E731
    fr = lambda a: ref.bce_generator_loss(a, mode=mode, target=0.9, reduction=red)  # noqa: E731
    t = _jvp_both(fn, fr, (f,), (torch.randn_like(f),))
    _close(_fwad_tangent(fn, (f,), (torch.ones_like(f),)), torch.func.jvp(fr, (f,), (torch.ones_like(f),))[1])
    _close(torch.func.jacfwd(fn)(f), torch.func.jacrev(fr)(f))
    assert t is not None


def test_gan_losses_forward_and_reverse_together():
    # jvp of a loss whose logits also require grad: tangent and gradient both right; a backward
    # inside the dual level would drop the gradient's tangent: an error
    r = _logits(5).requires_grad_()
    f = _logits(4).requires_grad_()
    tr = torch.randn_like(r)
    want = torch.func.jvp(lambda a: ref.bce_discriminator_loss(a, f.detach()), (r.detach(),), (tr,))[1]
    with fwAD.dual_level():
        loss = gf.bce_discriminator_loss(fwAD.make_dual(r, tr), f)
        primal, tangent = fwAD.unpack_dual(loss)
        _close(tangent, want)
        with pytest.raises(RuntimeError, match="forward-mode AD of a gradient .forward-over-reverse"):
            torch.autograd.grad(primal, (r, f), retain_graph=True)
    gr, gf_ = torch.autograd.grad(primal, (r, f))
    _close(gr, (torch.sigmoid(r) - 1).detach() / 5)
    _close(gf_, torch.sigmoid(f).detach() / 4)


# ----------------------------------------------------------------- mixed devices (item 2)

META_CASES = {
    "upsample_conv2d": lambda m: (lambda x, w, b: gf.upsample_conv2d(x, w, b),
                                  (torch.randn(1, 2, 3, 3), torch.randn(3, 2, 3, 3), torch.randn(3)), ("x", "weight", "bias")),
    "conv_transpose2d_4s2": lambda m: (lambda x, w, b: gf.conv_transpose2d_4s2(x, w, b),
                                       (torch.randn(1, 2, 3, 3), torch.randn(2, 3, 4, 4), torch.randn(3)),
                                       ("x", "weight", "bias")),
    "bce_with_logits": lambda m: (lambda x, t, w, pw: gf.bce_with_logits(x, t, w, pos_weight=pw),
                                  (torch.randn(4), torch.rand(4), torch.rand(4), torch.rand(4)),
                                  ("input", "target", "weight", "pos_weight")),
    "binary_cross_entropy": lambda m: (lambda x, t, w: gf.binary_cross_entropy(x, t, w),
                                       (torch.rand(4), torch.rand(4), torch.rand(4)), ("input", "target", "weight")),
    "bce_discriminator_loss": lambda m: (lambda r, f: gf.bce_discriminator_loss(r, f),
                                         (torch.randn(4), torch.randn(3)), ("real", "fake")),
}


def _meta_cases():
    for op, make in META_CASES.items():
        _, args, names = make(None)
        for i in range(len(args)):
            yield op, i


@pytest.mark.parametrize("op,i", list(_meta_cases()))
@pytest.mark.parametrize("meta_side", ["one", "others"])
def test_cpu_mixed_with_meta_raises(op, i, meta_side):
    """One argument on meta and the rest on the CPU (or the reverse): an error naming the op and an
    argument, never an uninitialised CPU tensor."""
    fn, args, names = META_CASES[op](None)
    args = list(args)
    if meta_side == "one":
        args[i] = args[i].to("meta")
    else:
        args = [a if j == i else a.to("meta") for j, a in enumerate(args)]
    with pytest.raises(RuntimeError, match=rf"^{op}: \w+ on device \w+ is not on the expected device \w+ "
                                           rf"\(the device of \w+\)"):
        fn(*args)


def test_meta_mix_names_the_argument():
    x, w = torch.randn(1, 2, 3, 3), torch.randn(3, 2, 3, 3, device="meta")
    with pytest.raises(RuntimeError, match=r"upsample_conv2d: weight on device meta is not on the expected device cpu "
                                           r"\(the device of x\)"):
        gf.upsample_conv2d(x, w)
    with pytest.raises(RuntimeError, match="bce_with_logits: target on device meta is not on the expected device cpu"):
        gf.bce_with_logits(torch.randn(4), torch.rand(4, device="meta"))
    with pytest.raises(RuntimeError, match="bce_discriminator_loss: fake on device meta is not on the expected"):
        gf.bce_discriminator_loss(torch.randn(4), torch.rand(4, device="meta"))
    # all on meta is fine (shape inference)
    assert gf.upsample_conv2d(x.to("meta"), w).shape == (1, 3, 6, 6)


def test_backward_ops_mixed_with_meta_raise():
    x, w = torch.randn(1, 2, 3, 3), torch.randn(3, 2, 3, 3)
    go = torch.randn(1, 3, 6, 6)
    for bad in ("grad_out", "weight", "out"):
        a = dict(grad_out=go, x=x, weight=w, out=go.new_empty((0,)))
        a[bad] = a[bad].to("meta")
        with pytest.raises(RuntimeError, match=f"upsample_conv2d_backward: {bad} on device meta is not on the expected"):
            torch.ops.ganx.upsample_conv2d_backward(a["grad_out"], a["x"], a["weight"], a["out"], False, 2, 1, "none",
                                                    0.01, [True, True, False])
    wt, got = torch.randn(2, 3, 4, 4), torch.randn(1, 3, 6, 6)
    with pytest.raises(RuntimeError, match="conv_transpose2d_4s2_backward: grad_out on device meta"):
        torch.ops.ganx.conv_transpose2d_4s2_backward(got.to("meta"), x, wt, got.new_empty((0,)), False, "none", 0.01,
                                                     [True, True, False])


def test_fake_tensor_mode_checks_devices():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        x = torch.randn(4)
        t = torch.empty(4, device="meta")
        with pytest.raises(RuntimeError, match="bce_with_logits: target on device meta is not on the expected device"):
            torch.ops.ganx.bce_with_logits(x, t, None, None, 1, False)


@pytest.mark.cuda
@pytest.mark.parametrize("op,i", list(_meta_cases()))
def test_cpu_mixed_with_cuda_raises(op, i):
    fn, args, names = META_CASES[op](None)
    args = [a.cuda() if j != i else a for j, a in enumerate(args)]
    with pytest.raises(RuntimeError, match=rf"^{op}: \w+ on device [\w:]+ is not on the expected device [\w:]+"):
        fn(*args)


# ----------------------------------------------------------------- gradients the caller owns (item 14)

@pytest.mark.parametrize("loss", ["disc", "gen"])
def test_retain_graph_gradients_are_owned(loss):
    r = torch.randn(300, requires_grad=True)
    f = torch.randn(200, requires_grad=True)
    fn = (lambda: gf.bce_discriminator_loss(r, f)) if loss == "disc" else (lambda: gf.bce_generator_loss(f))
    params = (r, f) if loss == "disc" else (f,)
    out = fn()
    out.backward(retain_graph=True)
    first = [p.grad.clone() for p in params]
    for p in params:
        p.grad.zero_()  # what optimizer.zero_grad(set_to_none=False) does between backwards
    out.backward(retain_graph=True)
    for p, g in zip(params, first):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
    torch.nn.utils.clip_grad_norm_(params, 1e-3)  # in place on .grad
    out.backward()
    # autograd.grad with the graph kept: the result is the caller's to write to
    out = fn()
    gs = torch.autograd.grad(out, params, retain_graph=True)
    gs[0].mul_(3)
    gs2 = torch.autograd.grad(out, params)
    torch.testing.assert_close(gs2[0] * 3, gs[0], rtol=0, atol=0)


def test_unit_grad_shortcut_kept_without_retain():
    """Without retain_graph the saved buffer itself is handed out (no copy): the fast path of
    tests/test_bce_simd.py; with it, or while another tensor shares the buffer, a copy."""
    r = torch.randn(64, requires_grad=True)
    f = torch.randn(32, requires_grad=True)
    loss, g, _ = torch.ops.ganx.bce_discriminator_loss(r, f, 1.0, 0.0, 1, True)
    ptr = g.data_ptr()
    view = g[:8]
    del g
    gr, _ = torch.autograd.grad(loss, (r, f), retain_graph=True)
    assert gr.data_ptr() != ptr  # kept graph: a copy
    gr, _ = torch.autograd.grad(loss, (r, f))
    assert gr.data_ptr() != ptr  # a view of the buffer is alive: a copy
    gr.zero_()
    assert view.abs().sum() > 0
    loss, g, _ = torch.ops.ganx.bce_discriminator_loss(r, f, 1.0, 0.0, 1, True)
    ptr = g.data_ptr()
    del g
    gr, _ = torch.autograd.grad(loss, (r, f))
    assert gr.data_ptr() == ptr  # nobody else can read it: the saved buffer itself
