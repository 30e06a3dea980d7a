"""What a run's models are conditioned on (the data's class labels, its embedding vectors, or
nothing): the batches that carry it, the conditioning record a checkpoint keeps, and the run's
fixed sample grid."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from ganx.data import BatchIterator, ImageDataset
from ganx.models.common import latents
from ganx.train.config import ConfigError, TrainConfig

__all__ = ["describe_conditioning", "run_conditioning", "principal_direction", "grid_embeddings", "SampleGrid",
           "conditioning_record", "conditioned_batches", "model_args"]


def describe_conditioning(num_classes: Optional[int], embedding_dim: Optional[int]) -> str:
    """A model's conditioning in words (for messages)."""
    if embedding_dim is not None:
        return f"conditioned on {embedding_dim}-value embeddings"
    if num_classes is not None:
        return f"class-conditional ({num_classes} classes)"
    return "unconditional"


def run_conditioning(conditional: bool, dataset: ImageDataset):
    """``(num_classes, embedding_dim)`` of a run on ``dataset``: conditioned on its embeddings when it
    has them (its labels then serve the metrics only), else on its classes; neither when not
    ``conditional``."""
    if not conditional:
        return None, None
    if dataset.embeddings is not None:
        return None, dataset.embedding_dim
    return dataset.num_classes, None


def model_args(cfg: TrainConfig, num_classes: Optional[int], embedding_dim: Optional[int]) -> tuple:
    """The arguments of the registry's ``from_config`` for a run: ``(cfg, num_classes)``, and the
    embedding size after them for a run conditioned on vectors."""
    if embedding_dim is not None:
        return cfg, None, embedding_dim
    return cfg, num_classes


def principal_direction(embeddings: torch.Tensor) -> torch.Tensor:
    """The unit vector along which the (N, E) embeddings vary most (the top eigenvector of their
    covariance, in float64; deterministic on the CPU), as float32."""
    e = embeddings.double()
    e = e - e.mean(0)
    _, vecs = torch.linalg.eigh(e.T @ e)
    return vecs[:, -1].float()


def conditioned_batches(cfg: TrainConfig, dataset: ImageDataset, embedding_dim: Optional[int],
                        device: torch.device, rank: int = 0, world_size: int = 1):
    """``(batches, sort_direction)`` of a run: the BatchIterator of the data on ``device`` (this
    rank's share), whose "labels" are the images' embedding vectors in a run conditioned on them,
    the class labels in a class-conditional run, none otherwise; and for an embedding run the
    direction along which a batch is sorted before D sees it (see Trainer.train_step), else None.
    A batch size the data cannot fill is a ConfigError."""
    images = dataset.images.to(device)
    if embedding_dim is not None:
        labels = dataset.embeddings.to(device)
    else:
        labels = dataset.labels.to(device) if (cfg.conditional and dataset.labels is not None) else None
    sort_direction = principal_direction(dataset.embeddings).to(device) if embedding_dim is not None else None
    try:
        return BatchIterator(images, labels, cfg.batch_size, cfg.seed, rank, world_size), sort_direction
    except ValueError as e:
        raise ConfigError(str(e)) from None


def grid_embeddings(dataset: ImageDataset, rows: int = 16):
    """The held vectors of an embedding run's sample grids and a name for each: the first image's
    embedding of each class (at most ``rows`` classes) where the data has labels, else the first
    ``min(rows, 8)`` embeddings (named by their row in the data)."""
    if dataset.labels is not None:
        k = min(dataset.num_classes, rows)
        idx = [int(torch.nonzero(dataset.labels == c)[0]) for c in range(k) if bool((dataset.labels == c).any())]
        names = [dataset.class_names[int(dataset.labels[i])] for i in idx]
    else:
        idx = list(range(min(rows, 8, len(dataset))))
        names = [f"row {i}" for i in idx]
    return dataset.embeddings[idx].clone(), names


class SampleGrid:
    """The fixed latents (and conditions) of a run's sample grids, drawn from their own generator
    seeded with ``seed``: one row per class when class-conditional, one row per held embedding of
    the data when conditioned on vectors (the same z along each column, so a column shows one
    "style" across the rows), else 64 free latents in rows of 8."""

    def __init__(self, num_classes: Optional[int], embedding_dim: Optional[int], dataset: ImageDataset,
                 latent_dim: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.rows: Optional[torch.Tensor] = None  # the held embeddings (an embedding run)
        self.names: List[str] = []
        if num_classes:
            self.cols = 10
            z = latents(self.cols, latent_dim, g)
            self.z = z.repeat(num_classes, 1)
            self.y = torch.arange(num_classes).repeat_interleave(self.cols)
        elif embedding_dim is not None:
            self.rows, self.names = grid_embeddings(dataset)
            self.cols = 10 if dataset.labels is not None else 8
            z = latents(self.cols, latent_dim, g)
            self.z = z.repeat(len(self.rows), 1)
            self.y = self.rows.repeat_interleave(self.cols, dim=0)
        else:
            self.cols = 8
            self.z, self.y = latents(64, latent_dim, g), None


def conditioning_record(num_classes: Optional[int], embedding_dim: Optional[int],
                        grid: SampleGrid) -> Dict[str, Any]:
    """What the run conditions on, for the checkpoint (``ganx sample`` reads it): the kind, the
    class count or the vectors' size, and for vectors the held rows of the sample grids (with
    the class of each where the data has labels)."""
    if embedding_dim is not None:
        return {"kind": "embedding", "embedding_dim": embedding_dim,
                "sample_embeddings": grid.rows.clone(), "sample_names": list(grid.names)}
    if num_classes:
        return {"kind": "class", "num_classes": num_classes}
    return {"kind": None}
