"""ganx.fuse on a zoo of generator styles: same outputs, gradients, state_dicts, report."""
import pytest
import torch
from torch import nn

import ganx


def resize_conv_dcgan(nz=16, ngf=8, bn_between=False):
    def block(cin, cout):
        layers = [nn.Upsample(scale_factor=2, mode="nearest")]
        if bn_between:
            layers.append(nn.BatchNorm2d(cin))
        layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
        return layers
    return nn.Sequential(
        nn.Unflatten(1, (nz, 1, 1)), nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4),
        nn.ReLU(True), *block(ngf * 4, ngf * 2), *block(ngf * 2, ngf),
        nn.Upsample(scale_factor=2), nn.Conv2d(ngf, 3, 3, padding=1), nn.Tanh())


def convT_dcgan(nz=16, ngf=8):
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2, True),
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1), nn.Tanh())


class ConditionalG(nn.Module):
    def __init__(self, nz=16, n_classes=10, ngf=8):
        super().__init__()
        self.emb = nn.Embedding(n_classes, nz)
        self.fc = nn.Linear(nz, ngf * 4 * 4 * 4)
        self.body = nn.Sequential(
            nn.Sequential(nn.UpsamplingNearest2d(scale_factor=2), nn.Conv2d(ngf * 4, ngf * 2, 5, padding=2),
                          nn.LeakyReLU(0.2)),
            nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(ngf * 2, ngf, 3, padding=1),
                          nn.ReLU()),
            nn.Upsample(scale_factor=2), nn.Conv2d(ngf, 1, 1), nn.Tanh())
        self.ngf = ngf

    def forward(self, z, y):
        h = self.fc(z * self.emb(y)).view(z.shape[0], self.ngf * 4, 4, 4)
        return self.body(h)


class CustomForward(nn.Module):
    """Uses its modules from a hand-written forward (no Sequential around the pair)."""
    def __init__(self):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.deconv = nn.ConvTranspose2d(4, 2, 4, 2, 1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.deconv(self.conv(self.up(x))))


