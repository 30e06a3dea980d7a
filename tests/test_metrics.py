"""FID/KID against values computed by hand; classifier features; entropy; Inception errors."""
import math

import numpy as np
import pytest
import torch

from ganx.metrics import (class_entropy, fid_from_features, frechet_distance, kid_from_features,
                          InceptionFeatures)


def test_frechet_1d_by_hand():
    # 1-D Gaussians: (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2)
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 4 + 9 - 2 * 6)


def test_fid_tiny_by_hand():
    a = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # mean (1,1), cov diag(4/3, 4/3)
    b = a * 2 + 1                                                      # mean (3,3), cov diag(16/3, 16/3)
    # |mu diff|^2 = 8; per dim: 4/3 + 16/3 - 2*sqrt(64/9) = 20/3 - 16/3 = 4/3
    assert fid_from_features(a, b) == pytest.approx(8 + 2 * 4 / 3)
    assert fid_from_features(torch.tensor(a), torch.tensor(a)) == pytest.approx(0, abs=1e-9)


def test_fid_matches_scipy_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(40, 4)) @ rng.normal(size=(4, 4)) + 0.5
    m1, m2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-8)


def test_kid_tiny_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 2.0]])
    k = lambda u, v: (u @ v / 2 + 1) ** 3  # noqa: E731  (d = 2)
    n = 3
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(n)) / (n * n)
    mean, std = kid_from_features(x, y)
    assert mean == pytest.approx(kxx + kyy - 2 * kxy)
    assert std == 0


def test_kid_subsets_near_zero_for_same_distribution():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    mean, _ = kid_from_features(a, b, num_subsets=10, subset_size=100)
    far, _ = kid_from_features(a, b + 3, num_subsets=10, subset_size=100)
    assert abs(mean) < 0.05 < far


def test_class_entropy():
    assert class_entropy(torch.arange(10).repeat(5), 10) == pytest.approx(math.log(10))
    assert class_entropy(torch.zeros(7, dtype=torch.long), 10) == pytest.approx(0)


def test_classifier_features_on_digits(tmp_path):
    from ganx.data import load_digits_dataset
    from ganx.metrics import ClassifierFeatures, load_or_train_classifier

    ds = load_digits_dataset(16)
    cache = tmp_path / "clf.pt"
    model, acc = load_or_train_classifier(ds, str(cache))
    assert acc >= 0.95 and cache.is_file()
    model2, acc2 = load_or_train_classifier(ds, str(cache))  # from the cache, identical
    assert acc2 == acc
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)
    f = ClassifierFeatures(model)(ds.images[:5])
    assert f.shape == (5, 128)


def test_inception_errors(tmp_path):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs torchvision"):
            InceptionFeatures(str(tmp_path / "w.pt"))
    else:
        with pytest.raises(FileNotFoundError, match="never"):
            InceptionFeatures(str(tmp_path / "missing.pt"))


def test_diversity_ratio_detects_collapse():
    from ganx.data import load_digits_dataset
    from ganx.metrics.evaluate import diversity

    ds = load_digits_dataset(16)
    assert diversity(ds.images, ds.labels, ds)["diversity_ratio"] == pytest.approx(1.0)
    collapsed = ds.images[:1].repeat(20, 1, 1, 1)
    assert diversity(collapsed, torch.arange(20) % 10, ds)["diversity_ratio"] == 0
    assert diversity(collapsed, None, ds)["diversity_ratio"] == 0


def test_kid_is_independent_of_the_feature_scale_after_unit_rms():
    """KID's cubic kernel depends on the feature scale; evaluate_generator rescales classifier
    features to unit RMS on the real set, so a feature space that is 10x larger (e.g. another
    classifier training) gives the same KID."""
    from ganx.metrics import unit_rms_scale

    rng = np.random.default_rng(2)
    a, b = np.abs(rng.normal(size=(400, 16))) * 5, np.abs(rng.normal(0.2, 1, size=(400, 16))) * 5
    s = unit_rms_scale(a)
    assert ((a * s) ** 2).sum(1).mean() / a.shape[1] == pytest.approx(1.0)
    k1 = kid_from_features(a * s, b * s, num_subsets=5, subset_size=200)
    s10 = unit_rms_scale(a * 10)
    k10 = kid_from_features(a * 10 * s10, b * 10 * s10, num_subsets=5, subset_size=200)
    assert k1 == pytest.approx(k10, rel=1e-9)
    raw = kid_from_features(a, b, num_subsets=5, subset_size=200)
    assert raw[0] > 100 * k1[0]  # unscaled, the same sets give a KID in arbitrary (large) units


def test_format_metrics_explains_kid():
    from ganx.metrics import format_metrics

    line = format_metrics({"fid": 3.96, "kid": -0.00012, "kid_std": 0.0011, "kid_subsets": 100,
                           "kid_subset_size": 1000, "classifier_accuracy": 0.978,
                           "classifier_heldout_accuracy": 0.983})
    assert "FID 3.96" in line and "KID x1000 -0.12 +- 1.10" in line
    assert "100 subsets of 1000 images" in line and "within noise of 0" in line
    assert "97.8%" in line and "98.3%" in line
    assert "within noise" not in format_metrics({"kid": 0.05, "kid_std": 0.001})
