"""Generator / Discriminator: shapes, conditioning, fused vs reference layers, errors. The
contract tests run over every architecture of the registry (GENERATORS / DISCRIMINATORS);
the ResNet pair is also checked against functional oracles written here."""
import inspect
import typing

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganx.models import DISCRIMINATORS, GENERATORS, Discriminator, Generator, ResNetDiscriminator, ResNetGenerator
from ganx.models.contract import DiscriminatorArch, DiscriminatorModel, GeneratorArch, GeneratorModel

G_ARCHS = sorted(GENERATORS)
D_ARCHS = sorted(DISCRIMINATORS)


def make_g(arch, **kw):
    return GENERATORS[arch](**{"latent_dim": 8, "image_size": 16, "width": 4, **kw})


def make_d(arch, **kw):
    return DISCRIMINATORS[arch](**{"image_size": 16, "width": 4, **kw})


def test_registry_holds_both_families():
    assert GENERATORS == {"dcgan": Generator, "resnet": ResNetGenerator}
    assert DISCRIMINATORS == {"dcgan": Discriminator, "resnet": ResNetDiscriminator}
    for table in (GENERATORS, DISCRIMINATORS):
        for name, cls in table.items():
            assert cls.arch == name and callable(cls.from_config) and callable(cls.config)


# ---------------------------------------------------------------------------- the contract
# (ganx.models.contract): every registry entry is checked against its Protocols, and the check
# itself must catch a planted break (test_contract_check_catches_a_broken_model).
KINDS = {"generator": (GENERATORS, GeneratorArch, GeneratorModel),
         "discriminator": (DISCRIMINATORS, DiscriminatorArch, DiscriminatorModel)}
ENTRIES = [pytest.param(kind, name, id=f"{kind}-{name}")
           for kind, (table, _, _) in KINDS.items() for name in sorted(table)]
CONDITIONINGS = ((None, None), (10, None), (None, 7))  # (num_classes, embedding_dim)


def _fits(value, hint) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.ClassVar:
        return _fits(value, args[0])
    if origin is typing.Union:
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def _params(fn, drop_first: bool):
    """(name, kind, default) of ``fn``'s parameters (annotations left out: strings here and there)."""
    ps = list(inspect.signature(fn).parameters.values())[1 if drop_first else 0:]
    return [(p.name, p.kind, p.default) for p in ps]


