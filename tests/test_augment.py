"""DiffAugment (ganx.train.augment): each transformation against a per-image loop written the
plain way, differentiability (float64 gradcheck), the policy parsing, and how the trainer
applies it (real and fake alike, in D's and G's updates; off by default, and then inert)."""
import pytest
import torch

from ganx.data import load_digits_dataset
from ganx.train import ConfigError, Trainer, TrainConfig
from ganx.train import augment as A

ALL = "color,translation,cutout"


def loop_reference(x, p):
    """The augmentation of each image, one image at a time, with explicit pixel loops for the
    geometric parts: the definitions in ganx/train/augment.py's docstring."""
    out = []
    n, c, h, w = x.shape
    _, _, ch, cw = A._sizes(h, w)
    for i in range(n):
        img = x[i].clone()
        if "brightness" in p:
            img = img + float(p["brightness"][i])
            m = img.mean(dim=0, keepdim=True)
            img = (img - m) * float(p["saturation"][i]) + m
            m = img.mean()
            img = (img - m) * float(p["contrast"][i]) + m
        if "shift" in p:
            dy, dx = (int(v) for v in p["shift"][i])
            moved = torch.zeros_like(img)
            for r in range(h):
                for q in range(w):
                    if 0 <= r - dy < h and 0 <= q - dx < w:
                        moved[:, r, q] = img[:, r - dy, q - dx]
            img = moved
        if "cutout" in p:
            y0, x0 = (int(v) for v in p["cutout"][i])
            for r in range(max(y0, 0), min(y0 + ch, h)):
                for q in range(max(x0, 0), min(x0 + cw, w)):
                    img[:, r, q] = 0
        out.append(img)
    return torch.stack(out)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", ALL])
@pytest.mark.parametrize("shape", [(6, 1, 16, 16), (5, 3, 32, 32), (4, 3, 9, 14)])
def test_matches_the_per_image_loop(policy, shape):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(*shape, dtype=torch.float64) * 2 - 1
    p = A.draw_params(policy, shape[0], shape[2], shape[3], g)
    torch.testing.assert_close(A.apply_params(x, p), loop_reference(x, p), rtol=1e-12, atol=1e-12)


def test_each_draw_is_its_own_and_in_range():
    g = torch.Generator().manual_seed(0)
    p = A.draw_params(ALL, 256, 32, 32, g)
    assert set(p) == {"brightness", "saturation", "contrast", "shift", "cutout"}
    assert p["brightness"].min() >= -0.5 and p["brightness"].max() < 0.5
    assert p["saturation"].min() >= 0 and p["saturation"].max() < 2
    assert p["contrast"].min() >= 0.5 and p["contrast"].max() < 1.5
    assert p["shift"].abs().max() == 4  # round(32 / 8), reached in 256 draws
    assert len(set(map(tuple, p["shift"].tolist()))) > 30  # per image, not one draw for the batch
    assert p["cutout"].min() >= -8 and p["cutout"].max() <= 31 - 8
    # the policy's spelling does not change the draws
    assert all(torch.equal(a, b) for a, b in zip(
        A.draw_params("cutout, translation ,COLOR", 8, 16, 16, torch.Generator().manual_seed(1)).values(),
        A.draw_params(ALL, 8, 16, 16, torch.Generator().manual_seed(1)).values()))


