"""Generator / Discriminator: shapes, conditioning, fused vs reference layers, errors."""
import pytest
import torch

from ganx.models import Discriminator, Generator


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_and_range(size, channels):
    torch.manual_seed(0)
    G = Generator(latent_dim=8, image_size=size, channels=channels, width=4)
    D = Discriminator(image_size=size, channels=channels, width=4)
    x = G(torch.randn(2, 8))
    assert x.shape == (2, channels, size, size)
    assert x.abs().max() <= 1  # tanh output
    assert D(x).shape == (2,)


def test_conditional_generator_uses_the_label():
    torch.manual_seed(0)
    G = Generator(latent_dim=8, image_size=16, width=4, num_classes=10).eval()
    z = torch.randn(1, 8).repeat(2, 1)
    x = G(z, torch.tensor([1, 7]))
    assert not torch.equal(x[0], x[1])
    with pytest.raises(ValueError, match="conditional; pass labels"):
        G(z)


def test_unconditional_rejects_labels():
    G = Generator(latent_dim=8, image_size=16, width=4)
    with pytest.raises(ValueError, match="unconditional"):
        G(torch.randn(2, 8), torch.tensor([0, 1]))
    D = Discriminator(image_size=16, width=4)
    with pytest.raises(ValueError, match="unconditional"):
        D(torch.randn(2, 1, 16, 16), torch.tensor([0, 1]))


def test_projection_discriminator_depends_on_label():
    torch.manual_seed(0)
    D = Discriminator(image_size=16, width=4, num_classes=3)
    x = torch.randn(1, 1, 16, 16).repeat(3, 1, 1, 1)
    out = D(x, torch.tensor([0, 1, 2]))
    assert out.shape == (3,) and len(set(out.tolist())) == 3


def test_fused_matches_reference_layers():
    """Same weights, both impls: the fused upsample+conv must give the reference's output."""
    torch.manual_seed(0)
    Gf = Generator(latent_dim=8, image_size=32, width=4, num_classes=10, impl="fused").eval()
    Gr = Generator(latent_dim=8, image_size=32, width=4, num_classes=10, impl="reference").eval()
    Gr.load_state_dict(Gf.state_dict())
    z, y = torch.randn(5, 8), torch.arange(5)
    torch.testing.assert_close(Gf(z, y), Gr(z, y), rtol=1e-4, atol=1e-5)


def test_spectral_norm_bounds_weights():
    torch.manual_seed(0)
    D = Discriminator(image_size=16, width=4, spectral_norm=True, num_classes=10)
    for _ in range(20):  # power iterations converge in training mode
        D(torch.randn(4, 1, 16, 16), torch.zeros(4, dtype=torch.long))
    w = D.features[0].weight
    assert torch.linalg.matrix_norm(w.flatten(1), ord=2) <= 1.05


def test_config_roundtrip():
    G = Generator(latent_dim=8, image_size=16, width=4, num_classes=10, impl="reference")
    G2 = Generator(**G.config())
    G2.load_state_dict(G.state_dict())
    D = Discriminator(image_size=16, width=4, num_classes=3, spectral_norm=True)
    Discriminator(**D.config()).load_state_dict(D.state_dict())


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=24), "image_size must be one of"),
    (dict(channels=2), "channels must be 1 or 3"),
    (dict(num_classes=1), "num_classes"),
])
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Generator(**kwargs)
    with pytest.raises(ValueError, match=match):
        Discriminator(**kwargs)
    with pytest.raises(ValueError, match="impl must be"):
        Generator(impl="cuda")
    with pytest.raises(TypeError, match="impl"):
        Discriminator(impl="fused")  # D has no fused layer, so no impl to choose


def test_registry_builds_by_name():
    from ganx.models import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator
    from ganx.train import TrainConfig

    assert GENERATORS["dcgan"] is Generator and DISCRIMINATORS["dcgan"] is Discriminator
    cfg = TrainConfig(image_size=16, channels=1, latent_dim=8, g_width=4, d_width=4, spectral_norm=True,
                      impl="reference")
    G = GENERATORS[cfg.generator].from_config(cfg, 10)
    D = DISCRIMINATORS[cfg.discriminator].from_config(cfg, 10)
    assert (G.latent_dim, G.width, G.num_classes, G.impl) == (8, 4, 10, "reference")
    assert (D.width, D.spectral_norm, D.minibatch_std) == (4, True, 4)
    G2 = build_generator(G.arch, G.config())
    G2.load_state_dict(G.state_dict())
    build_discriminator(D.arch, D.config()).load_state_dict(D.state_dict())
    with pytest.raises(ValueError, match="unknown generator architecture 'stylegan'; known: dcgan"):
        build_generator("stylegan", {})
    with pytest.raises(ValueError, match="unknown discriminator architecture"):
        build_discriminator("nope", {})


def test_one_pass_over_real_and_fake_equals_two():
    """The trainer sends cat([real, fake]) through D once; minibatch-std groups must not mix them."""
    torch.manual_seed(0)
    D = Discriminator(image_size=16, width=4, num_classes=10, minibatch_std=4)
    real, fake = torch.randn(12, 1, 16, 16), torch.randn(12, 1, 16, 16)
    y = torch.randint(0, 10, (12,))
    both = D(torch.cat([real, fake]), torch.cat([y, y]))
    torch.testing.assert_close(both, torch.cat([D(real, y), D(fake, y)]))


def test_minibatch_std_sees_collapse():
    from ganx.models.discriminator import MinibatchStd

    same = torch.randn(1, 2, 4, 4).repeat(8, 1, 1, 1)
    assert MinibatchStd(4)(same)[:, -1].max() < 1e-3
    assert MinibatchStd(4)(torch.randn(8, 2, 4, 4))[:, -1].min() > 0.3
    assert MinibatchStd(4)(torch.randn(6, 2, 4, 4)).shape == (6, 3, 4, 4)  # group size falls back to 3