def _plain(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def _module_problems(problems, where, kind, cls, cfg, num_classes, embedding_dim, model_proto) -> None:
    """Adds to ``problems`` what the module ``cls.from_config`` builds for one conditioning does
    not meet of the contract."""
    m = cls.from_config(cfg, num_classes, embedding_dim=embedding_dim)
    if not isinstance(m, model_proto):
        problems.append(f"{where}: the module does not meet {model_proto.__name__}")
        return
    for attr, hint in typing.get_type_hints(model_proto).items():
        if not _fits(getattr(m, attr), hint):
            problems.append(f"{where}: {attr} = {getattr(m, attr)!r} is not {hint}")
    want = {"image_size": 16, "channels": 1, "width": 4, "num_classes": num_classes,
            "embedding_dim": embedding_dim, "conditional": num_classes is not None or embedding_dim is not None}
    if kind == "generator":
        want["latent_dim"] = 8
    got = {k: getattr(m, k) for k in want}
    if got != want:
        problems.append(f"{where}: the module has {got}, the config asked for {want}")
    c = m.config()
    if not (isinstance(c, dict) and all(isinstance(k, str) and _plain(v) for k, v in c.items())):
        problems.append(f"{where}: config() = {c!r} is not a dict of plain values")
        return
    rebuilt = cls(**c)
    if rebuilt.config() != c or rebuilt.state_dict().keys() != m.state_dict().keys():
        problems.append(f"{where}: cls(**m.config()) does not rebuild the module")
    m.eval()
    labels = (torch.arange(2) if num_classes else torch.randn(2, embedding_dim) if embedding_dim else None)
    with torch.no_grad():
        if kind == "generator":
            out, shape = m(torch.randn(2, 8), labels), (2, 1, 16, 16)
            if out.shape == shape and not bool(out.abs().max() <= 1):
                problems.append(f"{where}: the images are not in [-1, 1]")
        else:
            out, shape = m(torch.rand(2, 1, 16, 16) * 2 - 1, labels), (2,)
    if tuple(out.shape) != shape:
        problems.append(f"{where}: the output is {tuple(out.shape)}, not {shape}")


def contract_problems(kind: str, name: str, cls) -> list:
    """What ``cls``, registered as ``name`` among the ``kind``s, does not meet of the contract."""
    _, arch_proto, model_proto = KINDS[kind]
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return [f"{cls!r} is not an nn.Module class"]
    if not isinstance(cls, arch_proto):
        return [f"the class does not meet {arch_proto.__name__}"]
    problems = []
    if cls.arch != name:
        problems.append(f"arch {cls.arch!r} is not its registry name {name!r}")
    # Signatures: the trainer calls from_config(cfg, num_classes, embedding_dim=...), everything
    # calls the module as m(x, labels).
    if _params(cls.from_config, False) != _params(arch_proto.from_config, True):
        problems.append(f"from_config{inspect.signature(cls.from_config)} is not "
                        f"from_config{inspect.signature(arch_proto.from_config)}")
    if _params(cls.forward, True) != _params(model_proto.forward, True):
        problems.append(f"forward{inspect.signature(cls.forward)} is not "
                        f"forward{inspect.signature(model_proto.forward)}")
    if problems:
        return problems
    from ganx.train import TrainConfig

    cfg = TrainConfig(image_size=16, channels=1, latent_dim=8, g_width=4, d_width=4, impl="reference",
                      generator=name if kind == "generator" else "dcgan",
                      discriminator=name if kind == "discriminator" else "dcgan")
    for num_classes, embedding_dim in CONDITIONINGS:
        where = f"num_classes={num_classes}, embedding_dim={embedding_dim}"
        try:
            _module_problems(problems, where, kind, cls, cfg, num_classes, embedding_dim, model_proto)
        except Exception as e:  # noqa: BLE001  (a module that cannot be built or called)
            problems.append(f"{where}: {type(e).__name__}: {e}")
    return problems


@pytest.mark.parametrize("kind,name", ENTRIES)
def test_registry_entries_meet_the_contract(kind, name):
    assert contract_problems(kind, name, KINDS[kind][0][name]) == []


class _NoEmbeddingArg(Generator):  # from_config without embedding_dim
    @classmethod
    def from_config(cls, cfg, num_classes):
        return super().from_config(cfg, num_classes)


class _TextWidth(Discriminator):  # an attribute of the wrong type
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.width = str(self.width)


class _NotConditional(ResNetGenerator):  # says unconditional when it is not
    conditional = False


class _LogitsPerPixel(ResNetDiscriminator):  # (N, 1) instead of (N,)
    def forward(self, x, labels=None):
        return super().forward(x, labels)[:, None]


class _TensorConfig(Discriminator):  # config() not of plain values
    def config(self):
        return {**super().config(), "width": torch.tensor(self.width)}


class _ExtraForwardArg(Generator):  # forward(z, labels, truncation): not the contract's call
    def forward(self, z, labels=None, truncation=1.0):
        return super().forward(z, labels)


@pytest.mark.parametrize("kind,cls,why", [
    ("generator", _NoEmbeddingArg, "from_config"),
    ("discriminator", _TextWidth, "width = '4'"),
    ("generator", _NotConditional, "'conditional': False"),
    ("discriminator", _LogitsPerPixel, "the output is (2, 1)"),
    ("discriminator", _TensorConfig, "not a dict of plain values"),
    ("generator", _ExtraForwardArg, "forward"),
    ("generator", Discriminator, "forward"),  # a discriminator registered as a generator
    ("discriminator", nn.Linear, "does not meet DiscriminatorArch"),
], ids=lambda v: v.__name__.strip("_") if isinstance(v, type) else None)
def test_contract_check_catches_a_broken_model(kind, cls, why):
    name = getattr(cls, "arch", "linear")
    problems = contract_problems(kind, name, cls)
    assert any(why in p for p in problems), problems


@pytest.mark.parametrize("arch", G_ARCHS)
@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_shapes_and_range(arch, size, channels):
    torch.manual_seed(0)
    G = make_g(arch, image_size=size, channels=channels)
    x = G(torch.randn(2, 8))
    assert x.shape == (2, channels, size, size)
    assert x.abs().max() <= 1  # tanh output


@pytest.mark.parametrize("arch", D_ARCHS)
@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_discriminator_shapes(arch, size, channels):
    D = make_d(arch, image_size=size, channels=channels)
    assert D(torch.rand(2, channels, size, size) * 2 - 1).shape == (2,)
    with pytest.raises(ValueError, match=f"x must be \\(N, {channels}, {size}, {size}\\)"):
        D(torch.rand(2, channels, size // 2, size // 2))


@pytest.mark.parametrize("arch", G_ARCHS)
def test_conditional_generator_uses_the_label(arch):
    torch.manual_seed(0)
    G = make_g(arch, num_classes=10)
    if arch == "resnet":  # conditional BN starts as the identity (gain 1, bias 0): make the classes differ
        for m in G.modules():
            if getattr(m, "gain", None) is not None:
                torch.nn.init.normal_(m.gain.weight, 1.0, 0.5)
    G.eval()
    z = torch.randn(1, 8).repeat(2, 1)
    x = G(z, torch.tensor([1, 7]))
    assert not torch.equal(x[0], x[1])
    with pytest.raises(ValueError, match="conditional; pass labels"):
        G(z)


@pytest.mark.parametrize("g_arch,d_arch", list(zip(G_ARCHS, D_ARCHS)))
def test_unconditional_rejects_labels(g_arch, d_arch):
    G = make_g(g_arch)
    with pytest.raises(ValueError, match="unconditional"):
        G(torch.randn(2, 8), torch.tensor([0, 1]))
    D = make_d(d_arch)
    with pytest.raises(ValueError, match="unconditional"):
        D(torch.randn(2, 1, 16, 16), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="conditional; pass labels"):
        make_d(d_arch, num_classes=3)(torch.randn(2, 1, 16, 16))


@pytest.mark.parametrize("arch", D_ARCHS)
def test_projection_discriminator_depends_on_label(arch):
    torch.manual_seed(0)
    D = make_d(arch, num_classes=3)
    x = torch.randn(1, 1, 16, 16).repeat(3, 1, 1, 1)
    out = D(x, torch.tensor([0, 1, 2]))
    assert out.shape == (3,) and len(set(out.tolist())) == 3


def _grads(out, inputs):
    torch.manual_seed(1)
    w = torch.randn_like(out)
    return torch.autograd.grad((out * w).sum(), inputs, allow_unused=True)


def _assert_same(out_a, grads_a, out_b, grads_b, names, **tol):
    torch.testing.assert_close(out_a, out_b, **tol)
    for name, ga, gb in zip(names, grads_a, grads_b):
        assert (ga is None) == (gb is None), name
        if ga is not None:
            torch.testing.assert_close(ga, gb, **tol, msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("arch", G_ARCHS)
@pytest.mark.parametrize("conditional", [True, False, "embedding"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_fused_matches_reference_layers_float64(arch, conditional, train):
    """Same weights, both impls, float64: the fused upsample+conv layers give the pure-PyTorch
    twin's output and every gradient (the latent's and each parameter's), in train mode (batch
    statistics) and in eval mode; class-conditional, unconditional and conditioned on a vector."""
    torch.manual_seed(0)
    emb = conditional == "embedding"
    kw = dict(image_size=32, width=4, num_classes=10 if conditional is True else None, embedding_dim=6 if emb else None)
    Gf = make_g(arch, impl="fused", **kw).double().train(train)
    Gr = make_g(arch, impl="reference", **kw).double().train(train)
    Gr.load_state_dict(Gf.state_dict())
    z = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randn(5, 6, dtype=torch.float64) if emb else (torch.arange(5) if conditional else None)
    names = ["z"] + [n for n, _ in Gf.named_parameters()]
    outs = []
    for G in (Gf, Gr):
        out = G(z, y)
        outs.append((out, _grads(out, [z, *G.parameters()])))
    _assert_same(*outs[0], *outs[1], names, rtol=1e-10, atol=1e-12)


def _sn_modules(D):
    return [m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear, torch.nn.Embedding))]


@pytest.mark.parametrize("arch", D_ARCHS)
def test_spectral_norm_bounds_weights(arch):
    torch.manual_seed(0)
    D = make_d(arch, spectral_norm=True, num_classes=10)
    for _ in range(20):  # power iterations converge in training mode
        D(torch.randn(4, 1, 16, 16), torch.zeros(4, dtype=torch.long))
    mods = _sn_modules(D)
    assert mods and all(hasattr(m, "parametrizations") for m in mods), "spectral norm on every weight"
    for m in mods:
        assert torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2) <= 1.05


def test_resnet_discriminator_has_spectral_norm_by_default():
    from ganx.train import TrainConfig

    D = ResNetDiscriminator(image_size=16, width=4, num_classes=3)
    assert D.spectral_norm and all(hasattr(m, "parametrizations") for m in _sn_modules(D))
    assert len(_sn_modules(D)) == 2 * 3 + 2  # two blocks of three convs, the head, the embedding
    cfg = TrainConfig(discriminator="resnet", image_size=16, d_width=4, channels=1)
    assert cfg.spectral_norm is True and cfg.loss == "hinge"
    assert ResNetDiscriminator.from_config(cfg, 3).spectral_norm
    off = TrainConfig(discriminator="resnet", spectral_norm=False, loss="bce", channels=1, image_size=16, d_width=4)
    assert not ResNetDiscriminator.from_config(off, 3).spectral_norm and off.loss == "bce"
    assert not any(hasattr(m, "parametrizations") for m in _sn_modules(ResNetDiscriminator.from_config(off, 3)))


@pytest.mark.parametrize("g_arch", G_ARCHS)
@pytest.mark.parametrize("d_arch", D_ARCHS)
def test_config_roundtrip(g_arch, d_arch):
    for num_classes, embedding_dim in ((10, None), (None, None), (None, 7)):
        G = make_g(g_arch, num_classes=num_classes, impl="reference", embedding_dim=embedding_dim)
        G2 = GENERATORS[g_arch](**G.config())
        G2.load_state_dict(G.state_dict())
        assert G2.config() == G.config()
        assert G.config().get("embedding_dim") == embedding_dim  # recorded only when set
        assert ("embedding_dim" in G.config()) is (embedding_dim is not None)
        D = make_d(d_arch, num_classes=num_classes and 3, spectral_norm=True, embedding_dim=embedding_dim)
        D2 = DISCRIMINATORS[d_arch](**D.config())
        D2.load_state_dict(D.state_dict())
        assert D2.config() == D.config()


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=24), "image_size must be one of"),
    (dict(image_size=256), "image_size must be one of"),
    (dict(channels=2), "channels must be 1 or 3"),
    (dict(num_classes=1), "num_classes"),
])
@pytest.mark.parametrize("g_arch,d_arch", list(zip(G_ARCHS, D_ARCHS)))
def test_constructor_errors(kwargs, match, g_arch, d_arch):
    G, D = GENERATORS[g_arch], DISCRIMINATORS[d_arch]
    with pytest.raises(ValueError, match=match):
        G(**kwargs)
    with pytest.raises(ValueError, match=match):
        D(**kwargs)
    with pytest.raises(ValueError, match="impl must be"):
        G(impl="cuda")
    if d_arch == "resnet":  # its blocks' conv3x3 -> avgpool2 is fused (ganx.ops.conv2d_avg_pool2d)
        with pytest.raises(ValueError, match="impl must be"):
            D(impl="cuda")
    else:
        with pytest.raises(TypeError, match="impl"):
            D(impl="fused")  # the DCGAN D has no fused layer, so no impl to choose