def _check_same(orig, fused, *inputs, atol=1e-5):
    out_o = orig(*inputs)
    out_f = fused(*inputs)
    torch.testing.assert_close(out_f, out_o, atol=atol, rtol=1e-4)
    go = torch.randn_like(out_o)
    out_o.backward(go)
    out_f.backward(go)
    po, pf = dict(orig.named_parameters()), dict(fused.named_parameters())
    assert po.keys() == pf.keys()
    for k in po:
        torch.testing.assert_close(pf[k].grad, po[k].grad, atol=atol * 10, rtol=1e-3, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("train", [True, False])
def test_resize_conv_dcgan(train):
    g = resize_conv_dcgan().train(train)
    fused, report = ganx.fuse(g)
    # BatchNorm sits between conv and ReLU, so only the last block's Tanh joins as epilogue
    assert [e.what for e in report.fused] == ["Upsample(x2) + Conv2d(3x3) -> UpsampleConv2d"] * 2 + [
        "Upsample(x2) + Conv2d(3x3) + Tanh -> UpsampleConv2d"]
    kinds = [type(m).__name__ for m in fused]
    assert kinds.count("UpsampleConv2d") == 3 and "Upsample" not in kinds
    assert fused.training == train
    # the 4x4 first layer is ConvTranspose2d(4, 1, 0): not the (4, 2, 1) pattern
    assert any("stride=(1, 1)" in e.reason for e in report.left)
    _check_same(g, fused, torch.randn(4, 16))


def test_resize_conv_with_batchnorm_between_is_left_and_reported():
    g = resize_conv_dcgan(bn_between=True)
    fused, report = ganx.fuse(g)
    reasons = " ".join(e.reason for e in report.left)
    assert "BatchNorm2d between Upsample and Conv2d" in reasons
    assert len(report.fused) == 1  # only the last Upsample + Conv2d (+ Tanh)
    assert "Tanh" in report.fused[0].what
    _check_same(g, fused, torch.randn(2, 16))


def test_convT_dcgan_and_activations_join():
    g = convT_dcgan()
    fused, report = ganx.fuse(g, where_slower="fuse")
    assert len(report.fused) == 3
    assert sum(isinstance(m, ganx.nn.FusedConvTranspose2d) for m in fused) == 3
    acts = [m.activation for m in fused if isinstance(m, ganx.nn.FusedConvTranspose2d)]
    assert acts == [None, None, "tanh"]  # BatchNorm between conv and activation: no join
    seq = nn.Sequential(nn.ConvTranspose2d(4, 3, 4, 2, 1), nn.LeakyReLU(0.3), nn.ConvTranspose2d(3, 2, 4, 2, 1),
                        nn.ReLU())
    fused_seq, rep = ganx.fuse(seq, where_slower="fuse")
    assert [m.activation for m in fused_seq if isinstance(m, ganx.nn.FusedConvTranspose2d)] == ["leaky_relu", "relu"]
    assert isinstance(fused_seq[1], nn.Identity) and isinstance(fused_seq[3], nn.Identity)
    _check_same(seq, fused_seq, torch.randn(2, 4, 3, 3))
    _check_same(g, fused, torch.randn(3, 16, 1, 1))


def test_conditional_nested_k5_k1_and_bilinear_left_alone():
    g = ConditionalG()
    fused, report = ganx.fuse(g)
    assert isinstance(fused.body[0][1], ganx.nn.UpsampleConv2d) and fused.body[0][1].kernel_size == 5
    assert fused.body[0][1].activation == "leaky_relu" and fused.body[0][1].negative_slope == 0.2
    assert isinstance(fused.body[1][0], nn.Upsample) and fused.body[1][0].mode == "bilinear"
    assert isinstance(fused.body[3], ganx.nn.UpsampleConv2d) and fused.body[3].kernel_size == 1
    assert any("mode='bilinear' cannot be fused" in e.reason for e in report.left)
    z, y = torch.randn(4, 16), torch.randint(0, 10, (4,))
    _check_same(g, fused, z, y)
    assert "fused" in str(report) and "bilinear" in str(report)


def test_custom_forward():
    m = CustomForward()
    # traced: the pair in a hand-written forward is found, the ReLU after the deconv joins it
    fused, report = ganx.fuse(m, where_slower="fuse")
    assert report.method == "torch.fx graph"
    assert isinstance(fused, CustomForward)  # the model keeps its class and forward
    assert isinstance(fused.up, nn.Identity) and isinstance(fused.conv, ganx.nn.UpsampleConv2d)
    assert isinstance(fused.deconv, ganx.nn.FusedConvTranspose2d) and fused.deconv.activation == "relu"
    assert isinstance(fused.act, nn.Identity)
    _check_same(m, fused, torch.randn(2, 4, 3, 3))
    # not traced (the module walk): outside a Sequential nothing is paired, and the report says why
    m.zero_grad(set_to_none=True)
    walked, report = ganx.fuse(m, trace=False, where_slower="fuse")
    assert report.method.startswith("module walk")
    assert isinstance(walked.deconv, ganx.nn.FusedConvTranspose2d) and walked.deconv.activation is None
    assert isinstance(walked.up, nn.Upsample)
    assert any("not inside an nn.Sequential" in e.reason for e in report.left)
    _check_same(m, walked, torch.randn(2, 4, 3, 3))


def test_conv_transpose_left_on_cpu_with_reason():
    g = convT_dcgan()
    fused, report = ganx.fuse(g)  # parameters on the CPU: "auto" leaves ConvTranspose2d(4, 2, 1) alone
    assert not report.fused and sum(isinstance(m, nn.ConvTranspose2d) for m in fused) == 4
    reasons = [e.reason for e in report.left]
    assert sum("oneDNN" in r for r in reasons) == 3, reasons
    assert "Tanh" in report.left[-1].what  # the candidate epilogue is named too
    fused, report = ganx.fuse(g, device="cuda")  # the device it will train on decides
    assert len(report.fused) == 3
    fused, report = ganx.fuse(g, where_slower="fuse")
    assert len(report.fused) == 3
    with pytest.raises(ValueError, match="ganx.fuse: where_slower must be one of"):
        ganx.fuse(g, where_slower="sometimes")


@pytest.mark.parametrize("scale", [1, 3, 4])
def test_upsample_scales_other_than_2_left_on_cpu_and_exact_when_forced(scale):
    seq = nn.Sequential(nn.Upsample(scale_factor=scale), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).double()
    fused, report = ganx.fuse(seq)
    assert not report.fused and f"scale_factor={scale} ganx's kernel is not faster" in report.left[0].reason
    forced, report = ganx.fuse(seq, where_slower="fuse")
    assert report.fused[0].what == f"Upsample(x{scale}) + Conv2d(3x3) + ReLU -> UpsampleConv2d"
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(forced(x), seq(x), atol=1e-12, rtol=1e-10)
    _, report = ganx.fuse(seq, device="cuda")
    assert len(report.fused) == 1


def test_state_dict_both_ways_and_inplace():
    g = resize_conv_dcgan()
    fused, _ = ganx.fuse(g)
    fresh = resize_conv_dcgan()
    fresh.load_state_dict(fused.state_dict())          # fused -> original
    fused2, _ = ganx.fuse(resize_conv_dcgan())
    fused2.load_state_dict(g.state_dict())             # original -> fused
    x = torch.randn(2, 16)
    g.eval(), fresh.eval(), fused2.eval()
    torch.testing.assert_close(fresh(x), g(x))
    torch.testing.assert_close(fused2(x), g(x), atol=1e-5, rtol=1e-4)
    same, _ = ganx.fuse(g, inplace=True)
    assert same is g


def test_compile_of_fused_model():
    g = convT_dcgan().eval()
    fused, _ = ganx.fuse(g, where_slower="fuse")
    x = torch.randn(2, 16, 1, 1)
    torch.testing.assert_close(torch.compile(fused, fullgraph=True, backend="aot_eager")(x), g(x), atol=1e-5, rtol=1e-4)


def test_unsupported_patterns_are_left():
    seq = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=1, stride=2),
                        nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=0),
                        nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"),
                        nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=1, groups=2),
                        nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 4, padding=2),
                        nn.ConvTranspose2d(2, 2, 4, 2, 1, output_padding=1))
    fused, report = ganx.fuse(seq)
    assert not report.fused
    reasons = [e.reason for e in report.left]
    for s in ["stride=(2, 2)", "padding=(0, 0)", "padding_mode='reflect'", "groups=2", "kernel_size=(4, 4)",
              "output_padding=(1, 1)"]:
        assert any(s in r for r in reasons), (s, reasons)
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(fused(x), seq(x))


