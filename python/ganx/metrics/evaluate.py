"""End-of-run evaluation of a generator against its real data."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional

import torch

from ganx.metrics.distances import fid_from_features, kid_from_features, unit_rms_scale
from ganx.metrics.features import (ClassifierFeatures, InceptionFeatures, class_entropy,
                                   load_or_train_classifier, predict)
from ganx.models.common import latents

__all__ = ["evaluate_generator", "generate", "embeddings_for", "diversity", "format_metrics"]

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


def _spread(x: torch.Tensor) -> float:
    return float(x.std(0).mean()) if len(x) > 1 else 0.0


def diversity(fake: torch.Tensor, labels: Optional[torch.Tensor], dataset) -> Dict[str, float]:
    """Mean per-pixel standard deviation of the samples (within each requested class when
    conditional) divided by the same for the real images: ~1 for a diverse generator, ~0 for
    one that ignores its noise (mode collapse), which class accuracy alone cannot see."""
    if labels is not None and dataset.labels is not None:
        K = int(labels.max()) + 1
        f = sum(_spread(fake[labels == c]) for c in range(K)) / K
        r = sum(_spread(dataset.images[dataset.labels == c]) for c in range(K)) / K
    else:
        f, r = _spread(fake), _spread(dataset.images)
    return {"diversity_ratio": f / r if r > 0 else float("nan")}


def embeddings_for(dataset, n: int):
    """``n`` conditioning vectors of ``dataset`` (which has embeddings) for an embedding-conditioned
    G, and the class behind each (or None): with labels, the classes cycle (sample i asks for class
    ``i % K``) and each takes the vectors of that class's images in data order, cycling; without,
    the data's vectors in order, cycling."""
    emb = dataset.embeddings
    if dataset.labels is None:
        return emb[torch.arange(n) % len(emb)], None
    K = dataset.num_classes
    labels = torch.arange(n) % K
    idx = torch.empty(n, dtype=torch.int64)
    for c in range(K):
        rows = torch.nonzero(dataset.labels == c).flatten()
        want = torch.nonzero(labels == c).flatten()
        if len(rows) == 0:  # a class without images cannot be asked for
            raise ValueError(f"class {c} of the data set has no images, so no embedding to ask for it")
        idx[want] = rows[torch.arange(len(want)) % len(rows)]
    return emb[idx], labels


@torch.no_grad()
def generate(G, n: int, seed: int, device, labels: Optional[torch.Tensor] = None,
             batch_size: int = 500) -> torch.Tensor:
    """n images from G (on the CPU, float32), latents from a seeded CPU generator; ``labels``: the
    conditioning of each (class indices, or vectors for an embedding-conditioned G), or None."""
    g = torch.Generator().manual_seed(seed)
    was_training = G.training
    G.eval()
    out = []
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        z = latents(m, G.latent_dim, g, device)
        y = labels[i:i + m].to(device) if labels is not None else None
        out.append(G(z, y).float().cpu())
    G.train(was_training)
    return torch.cat(out)