@pytest.mark.parametrize("g_arch", G_ARCHS)
@pytest.mark.parametrize("d_arch", D_ARCHS)
def test_registry_builds_by_name(g_arch, d_arch):
    from ganx.models import build_discriminator, build_generator
    from ganx.train import TrainConfig

    cfg = TrainConfig(image_size=16, channels=1, latent_dim=8, g_width=4, d_width=4, spectral_norm=True,
                      impl="reference", generator=g_arch, discriminator=d_arch)
    G = GENERATORS[cfg.generator].from_config(cfg, 10)
    D = DISCRIMINATORS[cfg.discriminator].from_config(cfg, 10)
    assert (type(G).arch, type(D).arch) == (g_arch, d_arch)
    assert (G.latent_dim, G.width, G.num_classes, G.impl) == (8, 4, 10, "reference")
    assert (D.width, D.spectral_norm, D.minibatch_std) == (4, True, 4)
    G2 = build_generator(G.arch, G.config())
    G2.load_state_dict(G.state_dict())
    build_discriminator(D.arch, D.config()).load_state_dict(D.state_dict())
    with pytest.raises(ValueError, match="unknown generator architecture 'stylegan'; known: dcgan, resnet"):
        build_generator("stylegan", {})
    with pytest.raises(ValueError, match="unknown discriminator architecture"):
        build_discriminator("nope", {})


