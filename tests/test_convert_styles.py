"""ganx.fuse / ganx.logits_and_bce on the GAN styles of issue 23, compared in float64.

Every model here is written for this file from a description of a common public style (none
is copied): a ResNet generator that registers a conv under two names; BigGAN-style blocks
(a functional nearest interpolate applied to h and to x, convs that compute their
spectrally normalised weight in their own forward); an upsampling module built inside
forward; a SAGAN-style generator (a spectral-norm wrapper module around ConvTranspose2d(4, 2, 1)
that sets the layer's weight and calls its forward, and an image + attention-map output);
mimicry-style bilinear blocks; hinge / WGAN-GP style discriminators.
"""
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ganx
from ganx.convert import _fuse

TOL = dict(atol=1e-10, rtol=1e-9)
SN = nn.utils.parametrizations.spectral_norm


def _outs(o):
    return list(o) if isinstance(o, (tuple, list)) else [o]


def _compare64(orig, fused, *inputs, steps=2):
    """Outputs, every parameter gradient and every buffer equal in float64, over `steps` calls
    (train-mode power iterations and BatchNorm statistics must move the same way)."""
    for _ in range(steps):
        oo, of = _outs(orig(*inputs)), _outs(fused(*inputs))
        assert len(oo) == len(of)
        gs = [torch.randn_like(o) for o in oo]
        for o, f in zip(oo, of):
            torch.testing.assert_close(f, o, **TOL)
        for m in (orig, fused):
            m.zero_grad(set_to_none=True)
        torch.autograd.backward([o for o in oo if o.requires_grad], [g for o, g in zip(oo, gs) if o.requires_grad])
        torch.autograd.backward([o for o in of if o.requires_grad], [g for o, g in zip(of, gs) if o.requires_grad])
        po, pf = dict(orig.named_parameters()), dict(fused.named_parameters())
        assert po.keys() == pf.keys()
        for k in po:
            torch.testing.assert_close(pf[k].grad, po[k].grad, **TOL, msg=lambda m: f"{k}: {m}")
    so, sf = orig.state_dict(), fused.state_dict()
    assert so.keys() == sf.keys()
    for k in so:
        torch.testing.assert_close(sf[k], so[k], **TOL, msg=lambda m: f"{k}: {m}")


def _fuse_pair(model, train, **kw):
    torch.manual_seed(0)
    g = model.double().train(train)
    fused, report = ganx.fuse(g, **kw)
    assert fused.training == train and type(fused) is type(g)
    return g, fused, report


# ----------------------------------------------------------------- a conv under two names


class AliasBlock(nn.Module):
    """ResNet generator block that registers conv1/conv2 as attributes *and* inside self.model."""

    def __init__(self, cin, cout, residual=True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.model = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Upsample(scale_factor=2), self.conv1,
                                   nn.BatchNorm2d(cout), nn.ReLU(), self.conv2)
        self.residual = residual
        if residual:
            self.bypass = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(cin, cout, 1))

    def forward(self, x):
        return self.model(x) + self.bypass(x) if self.residual else self.model(x)


class AliasG(nn.Module):
    def __init__(self, nz=8, ch=8, residual=True):
        super().__init__()
        self.ch = ch
        self.dense = nn.Linear(nz, 4 * 4 * ch)
        self.blocks = nn.Sequential(AliasBlock(ch, ch, residual), AliasBlock(ch, ch, residual))
        self.final = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, 3, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        return self.final(self.blocks(self.dense(z).view(-1, self.ch, 4, 4)))


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_conv_registered_under_two_names(residual, train):
    g, fused, report = _fuse_pair(AliasG(residual=residual), train)
    z = torch.randn(3, 8, dtype=torch.float64)
    n_up = 2 if residual else 1
    assert len(report.fused) == 2 * n_up, str(report)
    for b in fused.blocks:
        # every name of the conv now holds the fused layer, and the Upsample is gone from the Sequential
        assert isinstance(b.conv1, ganx.nn.UpsampleConv2d) and b.model[3] is b.conv1
        assert isinstance(b.model[2], nn.Identity)
    assert "proven on a probe batch" in str(report)
    _compare64(g, fused, z)
    assert fused(z).shape == (3, 3, 16, 16)


def test_trace_false_also_handles_the_alias():
    g, fused, report = _fuse_pair(AliasG(residual=False), True, trace=False)
    assert len(report.fused) == 2
    _compare64(g, fused, torch.randn(2, 8, dtype=torch.float64))