def test_fuse_errors():
    with pytest.raises(TypeError, match="ganx.fuse: model must be an nn.Module"):
        ganx.fuse("not a model")


@pytest.mark.cuda
def test_fuse_on_cuda():
    g = resize_conv_dcgan().cuda()
    fused, _ = ganx.fuse(g)
    assert next(fused.parameters()).is_cuda
    torch.backends.cudnn.allow_tf32 = False
    _check_same(g, fused, torch.randn(4, 16, device="cuda"), atol=1e-4)


# ----------------------------------------------------------------- the activation table in fuse
# One instance of the torch module of every activation of the table (a new activation adds its own).
ACT_MODULES = {"relu": lambda: nn.ReLU(), "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": lambda: nn.Tanh(),
               "silu": lambda: nn.SiLU(), "gelu": lambda: nn.GELU(approximate="tanh")}


def test_every_table_activation_has_a_module_here():
    from ganx.ops.activations import ACTIVATIONS
    assert set(ACT_MODULES) == set(ACTIVATIONS) - {"none"}


def _double_check(orig, fused, x):
    orig, fused = orig.double(), fused.double()
    x = x.double()
    out_o, out_f = orig(x), fused(x)
    torch.testing.assert_close(out_f, out_o, atol=1e-10, rtol=1e-10)
    go = torch.randn_like(out_o)
    out_o.backward(go)
    out_f.backward(go)
    po, pf = dict(orig.named_parameters()), dict(fused.named_parameters())
    for k in po:
        torch.testing.assert_close(pf[k].grad, po[k].grad, atol=1e-9, rtol=1e-9, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("trace", [True, False])  # the traced graph, the module walk
@pytest.mark.parametrize("act", sorted(ACT_MODULES))
def test_table_activation_modules_join(act, trace):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(3, 4, 3, padding=1), ACT_MODULES[act](),
                        nn.ConvTranspose2d(4, 2, 4, 2, 1), ACT_MODULES[act]())
    fused, report = ganx.fuse(seq, where_slower="fuse", trace=trace, example_input=torch.randn(2, 3, 4, 4))
    layers = [m for m in fused.modules() if isinstance(m, (ganx.nn.UpsampleConv2d, ganx.nn.FusedConvTranspose2d))]
    assert [m.activation for m in layers] == [act, act], str(report)
    if act == "leaky_relu":
        assert [m.negative_slope for m in layers] == [0.2, 0.2]
    _double_check(seq, fused, torch.randn(2, 3, 4, 4))


class _FunctionalActs(nn.Module):
    """Traced: activations as F calls after the upsample + conv (the graph is rewritten)."""
    def __init__(self, fn):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fn = fn

    def forward(self, x):
        return self.fn(self.conv(torch.nn.functional.interpolate(x, scale_factor=2)))


@pytest.mark.parametrize("fn,act", [(torch.nn.functional.silu, "silu"),
                                    (lambda y: torch.nn.functional.gelu(y, approximate="tanh"), "gelu"),
                                    (torch.nn.functional.gelu, None)])  # the erf form does not join
def test_functional_silu_gelu_join(fn, act):
    torch.manual_seed(0)
    m = _FunctionalActs(fn)
    fused, report = ganx.fuse(m, example_input=torch.randn(2, 3, 4, 4))
    assert len(report.fused) == 1, str(report)
    assert ("SiLU" in report.fused[0].what or "silu" in report.fused[0].what or "gelu" in report.fused[0].what) == (
        act is not None), str(report)
    _double_check(m, fused, torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("trace", [True, False])
def test_exact_gelu_is_left_with_the_reason(trace):
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(3, 4, 3, padding=1), nn.GELU())
    fused, report = ganx.fuse(seq, trace=trace, example_input=torch.randn(2, 3, 4, 4))
    assert isinstance(fused[1], ganx.nn.UpsampleConv2d) and fused[1].activation is None
    assert isinstance(fused[2], nn.GELU)
    left = [e for e in report.left if e.path == "2"]
    assert left and "erf form" in left[0].reason and "approximate='tanh'" in left[0].reason, str(report)
    _double_check(seq, fused, torch.randn(2, 3, 4, 4))
    # a module the table does not know is never taken for an activation
    seq2 = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(3, 4, 3, padding=1), _NotAnActivation())
    fused2, _ = ganx.fuse(seq2, trace=trace, example_input=torch.randn(2, 3, 4, 4))
    assert fused2[1].activation is None and isinstance(fused2[2], _NotAnActivation)


class _NotAnActivation(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x) + 1  # elementwise, but no activation of the table