@pytest.mark.parametrize("arch", D_ARCHS)
@pytest.mark.parametrize("sn", [False, True])
@pytest.mark.parametrize("cond", ["class", "embedding"])
def test_one_pass_over_real_and_fake_equals_two(arch, sn, cond):
    """The trainer sends cat([real, fake]) through D once; minibatch-std groups must not mix them
    (nor any other layer: no BatchNorm in a D). With spectral norm each pass runs a power
    iteration, so every pass starts from the same state."""
    torch.manual_seed(0)
    if cond == "class":
        D = make_d(arch, num_classes=10, minibatch_std=4, spectral_norm=sn)
        y = torch.randint(0, 10, (12,))
    else:
        D = make_d(arch, embedding_dim=5, minibatch_std=4, spectral_norm=sn)
        y = torch.randn(12, 5)
    state = {k: v.clone() for k, v in D.state_dict().items()}
    real, fake = torch.randn(12, 1, 16, 16), torch.randn(12, 1, 16, 16)
    both = D(torch.cat([real, fake]), torch.cat([y, y]))
    D.load_state_dict(state)
    first = D(real, y)
    D.load_state_dict(state)
    torch.testing.assert_close(both, torch.cat([first, D(fake, y)]))


def test_minibatch_std_sees_collapse():
    from ganx.models.discriminator import MinibatchStd

    same = torch.randn(1, 2, 4, 4).repeat(8, 1, 1, 1)
    assert MinibatchStd(4)(same)[:, -1].max() < 1e-3
    assert MinibatchStd(4)(torch.randn(8, 2, 4, 4))[:, -1].min() > 0.3
    assert MinibatchStd(4)(torch.randn(6, 2, 4, 4)).shape == (6, 3, 4, 4)  # group size falls back to 3


