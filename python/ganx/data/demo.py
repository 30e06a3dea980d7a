"""The demo data set of embedding conditioning: the bundled digits, each with a vector made from its
label through a fixed random projection plus a little noise (a stand-in for a text embedding of
"a handwritten 3"). ``scripts/make_digit_embeddings.py OUT.npz`` writes it for ``ganx train --data``."""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

__all__ = ["digit_embeddings", "save_digit_embeddings"]


def digit_embeddings(dim: int = 32, noise: float = 0.1, seed: int = 0) -> Dict[str, np.ndarray]:
    """sklearn's 1,797 digits as arrays: ``images`` (N, 8, 8) float32 in [0, 1] (the pixels
    ``--data digits`` uses), ``labels`` (N,) int64 and ``embeddings`` (N, dim) float32:
    ``P[label] + noise * eps`` with ``P`` a (10, dim) standard-normal projection and ``eps``
    standard normal, both drawn from a CPU generator seeded with ``seed`` (P first, then eps)."""
    from sklearn.datasets import load_digits

    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    d = load_digits()
    labels = torch.tensor(d.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(10, dim, generator=g)
    emb = proj[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return {"images": (d.images / 16.0).astype(np.float32), "labels": labels.numpy(),
            "embeddings": emb.numpy()}


def save_digit_embeddings(path, dim: int = 32, noise: float = 0.1, seed: int = 0) -> str:
    """:func:`digit_embeddings` saved as a .npz at ``path`` (ganx.train --data reads it); returns the path."""
    path = str(path)
    if not path.endswith(".npz"):
        raise ValueError(f"{path!r}: the data set is a .npz file; give a name ending in .npz")
    np.savez(path, **digit_embeddings(dim, noise, seed))
    return path
