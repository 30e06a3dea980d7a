"""What a run needs, checked before anything is allocated or trained: its device, data that fits
its config, models that fit in memory, and what the end-of-run metrics need (a bad option is a
ConfigError at the start, not after hours of training)."""
from __future__ import annotations

import os

import torch

from ganx._limits import check_bytes
from ganx.data import ImageDataset
from ganx.models import DISCRIMINATORS, GENERATORS
from ganx.ops import cpu_buffer_cache_stats
from ganx.train import distributed
from ganx.train.config import ConfigError, TrainConfig
from ganx.train.rebuild import model_bytes

__all__ = ["resolve_device", "run_device", "check_data", "check_model_memory", "check_metric_options",
           "check_buffer_cache_env"]


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; an explicit cuda device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (name in ("cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())):
        raise ConfigError(f"device {name!r}: must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available (use 'cpu' or 'auto')")
    return dev


def run_device(cfg: TrainConfig, dist) -> torch.device:
    """The device of this process of a run (``dist``: its ganx.train.distributed setup): ``cfg.device``
    resolved, then this rank's GPU under torchrun; mixed precision needs CUDA."""
    device = distributed.device_for(dist, resolve_device(cfg.device))
    if cfg.amp != "off" and device.type != "cuda":
        raise ConfigError(f"amp={cfg.amp!r} needs a CUDA device (got {device}); use amp='off' on the CPU")
    return device


def check_data(cfg: TrainConfig, dataset: ImageDataset) -> None:
    """A dataset given to the Trainer has the config's image size; a conditional run needs labels
    or embeddings."""
    if dataset.image_size != cfg.image_size:
        raise ConfigError(f"dataset images are {dataset.image_size}px but image_size={cfg.image_size}")
    if cfg.conditional and dataset.labels is None and dataset.embeddings is None:
        why = f": {dataset.note}" if dataset.note else ""
        raise ConfigError(f"conditional=True needs labelled data, but {dataset.name!r} has no labels{why} "
                          f"(use class subfolders, a .npz with 'labels' or with 'embeddings', or --no-conditional)")


def check_model_memory(cfg: TrainConfig, model_args: tuple) -> None:
    """Refuse widths whose models (with gradients, Adam's two moments and the EMA copy) do not
    fit the memory available, before allocating them. ``model_args``: the arguments of the
    registry's ``from_config``."""
    try:
        g = model_bytes(GENERATORS[cfg.generator].from_config, model_args)
        d = model_bytes(DISCRIMINATORS[cfg.discriminator].from_config, model_args)
    except (ValueError, TypeError, RuntimeError, OverflowError) as e:
        raise ConfigError(f"the model of this config cannot be built: {e}") from None
    check_bytes(5 * g + 4 * d, f"g_width={cfg.g_width}, d_width={cfg.d_width}, latent_dim={cfg.latent_dim}: "
                f"the models with their optimiser state", ConfigError)


def check_metric_options(cfg: TrainConfig, dataset: ImageDataset) -> None:
    """What the end-of-run metrics need, checked before training instead of after it."""
    if not cfg.metrics:
        return
    space = cfg.feature_space
    # The generated images (float32, at the training size, with the copies the feature
    # extractor makes) and their features (float64 for the FID statistics).
    c = cfg.channels or dataset.channels
    feat = 2048 if space == "inception" or (space == "auto" and dataset.labels is None) else 128
    need = cfg.metric_samples * (3 * 4 * c * cfg.image_size ** 2 + 2 * 8 * feat)
    check_bytes(need, f"metric_samples={cfg.metric_samples}: the end-of-run metrics", ConfigError)
    if space == "auto":
        space = "classifier" if dataset.labels is not None else ("inception" if cfg.inception_weights else None)
    if space == "classifier" and dataset.labels is None:
        raise ConfigError(f"feature_space='classifier' needs labelled data, but {dataset.name!r} has no labels "
                          f"(use 'inception' with --inception-weights, or --no-metrics)")
    if space == "inception":
        w = cfg.inception_weights
        if not w:
            raise ConfigError("feature_space='inception' needs --inception-weights FILE (a torchvision "
                              "inception_v3 state_dict; ganx never downloads), or use --no-metrics")
        if not os.path.isfile(w):
            raise ConfigError(f"inception_weights {w!r} does not exist (ganx never downloads; save "
                              f"torchvision's inception_v3 state_dict there)")
        try:
            import torchvision.models  # noqa: F401
        except Exception as e:
            raise ConfigError(f"feature_space='inception' needs torchvision, which cannot be imported ({e}); "
                              f"pip install torchvision matching your torch, or use --no-metrics") from None


def check_buffer_cache_env() -> None:
    """GANX_CPU_BUFFER_CACHE_MB, read by the CPU losses at their first large call: a bad value is
    a start-up error."""
    if os.environ.get("GANX_CPU_BUFFER_CACHE_MB"):
        try:
            cpu_buffer_cache_stats()
        except RuntimeError as e:
            raise ConfigError((str(e).strip().splitlines() or [""])[0]) from None
