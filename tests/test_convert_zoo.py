"""ganx.fuse on generators written in the styles of public GAN code, compared in float64.

The models are written here from descriptions of common styles (none is copied): BatchNorm
with an unusual eps right after the convolution and LeakyReLU(inplace=True); a conditional
generator that multiplies a label embedding into the noise; a U-Net generator with
ConvTranspose2d(4, 2, 1) + InstanceNorm and skip connections; coupled generators with a
shared trunk whose last Upsample feeds the first Conv2d of two heads (a module boundary).
Float64 because in float32 a LeakyReLU kink flipped by one rounding moves a whole gradient
by ~1e-3, which makes float32 comparisons of deep models noise.
"""
import pytest
import torch
from torch import nn

import ganx

TOL = dict(atol=1e-10, rtol=1e-9)


class BlockStyleG(nn.Module):
    """Linear to a 128 x s x s map, then BatchNorm, (Upsample, Conv, BatchNorm(eps=0.8), LeakyReLU
    in place) twice, a last Conv2d and Tanh; the map is reshaped with view(out.shape[0], ...)."""

    def __init__(self, nz=12, img=16, ch=3, w=8):
        super().__init__()
        self.s, self.w = img // 4, w
        self.l1 = nn.Sequential(nn.Linear(nz, 2 * w * self.s * self.s))
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(2 * w),
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * w, 2 * w, 3, stride=1, padding=1),
            nn.BatchNorm2d(2 * w, 0.8), nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * w, w, 3, stride=1, padding=1),
            nn.BatchNorm2d(w, 0.8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(w, ch, 3, stride=1, padding=1), nn.Tanh())

    def forward(self, z):
        out = self.l1(z)
        out = out.view(out.shape[0], 2 * self.w, self.s, self.s)
        return self.conv_blocks(out)


class LabelTimesNoiseG(BlockStyleG):
    """Conditional: the label embedding multiplies the noise before the first layer."""

    def __init__(self, n_classes=5, nz=12, **kw):
        super().__init__(nz=nz, **kw)
        self.label_emb = nn.Embedding(n_classes, nz)

    def forward(self, noise, labels):
        return super().forward(torch.mul(self.label_emb(labels), noise))


class Down(nn.Module):
    def __init__(self, cin, cout, norm=True):
        super().__init__()
        layers = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
        if norm:
            layers.append(nn.InstanceNorm2d(cout))
        layers.append(nn.LeakyReLU(0.2))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class Up(nn.Module):
    """ConvTranspose2d(4, 2, 1) + InstanceNorm + ReLU(inplace), then concatenated with the skip."""

    def __init__(self, cin, cout):
        super().__init__()
        self.model = nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.InstanceNorm2d(cout),
                                   nn.ReLU(inplace=True))

    def forward(self, x, skip):
        return torch.cat((self.model(x), skip), 1)


class UNetG(nn.Module):
    def __init__(self, cin=3, cout=3, w=4):
        super().__init__()
        self.down1 = Down(cin, w, norm=False)
        self.down2 = Down(w, 2 * w)
        self.down3 = Down(2 * w, 4 * w)
        self.down4 = Down(4 * w, 4 * w, norm=False)
        self.up1 = Up(4 * w, 4 * w)
        self.up2 = Up(8 * w, 2 * w)
        self.up3 = Up(4 * w, w)
        # the last stage of the common pix2pix-style U-Net: Upsample, ZeroPad2d, 4x4 Conv2d, Tanh
        self.final = nn.Sequential(nn.Upsample(scale_factor=2), nn.ZeroPad2d((1, 0, 1, 0)),
                                   nn.Conv2d(2 * w, cout, 4, padding=1), nn.Tanh())

    def forward(self, x):
        d1 = self.down1(x)
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        d4 = self.down4(d3)
        u1 = self.up1(d4, d3)
        u2 = self.up2(u1, d2)
        u3 = self.up3(u2, d1)
        return self.final(u3)


class UNetPlainUpG(nn.Module):
    """A U-Net whose decoder stage is a bare ConvTranspose2d(4, 2, 1) + LeakyReLU(inplace) in a
    hand-written forward: the activation joins the fused layer across the forward code."""

    def __init__(self, w=4):
        super().__init__()
        self.enc = nn.Conv2d(3, w, 4, 2, 1)
        self.dec = nn.ConvTranspose2d(w, w, 4, 2, 1)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.out = nn.Conv2d(w + 3, 3, 3, padding=1)

    def forward(self, x):
        h = self.act(self.dec(self.enc(x)))
        return self.out(torch.cat([h, x], 1))