def test_a_wrong_rewrite_is_reverted_and_reported(monkeypatch):
    """The proof is what stands between a bug in a rewrite and the user: break one rewrite on purpose."""
    real = _fuse._make_upconv

    def wrong(conv, scale, act, slope):
        return real(conv, scale, "relu" if act is None else act, slope)  # an activation that is not there

    monkeypatch.setattr(_fuse, "_make_upconv", wrong)
    g = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(),
                      nn.Upsample(scale_factor=2), nn.Conv2d(3, 2, 3, padding=1)).double()
    fused, report = ganx.fuse(g)
    # the first pair (Tanh joins: nothing wrong) is kept; the second (a ReLU that is not there) is reverted
    assert [e.path for e in report.fused] == ["1"]
    assert report.left[0].path == "4" and report.left[0].reason.startswith("reverted: with it, output 0 differed")
    assert isinstance(fused[3], nn.Upsample) and type(fused[4]) is nn.Conv2d
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(fused(x), g(x), **TOL)


def test_unprovable_model_is_left_with_the_reason_and_example_input_proves_it():
    class TwoInputs(nn.Module):  # its second input is read by nothing the probe builder knows
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=1))

        def forward(self, x, shift):
            return self.body(x) + shift

    m = TwoInputs().double()
    fused, report = ganx.fuse(m)
    assert not report.fused and "could not be proven" in report.left[0].reason and "example_input" in str(report)
    x, s = torch.randn(2, 2, 4, 4, dtype=torch.float64), torch.randn(1, dtype=torch.float64)
    fused, report = ganx.fuse(m, example_input=(x, s))
    assert len(report.fused) == 1
    _compare64(m, fused, x, s)


def test_proof_does_not_touch_the_users_model():
    g = AliasG().double().train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    ganx.fuse(g)
    for k, v in g.state_dict().items():
        torch.testing.assert_close(v, before[k], atol=0, rtol=0)


# ----------------------------------------------------------------- hooks


def test_forward_pre_hook_that_reads_the_input_is_left_and_post_hook_still_runs():
    seen = []
    seq = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 2, 3, padding=1)).double()
    h = seq[1].register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape))
    fused, report = ganx.fuse(seq)
    assert not report.fused and "pre-hook" in report.left[0].reason
    h.remove()
    outs = []
    seq[1].register_forward_hook(lambda m, inp, out: outs.append(out.shape))
    fused, report = ganx.fuse(seq)
    assert len(report.fused) == 1 and "fused forward" in report.fused[0].what
    outs.clear()
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(fused(x), seq(x), **TOL)
    assert outs == [(2, 2, 6, 6), (2, 2, 6, 6)]  # the hook ran on the fused layer's (same) output


# ----------------------------------------------------------------- functional and in-forward upsampling