@pytest.mark.parametrize("n,group", [(8, 4), (6, 4), (5, 2)])
def test_minibatch_std_matches_its_definition_float64(n, group):
    """Karras et al.'s statistic with torch's own biased variance, forward and gradient."""
    from ganx.models.discriminator import MinibatchStd

    x = torch.randn(n, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    g = next(d for d in range(min(group, n), 0, -1) if n % d == 0)
    std = (x.view(n // g, g, 3, 4, 4).var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))
    want = torch.cat([x, std.repeat_interleave(g).view(n, 1, 1, 1).expand(n, 1, 4, 4)], dim=1)
    got = MinibatchStd(group)(x)
    w = torch.randn_like(want)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad((got * w).sum(), x)[0], torch.autograd.grad((want * w).sum(), x)[0],
                               rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------- the ResNet pair against oracles

def _up(t):
    return F.interpolate(t, scale_factor=2, mode="nearest")


def resnet_g_oracle(G, z, y):
    """SNGAN's ResNet generator written out with functional PyTorch from G's parameters (batch
    statistics, as in training): Linear -> blocks of BN-ReLU-up-conv3x3-BN-ReLU-conv3x3 plus the
    up-conv1x1 shortcut (class-conditional BN gains and biases) -> BN-ReLU-conv3x3-tanh."""
    def bn(m, x):
        xh = F.batch_norm(x, None, None, training=True, eps=m.bn.eps)
        if m.gain is None:
            return xh * m.bn.weight[:, None, None] + m.bn.bias[:, None, None]
        return xh * m.gain.weight[y][:, :, None, None] + m.bias.weight[y][:, :, None, None]

    h = F.linear(z, G.project.weight, G.project.bias).view(z.shape[0], -1, 4, 4)
    for b in G.blocks:
        r = F.conv2d(_up(F.relu(bn(b.bn1, h))), b.conv1.weight, b.conv1.bias, padding=1)
        r = F.conv2d(F.relu(bn(b.bn2, r)), b.conv2.weight, b.conv2.bias, padding=1)
        h = r + F.conv2d(_up(h), b.shortcut.weight, b.shortcut.bias)
    h = F.relu(F.batch_norm(h, None, None, G.bn.weight, G.bn.bias, training=True, eps=G.bn.eps))
    return torch.tanh(F.conv2d(h, G.to_image.weight, G.to_image.bias, padding=1))


def resnet_d_oracle(D, x, y):
    """SNGAN's ResNet discriminator written out from D's (spectrally normalised) weights: blocks of
    [ReLU]-conv3x3-ReLU-conv3x3-avgpool plus the conv1x1-then-avgpool shortcut (SNGAN's order),
    ReLU, sum over pixels, linear, plus the projection <embed(y), h>."""
    h = x
    for i, b in enumerate(D.blocks):
        r = F.conv2d(h if i == 0 else F.relu(h), b.conv1.weight, b.conv1.bias, padding=1)
        r = F.avg_pool2d(F.conv2d(F.relu(r), b.conv2.weight, b.conv2.bias, padding=1), 2)
        h = r + F.avg_pool2d(F.conv2d(h, b.shortcut.weight, b.shortcut.bias), 2)
    if D.mbstd is not None:
        h = D.mbstd(h)
    h = F.relu(h).sum(dim=(2, 3))
    out = F.linear(h, D.head.weight, D.head.bias).squeeze(1)
    if y is not None:
        out = out + (D.embed.weight[y] * h).sum(1)
    return out


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("size", [16, 32])
def test_resnet_generator_matches_its_oracle_float64(impl, conditional, size):
    torch.manual_seed(0)
    G = ResNetGenerator(latent_dim=8, image_size=size, width=4, num_classes=10 if conditional else None,
                        impl=impl).double().train()
    for m in G.modules():  # make every BN gain and bias matter
        if isinstance(m, torch.nn.Embedding):
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
        elif isinstance(m, torch.nn.BatchNorm2d) and m.affine:
            torch.nn.init.normal_(m.weight, 1.0, 0.3)
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    z = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 3, 9, 1, 0]) if conditional else None
    params = [z, *G.parameters()]
    names = ["z"] + [n for n, _ in G.named_parameters()]
    out = G(z, y)
    ref = resnet_g_oracle(G, z, y)
    _assert_same(out, _grads(out, params), ref, _grads(ref, params), names, rtol=1e-10, atol=1e-12)
    # channels halve from width * 2**(blocks-1) at 4x4, the last block keeps width
    n = size.bit_length() - 3
    assert [b.conv1.out_channels for b in G.blocks] == [4 * 2 ** max(n - 2 - i, 0) for i in range(n)]
    assert G.blocks[0].conv1.in_channels == 4 * 2 ** (n - 1)


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("conditional", [True, False])
@pytest.mark.parametrize("mbstd", [0, 4])
@pytest.mark.parametrize("size", [16, 32])
def test_resnet_discriminator_matches_its_oracle_float64(impl, conditional, mbstd, size):
    torch.manual_seed(0)
    D = ResNetDiscriminator(image_size=size, width=4, num_classes=3 if conditional else None,
                            minibatch_std=mbstd, impl=impl).double()
    for _ in range(3):
        D(torch.randn(8, 1, size, size, dtype=torch.float64), torch.zeros(8, dtype=torch.long) if conditional else None)
    D.eval()  # no power iteration: both sides see the same normalised weights
    for m in D.modules():
        if getattr(m, "bias", None) is not None and isinstance(m.bias, torch.nn.Parameter):
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    x = torch.randn(8, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 0, 1]) if conditional else None
    params = [x, *D.parameters()]
    names = ["x"] + [n for n, _ in D.named_parameters()]
    out = D(x, y)
    ref = resnet_d_oracle(D, x, y)
    _assert_same(out, _grads(out, params), ref, _grads(ref, params), names, rtol=1e-10, atol=1e-12)
    assert [b.conv2.out_channels for b in D.blocks] == [4 * 2 ** i for i in range(size.bit_length() - 3)]


def test_conditional_batch_norm():
    from ganx.models.resnet import ConditionalBatchNorm2d

    torch.manual_seed(0)
    bn = ConditionalBatchNorm2d(3, num_classes=4).double()
    torch.nn.init.normal_(bn.gain.weight)
    torch.nn.init.normal_(bn.bias.weight)
    x, y = torch.randn(5, 3, 2, 2, dtype=torch.float64), torch.tensor([0, 3, 1, 3, 2])
    mean, var = x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    want = (x - mean) / (var + 1e-5).sqrt() * bn.gain.weight[y][:, :, None, None] + bn.bias.weight[y][:, :, None, None]
    torch.testing.assert_close(bn(x, y), want)
    fresh = ConditionalBatchNorm2d(3, num_classes=4)
    assert torch.equal(fresh.gain.weight, torch.ones(4, 3)) and torch.equal(fresh.bias.weight, torch.zeros(4, 3))
    plain = ConditionalBatchNorm2d(3)
    assert plain.bn.affine and plain.gain is None