def test_geometry():
    x = torch.arange(1.0, 65.0).view(1, 1, 8, 8)
    shifted = A.apply_params(x, {"shift": torch.tensor([[1, -2]])})
    assert torch.equal(shifted[0, 0, 1:, :6], x[0, 0, :7, 2:]) and shifted[0, 0, 0].abs().sum() == 0
    assert shifted[0, 0, :, 6:].abs().sum() == 0
    assert torch.equal(A.apply_params(x, {"shift": torch.tensor([[0, 0]])}), x)
    cut = A.apply_params(x, {"cutout": torch.tensor([[2, -2]])})  # a 4x4 square, half off the left edge
    assert (cut == 0).sum() == 8 and torch.equal(cut[0, 0, 2:6, :2], torch.zeros(4, 2))
    gray = torch.rand(3, 1, 8, 8)  # saturation has nothing to act on in one channel
    p = {"brightness": torch.zeros(3, dtype=torch.float64), "saturation": torch.tensor([0.0, 1.5, 2.0]),
         "contrast": torch.ones(3, dtype=torch.float64)}
    torch.testing.assert_close(A.apply_params(gray, p), gray)


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", ALL])
def test_differentiable_gradcheck(policy):
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    p = A.draw_params(policy, 3, 8, 8, torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(lambda t: A.apply_params(t, p), (x,))
    assert torch.autograd.gradgradcheck(lambda t: A.apply_params(t, p), (x,))  # R1 differentiates through it


def test_policy_parsing_and_config():
    assert A.parse_policy("cutout, Translation") == "translation,cutout"
    assert A.parse_policy("") == A.parse_policy("none") == A.parse_policy(None) == ""
    with pytest.raises(ValueError, match="unknown augmentation 'blur'"):
        A.parse_policy("translation,blur")
    assert TrainConfig().augment == "", "DiffAugment must be off by default"
    assert TrainConfig(augment="color , cutout").augment == "color,cutout"
    with pytest.raises(ConfigError, match="--augment / config key 'augment': unknown augmentation 'flip'"):
        TrainConfig(augment="flip")
    assert not A.DiffAugment("") and A.DiffAugment("cutout")
    x = torch.rand(2, 1, 8, 8)
    assert A.DiffAugment("")(x) is x


def _trainer(tmp_path, **kw):
    base = dict(image_size=16, latent_dim=8, g_width=8, d_width=8, batch_size=16, steps=3, log_every=1,
                progress=False, metrics=False, sample_every=0, device="cpu", out=str(tmp_path / "run"),
                impl="reference")
    return Trainer(TrainConfig(**{**base, **kw}), dataset=load_digits_dataset(16)._subset(torch.arange(64)))


@pytest.mark.parametrize("archs", [("dcgan", "dcgan"), ("resnet", "resnet")], ids="-".join)
def test_trainer_augments_real_and_fake_in_both_updates(tmp_path, monkeypatch, archs):
    calls = []
    real_call = A.DiffAugment.__call__

    def spy(self, x):
        out = real_call(self, x)
        calls.append((x.detach().clone(), out.detach().clone(), x.requires_grad))
        return out

    monkeypatch.setattr(A.DiffAugment, "__call__", spy)
    t = _trainer(tmp_path, augment="translation,cutout", generator=archs[0], discriminator=archs[1])
    real, labels, _ = t.data.next()
    t.d_step(real, labels)
    # D's update: one call over cat([real, fake]): the same policy for both halves, each image its own draw
    assert len(calls) == 1
    x, out, _ = calls[0]
    assert x.shape[0] == 2 * real.shape[0] and torch.equal(x[:16], real)
    for half in (slice(0, 16), slice(16, 32)):
        assert not torch.equal(out[half], x[half]) and (out[half] == 0).flatten(1).any(1).all()
    t.g_step(labels, 16)
    # G's update: the generated batch, with G's graph (G learns through the augmentation)
    assert len(calls) == 2 and calls[1][0].shape[0] == 16 and calls[1][2]
    assert not torch.equal(calls[1][1], calls[1][0])


def test_augment_off_draws_nothing_and_hands_d_over_unwrapped(tmp_path, monkeypatch):
    seen = []
    t = _trainer(tmp_path)
    d_step = t.loss.d_step
    monkeypatch.setattr(t.loss, "d_step", lambda D, *a: seen.append(D) or d_step(D, *a))
    fresh = torch.Generator().manual_seed(t.config.seed + 4).get_state()
    for _ in range(2):
        t.train_step()
    assert seen and all(D is t.D_train for D in seen)
    assert torch.equal(t.aug_gen.get_state(), fresh), "augmentation off must not draw random numbers"
    on = _trainer(tmp_path / "on", augment="color")
    on.train_step()
    assert not torch.equal(on.aug_gen.get_state(), fresh)


def test_augmentation_changes_training_but_not_the_rest(tmp_path):
    """Same seed with and without --augment: the same initial weights and the same first fake batch
    (augmentation draws from its own generator), different updates."""
    a, b = _trainer(tmp_path / "a"), _trainer(tmp_path / "b", augment=ALL)
    assert all(torch.equal(p, q) for p, q in zip(a.G.state_dict().values(), b.G.state_dict().values()))
    a.train_step()
    b.train_step()
    assert torch.equal(a.noise_gen.get_state(), b.noise_gen.get_state())
    assert not all(torch.equal(p, q) for p, q in zip(a.D.parameters(), b.D.parameters()))