class InForwardUp(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        return self.act(self.conv(nn.UpsamplingNearest2d(scale_factor=2)(x)))


class FunctionalStyles(nn.Module):
    """F.interpolate into a Conv2d module, F.upsample_nearest into F.conv2d with a parameter weight,
    an nn.Upsample module called twice, each call feeding a conv, and functional activations."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.w2 = nn.Parameter(torch.randn(4, 4, 5, 5) * 0.1)
        self.b2 = nn.Parameter(torch.randn(4) * 0.1)
        self.up = nn.Upsample(scale_factor=2)
        self.c3 = nn.Conv2d(4, 4, 1)
        self.c4 = nn.Conv2d(3, 4, 3, padding="same")

    def forward(self, x):
        h = F.relu(self.c1(F.interpolate(x, scale_factor=2)))
        h = torch.tanh(F.conv2d(F.upsample_nearest(h, scale_factor=2), self.w2, self.b2, padding=2))
        return self.c3(self.up(h)) + F.leaky_relu(self.c4(self.up(F.interpolate(x, scale_factor=4))), 0.1)


@pytest.mark.parametrize("train", [True, False])
def test_upsampling_built_in_forward(train):
    g, fused, report = _fuse_pair(InForwardUp(), train)
    assert [e.what for e in report.fused] == ["F.interpolate(x2) + Conv2d(3x3) + LeakyReLU -> UpsampleConv2d"]
    assert isinstance(fused.conv, ganx.nn.UpsampleConv2d) and isinstance(fused.act, nn.Identity)
    _compare64(g, fused, torch.randn(2, 3, 5, 5, dtype=torch.float64))


@pytest.mark.parametrize("train", [True, False])
def test_functional_patterns(train):
    g, fused, report = _fuse_pair(FunctionalStyles(), train)
    whats = [e.what for e in report.fused]
    assert "F.interpolate(x2) + Conv2d(3x3) + relu -> UpsampleConv2d" in whats
    assert "F.interpolate(x2) + F.conv2d + tanh -> ganx upsample_conv2d" in whats
    assert "Upsample(x2) + Conv2d(1x1) -> UpsampleConv2d" in whats
    # x4 then x2 on the same path: the x4 interpolate feeds the Upsample, not a conv; it is reported
    assert any("F.interpolate" in e.what and "not Conv2d" in e.reason for e in report.left), str(report)
    assert isinstance(fused.c1, ganx.nn.UpsampleConv2d)
    _compare64(g, fused, torch.randn(2, 3, 3, 3, dtype=torch.float64))
    fresh = FunctionalStyles().double()
    fresh.load_state_dict(fused.state_dict())


def test_every_upsampling_is_reported():
    g = FunctionalStyles().double()
    _, report = ganx.fuse(g)
    # 4 upsampling calls (interpolate x2, upsample_nearest, interpolate x4) + the Upsample module: all in the report
    assert len(report.entries) == 5, str(report)


# ----------------------------------------------------------------- BigGAN-style blocks


class PowerIterSNConv2d(nn.Conv2d):
    """A Conv2d subclass whose forward computes its weight: one power iteration under no_grad
    (its vector updated in train mode only), the weight divided by the estimated singular value."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.register_buffer("u", F.normalize(torch.randn(1, self.out_channels), dim=1))

    def sn_weight(self):
        w = self.weight.view(self.weight.shape[0], -1)
        with torch.no_grad():
            v = F.normalize(self.u @ w, dim=1)
            u = F.normalize(v @ w.t(), dim=1)
            if self.training:
                self.u.copy_(u)
        sigma = (u @ w @ v.t()).squeeze()
        return self.weight / sigma

    def forward(self, x):
        return F.conv2d(x, self.sn_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class GBlock(nn.Module):
    def __init__(self, cin, cout, which_conv):
        super().__init__()
        self.upsample = functools.partial(F.interpolate, scale_factor=2)
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1, self.conv2 = which_conv(cin, cout, 3, padding=1), which_conv(cout, cout, 3, padding=1)
        self.conv_sc = which_conv(cin, cout, 1)

    def forward(self, x):
        h = F.relu(self.bn1(x))
        h = self.conv1(self.upsample(h))
        h = self.conv2(F.relu(self.bn2(h)))
        return h + self.conv_sc(self.upsample(x))


class BigGANStyleG(nn.Module):
    def __init__(self, which_conv, nz=8, ch=8):
        super().__init__()
        self.ch = ch
        self.linear = nn.Linear(nz, 4 * 4 * ch)
        self.blocks = nn.ModuleList([GBlock(ch, ch, which_conv), GBlock(ch, ch, which_conv)])
        self.out = nn.Sequential(nn.BatchNorm2d(ch), nn.ReLU(), which_conv(ch, 3, 3, padding=1))

    def forward(self, z):
        h = self.linear(z).view(z.shape[0], self.ch, 4, 4)
        for b in self.blocks:
            h = b(h)
        return torch.tanh(self.out(h))


CONVS = {
    "power_iter_subclass": PowerIterSNConv2d,
    "parametrizations.spectral_norm": lambda *a, **k: SN(nn.Conv2d(*a, **k)),
    "hook_spectral_norm": lambda *a, **k: nn.utils.spectral_norm(nn.Conv2d(*a, **k)),
    "weight_norm": lambda *a, **k: nn.utils.parametrizations.weight_norm(nn.Conv2d(*a, **k)),
    "hook_weight_norm": lambda *a, **k: nn.utils.weight_norm(nn.Conv2d(*a, **k)),
    "plain": nn.Conv2d,
}


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("conv", list(CONVS))
@pytest.mark.parametrize("train", [True, False])
def test_biggan_style_blocks(conv, train):
    g, fused, report = _fuse_pair(BigGANStyleG(CONVS[conv]), train)
    # both blocks: interpolate(h) -> conv1 (3x3) and interpolate(x) -> conv_sc (1x1)
    assert sorted(e.path for e in report.fused) == ["blocks.0.conv1", "blocks.0.conv_sc", "blocks.1.conv1",
                                                    "blocks.1.conv_sc"], str(report)
    assert not report.left, str(report)
    for b in fused.blocks:
        if conv == "plain":
            assert isinstance(b.conv1, ganx.nn.UpsampleConv2d)
        else:  # the layer keeps its class (it computes its weight) and its state_dict keys
            assert type(b.conv1).__name__ == type(g.blocks[0].conv1).__name__
    _compare64(g, fused, torch.randn(3, 8, dtype=torch.float64), steps=3)


# ----------------------------------------------------------------- SAGAN style


class WeightBarSN(nn.Module):
    """Spectral-norm wrapper: takes the wrapped layer's weight as its own `weight_bar` and, on each
    call, sets layer.weight = weight_bar / sigma (one power iteration) and calls layer.forward."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer
        w = layer.weight
        del layer._parameters["weight"]
        self.weight_bar = nn.Parameter(w.data)
        h = w.shape[0]
        self.register_buffer("u", F.normalize(torch.randn(h), dim=0))

    def forward(self, x):
        w = self.weight_bar.view(self.weight_bar.shape[0], -1)
        with torch.no_grad():
            v = F.normalize(w.t() @ self.u, dim=0)
            self.u.copy_(F.normalize(w @ v, dim=0))
        sigma = self.u @ (w @ v)
        setattr(self.layer, "weight", self.weight_bar / sigma)
        return self.layer.forward(x)


class SelfAttn(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.q, self.k, self.v = nn.Conv2d(c, c // 2, 1), nn.Conv2d(c, c // 2, 1), nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        b, c, hh, ww = x.shape
        q = self.q(x).view(b, -1, hh * ww).permute(0, 2, 1)
        attn = torch.softmax(torch.bmm(q, self.k(x).view(b, -1, hh * ww)), dim=-1)
        out = torch.bmm(self.v(x).view(b, c, hh * ww), attn.permute(0, 2, 1)).view(b, c, hh, ww)
        return self.gamma * out + x, attn


class SAGANStyleG(nn.Module):
    def __init__(self, nz=8, ch=8):
        super().__init__()
        self.l1 = nn.Sequential(WeightBarSN(nn.ConvTranspose2d(nz, ch * 2, 4)), nn.BatchNorm2d(ch * 2), nn.ReLU())
        self.l2 = nn.Sequential(WeightBarSN(nn.ConvTranspose2d(ch * 2, ch, 4, 2, 1)), nn.BatchNorm2d(ch), nn.ReLU())
        self.attn = SelfAttn(ch)
        self.last = nn.Sequential(nn.ConvTranspose2d(ch, 3, 4, 2, 1), nn.Tanh())

    def forward(self, z):
        out, p1 = self.attn(self.l2(self.l1(z.view(z.shape[0], -1, 1, 1))))
        return self.last(out), p1


@pytest.mark.parametrize("train", [True, False])
def test_sagan_style_sn_convtranspose_and_attention_outputs(train):
    z = torch.randn(2, 8, dtype=torch.float64)
    g, kept, report = _fuse_pair(SAGANStyleG(), train)
    # on the CPU ConvTranspose2d(4, 2, 1) is left, but every one is in the report with the reason
    left = {e.path: e.reason for e in report.left}
    assert "l2.0.layer" in left and "on the CPU" in left["l2.0.layer"], str(report)
    assert "last.0" in left and "l1.0.layer" in left  # l1: stride 1, not the pattern
    g, fused, report = _fuse_pair(SAGANStyleG(), train, where_slower="fuse")
    assert sorted(e.path for e in report.fused) == ["l2.0.layer", "last.0"], str(report)
    assert isinstance(fused.last[0], ganx.nn.FusedConvTranspose2d) and fused.last[0].activation == "tanh"
    _compare64(g, fused, z, steps=3)
    with pytest.raises(ValueError, match="none of them is a sigmoid") as e:
        ganx.logits_and_bce(g, nn.BCELoss(), example_input=z)
    assert "auxiliary classifier" not in str(e.value)


# ----------------------------------------------------------------- mimicry style: bilinear


class BilinearBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c1 = SN(nn.Conv2d(c, c, 3, 1, 1))
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.c_sc = SN(nn.Conv2d(c, c, 1))

    def forward(self, x):
        h = self.c1(F.interpolate(F.relu(x), scale_factor=2, mode="bilinear", align_corners=False))
        return h + self.c_sc(self.up(x))


def test_bilinear_is_left_with_an_accurate_reason():
    g = nn.Sequential(BilinearBlock(4), BilinearBlock(4)).double()
    fused, report = ganx.fuse(g)
    assert not report.fused and len(report.left) == 4, str(report)
    for e in report.left:
        assert "mode='bilinear' cannot be fused" in e.reason and "nn.Upsample" not in e.reason
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(fused(x), g(x), **TOL)


# ----------------------------------------------------------------- discriminators


class HingeD(nn.Module):
    """SN ResNet-ish discriminator returning raw scores (hinge / WGAN-GP losses read them directly)."""

    def __init__(self, ch=8):
        super().__init__()
        self.body = nn.Sequential(SN(nn.Conv2d(3, ch, 3, 1, 1)), nn.LeakyReLU(0.1), SN(nn.Conv2d(ch, ch, 4, 2, 1)),
                                  nn.LeakyReLU(0.1), nn.AvgPool2d(2))
        self.fc = SN(nn.Linear(ch * 4 * 4, 1))

    def forward(self, x):
        return self.fc(self.body(x).flatten(1))


def test_hinge_and_wgan_gp_discriminators():
    d = HingeD().double()
    fused, report = ganx.fuse(d)
    assert not report.entries  # nothing to fuse, nothing silently skipped
    with pytest.raises(ValueError, match="not from a sigmoid"):
        ganx.logits_and_bce(d, nn.BCELoss())
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    # WGAN-GP: the gradient penalty's double backward runs through the (unchanged) model
    gp = torch.autograd.grad(fused(x).sum(), x, create_graph=True)[0].norm()
    gp.backward()


class CallSigmoidD(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 8 * 8, 1))

    def weight_init(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return torch.sigmoid(self.net(x)).view(-1)


@pytest.mark.parametrize("inplace", [False, True])
def test_logits_and_bce_keeps_the_class_for_a_sigmoid_call(inplace):
    d = CallSigmoidD().double()
    ref = CallSigmoidD().double()
    ref.load_state_dict(d.state_dict())
    new, crit, report = ganx.logits_and_bce(d, nn.BCELoss(), inplace=inplace)
    assert type(new) is CallSigmoidD and (new is d) == inplace
    assert "keeps its class (CallSigmoidD)" in report.message
    new.weight_init()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    ref.weight_init()
    torch.testing.assert_close(torch.sigmoid(new(x)), ref(x), **TOL)
    assert new.state_dict().keys() == ref.state_dict().keys()


class TrainBranchSigmoidD(CallSigmoidD):
    def forward(self, x):
        h = self.net(x)
        if self.training:
            h = h * 1.0
        return torch.sigmoid(h).view(-1)


def test_logits_and_bce_refuses_a_mode_dependent_forward():
    with pytest.raises(ValueError, match="differs between train and eval mode"):
        ganx.logits_and_bce(TrainBranchSigmoidD(), nn.BCELoss())


class DropoutBND(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 4, 2, 1), nn.BatchNorm2d(4), nn.LeakyReLU(0.2), nn.Dropout(0.3),
                                 nn.Flatten(), nn.Linear(4 * 8 * 8, 1))

    def forward(self, x):
        return torch.sigmoid(self.net(x))


def test_logits_and_bce_proves_in_the_models_train_mode_without_touching_it():
    d = DropoutBND().double().train()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    new, _, report = ganx.logits_and_bce(d, nn.BCELoss())
    assert "train mode" in report.probe and new.training
    for k, v in d.state_dict().items():
        assert torch.equal(v, before[k]), k


class ModeBranchUp(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        if self.training:
            x = x * 0.5
        return self.conv(F.interpolate(x, scale_factor=2))


@pytest.mark.parametrize("train", [True, False])
def test_functional_upsampling_in_a_mode_dependent_forward_is_left(train):
    m = ModeBranchUp().double().train(train)
    fused, report = ganx.fuse(m)
    assert not report.fused and "differs between train and eval mode" in report.left[0].reason
    fused.train(not train)
    m.train(not train)
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(fused(x), m(x), **TOL)