def evaluate_generator(G, dataset, run_dir: Optional[str] = None, n: int = 2000, seed: int = 1234,
                       feature_space: str = "auto", inception_weights: Optional[str] = None,
                       device="cpu") -> Dict[str, Any]:
    """FID/KID of ``n`` samples of G against the real images, and the classifier figures.

    Conditional G: labels cycle over the classes (n/K each); ``classifier_accuracy`` is the
    fraction classified as the requested class. G conditioned on embeddings (``G.embedding_dim``):
    the data's own vectors (:func:`embeddings_for`); where the data has labels the classes cycle as
    for a class-conditional G and ``classifier_accuracy`` is the fraction classified as the class
    behind each sample's vector. Unconditional G: ``class_entropy`` of the
    predicted-class histogram (and its maximum, ln K). Feature space 'auto' = the classifier
    when the data has labels, Inception when weights are given, otherwise FID/KID are skipped.
    """
    res: Dict[str, Any] = {"n_generated": n, "n_real": len(dataset)}
    K = dataset.num_classes
    if getattr(G, "embedding_dim", None) is not None:
        if dataset.embeddings is None or dataset.embedding_dim != G.embedding_dim:
            raise ValueError(f"the generator is conditioned on {G.embedding_dim}-value embeddings but the data set "
                             f"{dataset.name!r} has {'none' if dataset.embeddings is None else dataset.embedding_dim}")
        vectors, labels = embeddings_for(dataset, n)
        cond = labels is not None
        fake = generate(G, n, seed, device, vectors)
    else:
        cond = getattr(G, "num_classes", None) is not None
        labels = torch.arange(n) % G.num_classes if cond else None
        fake = generate(G, n, seed, device, labels)

    res.update(diversity(fake, labels, dataset))

    clf = None
    if dataset.labels is not None:
        cache = os.path.join(run_dir, "classifier.pt") if run_dir else None
        clf, acc = load_or_train_classifier(dataset, cache)
        res["classifier_heldout_accuracy"] = acc
        pred = predict(clf, fake)
        if cond:
            res["classifier_accuracy"] = float((pred == labels).float().mean())
            res["classifier_accuracy_per_class"] = [
                float((pred[labels == c] == c).float().mean()) for c in range(K)]
        else:
            res["class_entropy"] = class_entropy(pred, K)
            res["class_entropy_max"] = math.log(K)
            res["class_histogram"] = torch.bincount(pred, minlength=K).tolist()

    space = feature_space
    if space == "auto":
        space = "classifier" if clf is not None else ("inception" if inception_weights else None)
    if space == "classifier":
        if clf is None:
            raise ValueError("feature_space='classifier' needs a labelled dataset")
        fx = ClassifierFeatures(clf)
    elif space == "inception":
        fx = InceptionFeatures(inception_weights, device=device)
    else:
        res["feature_space"] = None
        res["note"] = "FID/KID skipped: unlabelled data and no Inception weights"
        return res
    real_f, fake_f = fx(dataset.images), fx(fake)
    res["feature_space"] = space
    res["fid"] = fid_from_features(real_f, fake_f)
    # KID: the classifier's features are rescaled to unit RMS on the real set (the polynomial
    # kernel's scale; see unit_rms_scale). Inception features are used as they are, by convention.
    scale = unit_rms_scale(real_f) if space == "classifier" else 1.0
    res["kid"], res["kid_std"] = kid_from_features(real_f * scale, fake_f * scale,
                                                   num_subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE)
    res["kid_subsets"] = KID_SUBSETS
    res["kid_subset_size"] = min(KID_SUBSET_SIZE, len(real_f), len(fake_f))
    res["kid_feature_scale"] = scale
    return res


def format_metrics(m: Dict[str, Any]) -> str:
    """The end-of-run metrics as one readable line (metrics.json holds all of them)."""
    parts = []
    if m.get("fid") is not None:
        parts.append(f"FID {m['fid']:.2f}")
    if m.get("kid") is not None:
        kid, std = m["kid"], m.get("kid_std") or 0.0
        n, k = m.get("kid_subset_size"), m.get("kid_subsets")
        size = f"; {k} subsets of {n} images" if n and k else ""
        noise = ", within noise of 0" if abs(kid) <= 2 * std else ""
        parts.append(f"KID x1000 {1000 * kid:.2f} +- {1000 * std:.2f} (+- = spread over subsets{size}{noise})")
    if m.get("classifier_accuracy") is not None:
        parts.append(f"samples classified as their class {100 * m['classifier_accuracy']:.1f}%")
    if m.get("class_entropy") is not None:
        parts.append(f"class entropy {m['class_entropy']:.3f} (max {m.get('class_entropy_max', 0):.3f})")
    if m.get("classifier_heldout_accuracy") is not None:
        parts.append(f"classifier on held-out real images {100 * m['classifier_heldout_accuracy']:.1f}%")
    return ", ".join(parts)
