"""Feature spaces for FID/KID.

A feature extractor is any callable ``images (N, C, H, W) in [-1, 1] -> features (N, D)``
(:class:`FeatureExtractor`). Two are provided:

* :class:`ClassifierFeatures`: the penultimate layer of a small CNN trained on the labelled
  real data (the default for the digits: Inception features of 16x16 digits mean little).
  Training is deterministic (fixed seed, fixed split) and cached in the run folder. The same
  network scores conditional samples (accuracy on the requested class) and unconditional
  ones (entropy of the predicted-class histogram).
* :class:`InceptionFeatures`: torchvision's Inception-v3 pool features (2048-D) from a
  weights file the user supplies; ganx never downloads. Note these are torchvision's
  weights, so the numbers are not comparable with papers that use the TF-FID Inception.
"""
from __future__ import annotations

import math
import os
from typing import Optional, Protocol, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ganx._io import atomic_save

__all__ = ["FeatureExtractor", "DigitsClassifier", "ClassifierFeatures", "InceptionFeatures",
           "train_classifier", "load_or_train_classifier", "class_entropy"]


class FeatureExtractor(Protocol):
    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class DigitsClassifier(nn.Module):
    """Small CNN: two conv blocks, global 4x4 pooling, a 128-D feature layer, then logits.
    Works for any image size >= 8 thanks to the adaptive pooling."""

    def __init__(self, channels: int = 1, num_classes: int = 10, feat_dim: int = 128):
        super().__init__()
        self.channels, self.num_classes, self.feat_dim = channels, num_classes, feat_dim
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(64 * 16, feat_dim), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(feat_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def train_classifier(train_x, train_y, test_x, test_y, num_classes: int, epochs: int = 15,
                     seed: int = 0, batch_size: int = 64) -> Tuple[DigitsClassifier, float]:
    """Train a :class:`DigitsClassifier` deterministically; returns it (eval mode) and its
    accuracy on the held-out set. Small random shifts (+-1 px at 16x16 scale) help it judge
    generated images, which are never pixel-aligned like the real ones."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # do not disturb the caller's global RNG
        torch.manual_seed(seed)
        model = DigitsClassifier(train_x.shape[1], num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    n = len(train_x)
    shift = max(1, train_x.shape[-1] // 16)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            x = train_x[idx]
            dy, dx = torch.randint(-shift, shift + 1, (2,), generator=g).tolist()
            x = torch.roll(x, (dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        acc = float((predict(model, test_x) == test_y).float().mean())
    return model, acc


@torch.no_grad()
def predict(model: DigitsClassifier, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def load_or_train_classifier(dataset, cache_path: Optional[str] = None, seed: int = 0):
    """The classifier for ``dataset`` (an ImageDataset with labels), from ``cache_path`` when
    it holds one trained on the same data shape, else trained (80/20 split) and cached.
    Returns (model, held-out accuracy)."""
    if dataset.labels is None:
        raise ValueError("the classifier feature space needs a labelled dataset")
    key = {"channels": dataset.channels, "image_size": dataset.image_size, "num_classes": dataset.num_classes,
           "n": len(dataset), "seed": seed, "name": dataset.name}
    if cache_path and os.path.lexists(cache_path):
        cached = _load_cached_classifier(cache_path, key, dataset)
        if cached is not None:
            return cached
    train, test = dataset.split(0.2, seed=seed)
    model, acc = train_classifier(train.images, train.labels, test.images, test.labels,
                                  dataset.num_classes, seed=seed)
    if cache_path:
        state = {"key": key, "model": model.state_dict(), "heldout_accuracy": acc}
        state["sha256"] = _classifier_digest(state)
        try:
            atomic_save(state, cache_path)
        except OSError as e:  # a folder in its place, a read-only run folder: the metrics go on
            _warn(f"could not cache the metrics classifier in {cache_path!r} ({e.strerror or e}); it is "
                  f"retrained next time")
    return model, acc


def _warn(msg: str) -> None:
    import sys

    print(f"ganx: warning: {msg}", file=sys.stderr)


def _classifier_digest(state) -> str:
    """SHA-256 of a cached classifier (its key, weights and accuracy), checked when it is read back."""
    import hashlib

    h = hashlib.sha256(repr(sorted(state["key"].items())).encode())
    h.update(repr(float(state["heldout_accuracy"])).encode())
    for name, t in sorted(state["model"].items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def _load_cached_classifier(path: str, key, dataset):
    """The cached classifier at ``path`` when it is a valid one for ``key`` (a ganx cache whose
    digest matches and whose weights fit); None (and a warning, unless it is merely another data
    set's) when it must be rebuilt. Read with weights_only: a foreign file never runs code."""
    why = None
    try:
        if os.path.islink(path) or not os.path.isfile(path):
            raise ValueError("it is not a regular file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not {"key", "model", "heldout_accuracy"} <= set(state):
            raise ValueError("it is not a ganx classifier cache")
        if state.get("key") != key or "sha256" not in state:
            return None  # another data set's cache, or one of an older ganx: silently rebuilt
        if state.get("sha256") != _classifier_digest(state):
            raise ValueError("its content does not match its SHA-256 digest")
        acc = float(state["heldout_accuracy"])
        if not 0 <= acc <= 1:
            raise ValueError(f"its held-out accuracy {acc!r} is not in [0, 1]")
        model = DigitsClassifier(dataset.channels, dataset.num_classes)
        model.load_state_dict(state["model"])
        return model.eval().requires_grad_(False), acc
    except Exception as e:  # any unreadable, foreign or corrupted file: rebuilt, never trusted
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    _warn(f"the cached metrics classifier {path!r} is not valid ({why}); retraining it")
    return None


class ClassifierFeatures:
    """Feature extractor from a trained :class:`DigitsClassifier` (its 128-D feature layer)."""

    name = "classifier"

    def __init__(self, model: DigitsClassifier, batch_size: int = 512):
        self.model, self.batch_size = model.eval(), batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float().cpu()
        return torch.cat([self.model.features(images[i:i + self.batch_size])
                          for i in range(0, len(images), self.batch_size)])


class InceptionFeatures:
    """torchvision Inception-v3 2048-D pool features from a local state_dict file.

    Images are resized to 299x299 (bilinear), grey ones repeated to 3 channels, and
    normalised with ImageNet statistics."""

    name = "inception"

    def __init__(self, weights_path: str, device="cpu", batch_size: int = 64):
        try:
            from torchvision.models import inception_v3
        except ImportError as e:
            raise ImportError("feature_space='inception' needs torchvision, which is not installed "
                              "(pip install torchvision matching your torch), or use "
                              "feature_space='classifier'") from e
        if not weights_path or not os.path.isfile(weights_path):
            raise FileNotFoundError(f"Inception weights file {weights_path!r} does not exist (ganx never "
                                    f"downloads; save torchvision's inception_v3 state_dict there)")
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net.fc = nn.Identity()
        self.net = net.eval().requires_grad_(False).to(device)
        self.device, self.batch_size = device, batch_size
        self.mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(0, len(images), self.batch_size):
            x = images[i:i + self.batch_size].to(self.device).float()
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = F.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.net((x - self.mean) / self.std).cpu())
        return torch.cat(out)


def class_entropy(pred: torch.Tensor, num_classes: int) -> float:
    """Entropy (nats) of the histogram of predicted classes; ln(num_classes) = perfectly even."""
    p = torch.bincount(pred, minlength=num_classes).double()
    p = p / p.sum()
    nz = p[p > 0]
    return float(-(nz * nz.log()).sum())


_LN10 = math.log(10)