class CoupledG(nn.Module):
    """Coupled generators: a shared trunk ending in an Upsample feeds two heads whose first
    layer is a Conv2d (the Upsample/Conv2d pair crosses a Sequential boundary, twice)."""

    def __init__(self, nz=12, img=16, ch=1, w=8):
        super().__init__()
        self.s, self.w = img // 4, w
        self.fc = nn.Sequential(nn.Linear(nz, 2 * w * self.s * self.s))
        self.shared = nn.Sequential(nn.BatchNorm2d(2 * w), nn.Upsample(scale_factor=2),
                                    nn.Conv2d(2 * w, 2 * w, 3, 1, 1), nn.BatchNorm2d(2 * w, 0.8),
                                    nn.LeakyReLU(0.2, inplace=True), nn.Upsample(scale_factor=2))
        self.G1 = nn.Sequential(nn.Conv2d(2 * w, w, 3, 1, 1), nn.BatchNorm2d(w, 0.8), nn.LeakyReLU(0.2, inplace=True),
                                nn.Conv2d(w, ch, 3, 1, 1), nn.Tanh())
        self.G2 = nn.Sequential(nn.Conv2d(2 * w, w, 3, 1, 1), nn.BatchNorm2d(w, 0.8), nn.LeakyReLU(0.2, inplace=True),
                                nn.Conv2d(w, ch, 3, 1, 1), nn.Tanh())

    def forward(self, z):
        out = self.fc(z).view(z.shape[0], 2 * self.w, self.s, self.s)
        emb = self.shared(out)
        return self.G1(emb), self.G2(emb)


