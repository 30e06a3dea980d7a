"""FID and KID between two sets of feature vectors (float64 numpy; the feature space is the
caller's choice, see ganx.metrics.features)."""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch

__all__ = ["frechet_distance", "fid_from_features", "kid_from_features", "unit_rms_scale"]


def _np64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    return x


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``, the Frechet distance between two
    Gaussians. ``tr((S1 S2)^(1/2))`` is computed as the sum of the square roots of the
    eigenvalues of the symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)`` (same eigenvalues as
    S1 S2), which avoids the complex-valued sqrtm of a non-symmetric product."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    w, v = np.linalg.eigh(s1)
    sqrt_s1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sqrt_s1 @ s2 @ sqrt_s1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fid_from_features(feats1, feats2) -> float:
    """FID between two feature sets (N1, D), (N2, D); covariances with the unbiased N-1 divisor."""
    a, b = _np64(feats1), _np64(feats2)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("FID needs at least 2 samples in each set")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False, ddof=1).reshape(a.shape[1], a.shape[1]),
                            b.mean(0), np.cov(b, rowvar=False, ddof=1).reshape(b.shape[1], b.shape[1]))


def kid_from_features(feats1, feats2, num_subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> Tuple[float, float]:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the polynomial kernel
    ``k(x, y) = (x.y / D + 1)^3``, averaged over ``num_subsets`` random subsets of
    ``min(subset_size, N1, N2)`` samples from each set. Returns (mean, std over subsets).
    When the subset covers both sets entirely, every subset is the same and this is the
    plain unbiased MMD^2 of the two sets.

    The estimator is unbiased, so it is negative about half the time when the two sets come
    from one distribution; the std over subsets is its noise floor at this subset size (a KID
    within about 2 std of 0 means "indistinguishable from the real set at this sample size").
    The kernel assumes features of unit scale (x.y / D ~ 1, as Inception's are); for other
    feature spaces pass them through :func:`unit_rms_scale` first."""
    a, b = _np64(feats1), _np64(feats2)
    d = a.shape[1]
    n = min(subset_size, len(a), len(b))
    if n < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    full = n == len(a) == len(b)
    vals = []
    for _ in range(1 if full else num_subsets):
        x = a if full else a[rng.choice(len(a), n, replace=False)]
        y = b if full else b[rng.choice(len(b), n, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        # Unbiased: the diagonal k(x_i, x_i) terms are left out of the within-set means.
        mmd = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
               - 2 * kxy.mean())
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def unit_rms_scale(reference) -> float:
    """The factor that gives ``reference`` features a mean squared value of 1 per dimension
    (``mean ||x||^2 / D = 1``). KID's cubic kernel ``(x.y / D + 1)^3`` is meant for features of
    that scale: with larger ones (the digits classifier's 128-D ReLU features have x.y / D ~ 7,
    up to 24) the kernel values run to thousands, its cubic term dominates (the few largest
    feature vectors decide the estimate) and KID comes out in arbitrary units. Multiply both
    sets by this factor of the *real* set, so the kernel is the same for every generator."""
    r = _np64(reference)
    ms = float((r ** 2).sum(1).mean() / r.shape[1])
    return 1.0 / ms ** 0.5 if ms > 0 else 1.0