class CoupledReLUHeadG(nn.Module):
    """A trunk ending in Upsample whose one consumer is a head starting with Conv2d + ReLU (the
    activation joins across the boundary too)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.Upsample(scale_factor=2))
        self.head = nn.Sequential(nn.Conv2d(6, 3, 5, padding=2), nn.ReLU())

    def forward(self, x):
        return self.head(self.trunk(x))


def _outputs(out):
    return out if isinstance(out, tuple) else (out,)


def _compare64(orig, fused, *inputs):
    """Outputs and every parameter gradient equal in float64; the same state_dict keys."""
    outs_o, outs_f = _outputs(orig(*inputs)), _outputs(fused(*inputs))
    assert len(outs_o) == len(outs_f)
    gs = [torch.randn_like(o) for o in outs_o]
    for o, f in zip(outs_o, outs_f):
        torch.testing.assert_close(f, o, **TOL)
    torch.autograd.backward(outs_o, gs)
    torch.autograd.backward(outs_f, gs)
    po, pf = dict(orig.named_parameters()), dict(fused.named_parameters())
    assert po.keys() == pf.keys()
    for k in po:
        torch.testing.assert_close(pf[k].grad, po[k].grad, **TOL, msg=lambda m: f"{k}: {m}")
    assert orig.state_dict().keys() == fused.state_dict().keys()
    for k, v in orig.state_dict().items():  # running statistics moved the same way in train mode
        torch.testing.assert_close(fused.state_dict()[k], v, **TOL)


def _pair(model, train, **kw):
    g = model.double().train(train)
    fused, report = ganx.fuse(g, **kw)
    assert fused.training == train
    return g, fused, report


@pytest.mark.parametrize("train", [True, False])
def test_block_style_batchnorm_eps_leaky_inplace(train):
    g, fused, report = _pair(BlockStyleG(), train)
    assert report.method == "torch.fx graph"
    assert [e.path for e in report.fused] == ["conv_blocks.2", "conv_blocks.6"]
    # BatchNorm(eps=0.8) sits between the conv and the LeakyReLU: no activation joins, eps is kept
    assert all(e.what == "Upsample(x2) + Conv2d(3x3) -> UpsampleConv2d" for e in report.fused)
    assert fused.conv_blocks[3].eps == 0.8 and isinstance(fused.conv_blocks[4], nn.LeakyReLU)
    _compare64(g, fused, torch.randn(5, 12, dtype=torch.float64))


@pytest.mark.parametrize("train", [True, False])
def test_conditional_label_times_noise(train):
    g, fused, report = _pair(LabelTimesNoiseG(), train)
    assert len(report.fused) == 2 and isinstance(fused, LabelTimesNoiseG)
    z, y = torch.randn(6, 12, dtype=torch.float64), torch.randint(0, 5, (6,))
    _compare64(g, fused, z, y)


@pytest.mark.parametrize("train", [True, False])
def test_unet_convtranspose_instancenorm_skips(train):
    g, fused, report = _pair(UNetG(), train, where_slower="fuse")
    assert sorted(e.path for e in report.fused) == ["up1.model.0", "up2.model.0", "up3.model.0"]
    # InstanceNorm sits between each ConvTranspose2d and its ReLU: no epilogue joins
    assert all(m.activation is None for m in fused.modules() if isinstance(m, ganx.nn.FusedConvTranspose2d))
    final = [e for e in report.left if e.path == "final.0"]
    assert final and "ZeroPad2d" in final[0].reason  # Upsample -> ZeroPad2d -> Conv2d(4): left, and why
    _compare64(g, fused, torch.randn(2, 3, 16, 16, dtype=torch.float64))
    # on the CPU by default the ConvTranspose2d(4, 2, 1) layers are left, each with the reason
    _, auto, rep = _pair(UNetG(), train)
    assert not rep.fused and sum("oneDNN" in e.reason for e in rep.left) == 3


def test_unet_plain_convtranspose_joins_inplace_leaky_relu():
    g, fused, report = _pair(UNetPlainUpG(), True, where_slower="fuse")
    assert [e.what for e in report.fused] == ["ConvTranspose2d(4, 2, 1) + LeakyReLU -> FusedConvTranspose2d"]
    assert fused.dec.activation == "leaky_relu" and fused.dec.negative_slope == 0.1
    assert isinstance(fused.act, nn.Identity)
    _compare64(g, fused, torch.randn(3, 3, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("train", [True, False])
def test_coupled_shared_trunk_across_module_boundary(train):
    g, fused, report = _pair(CoupledG(), train)
    paths = [e.path for e in report.fused]
    # the trunk's own pair, and its last Upsample fused into the first Conv2d of *both* heads
    assert paths == ["shared.2", "G1.0", "G2.0"], paths
    assert isinstance(fused.shared[5], nn.Identity)
    assert isinstance(fused.G1[0], ganx.nn.UpsampleConv2d) and isinstance(fused.G2[0], ganx.nn.UpsampleConv2d)
    _compare64(g, fused, torch.randn(4, 12, dtype=torch.float64))
    # the module walk (a model that does not trace) cannot see the cross-boundary pairs, and says so
    walked, rep = ganx.fuse(g, trace=False)
    assert [e.path for e in rep.fused] == ["shared.2"]
    assert any(e.path == "shared.5" and "last in its nn.Sequential" in e.reason for e in rep.left)


def test_activation_joins_across_boundary():
    g, fused, report = _pair(CoupledReLUHeadG(), True)
    assert [e.what for e in report.fused] == ["Upsample(x2) + Conv2d(5x5) + ReLU -> UpsampleConv2d"]
    assert isinstance(fused.head[1], nn.Identity) and fused.head[0].activation == "relu"
    _compare64(g, fused, torch.randn(2, 4, 5, 7, dtype=torch.float64))


def test_state_dict_both_ways_across_boundary():
    g = CoupledG().double()
    fused, _ = ganx.fuse(g)
    fresh = CoupledG().double()
    fresh.load_state_dict(fused.state_dict())          # fused -> original
    fused2, _ = ganx.fuse(CoupledG().double())
    fused2.load_state_dict(g.state_dict())             # original -> fused
    z = torch.randn(3, 12, dtype=torch.float64)
    for m in (g, fresh, fused2):
        m.eval()
    for a, b in zip(fresh(z), g(z)):
        torch.testing.assert_close(a, b, **TOL)
    for a, b in zip(fused2(z), g(z)):
        torch.testing.assert_close(a, b, **TOL)


class TwiceUsedUpsample(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2)
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        u = self.up(x)
        return self.conv(u) + u  # the upsampled map is also a skip: it must be built


class SharedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2)
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(self.up(x)))  # one conv module, two calls


class FunctionalUp(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        return self.conv(nn.functional.interpolate(x, scale_factor=2))


@pytest.mark.parametrize("model,needle", [
    (TwiceUsedUpsample, "also goes to"),
    (SharedConv, "called 2 times"),
])
def test_candidates_left_alone_are_reported(model, needle):
    m = model().double()
    fused, report = ganx.fuse(m)
    assert not report.fused
    assert any(needle in e.reason for e in report.left), str(report)
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(fused(x), m(x), **TOL)


def test_functional_interpolate_is_fused():
    m = FunctionalUp().double()
    fused, report = ganx.fuse(m)
    assert [e.what for e in report.fused] == ["F.interpolate(x2) + Conv2d(3x3) -> UpsampleConv2d"]
    assert type(fused) is FunctionalUp and isinstance(fused.conv, ganx.nn.UpsampleConv2d)
    _compare64(m, fused, torch.randn(2, 2, 3, 3, dtype=torch.float64))


@pytest.mark.parametrize("train", [True, False])
def test_hook_spectral_norm_conv_is_fused_with_its_power_iteration(train):
    seq = nn.Sequential(nn.Upsample(scale_factor=2), nn.utils.spectral_norm(nn.Conv2d(2, 2, 3, padding=1)),
                        nn.ReLU()).double().train(train)
    fused, report = ganx.fuse(seq)
    assert [e.what for e in report.fused] == [
        "Upsample(x2) + Conv2d(3x3) + ReLU -> fused forward (the layer computes its weight)"]
    for _ in range(2):  # the power iteration moves weight_u the same way on each training call
        _compare64(seq, fused, torch.randn(2, 2, 4, 4, dtype=torch.float64))


class Untraceable(nn.Module):
    """A forward that branches on a tensor's value does not trace: fuse walks the modules."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(2, 3, 3, padding=1), nn.Tanh())

    def forward(self, x):
        if x.sum() > 1e9:
            x = x * 0
        return self.body(x)


def test_untraceable_model_falls_back_to_module_walk():
    m = Untraceable().double()
    fused, report = ganx.fuse(m)
    assert report.method.startswith("module walk; the model does not trace")
    assert [e.what for e in report.fused] == ["Upsample(x2) + Conv2d(3x3) + Tanh -> UpsampleConv2d"]
    _compare64(m, fused, torch.randn(2, 2, 4, 4, dtype=torch.float64))
