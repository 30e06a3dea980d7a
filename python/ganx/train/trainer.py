"""The GAN training loop: alternating D and G updates, EMA, AMP, logging, samples,
atomic resumable checkpoints and end-of-run metrics."""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import time
from typing import Any, Dict, Optional

import torch

from ganx._limits import check_bytes
from ganx._version import __version__
from ganx.data import BatchIterator, ImageDataset, load_dataset
from ganx.metrics import evaluate_generator
from ganx.models import DISCRIMINATORS, GENERATORS
from ganx.models.common import latents
from ganx.ops import cpu_buffer_cache_stats
from ganx.train import distributed, faults, rundir
from ganx.train.augment import Augmented, DiffAugment
from ganx.train.checkpoint import (FORMAT, MODEL_KEYS, CheckpointError, CheckpointSaveError, capture_rng,
                                   load_checkpoint, restore_rng, run_dir_of, save_atomic)
from ganx.train.config import MAX_SEED, ConfigError, TrainConfig
from ganx.train.cores import ThreadGovernor
from ganx.train.ema import EMA
from ganx.train.images import plot_log, read_log_lines, save_grid
from ganx.train.losses import build_loss
from ganx.train.sampling import check_model_size, model_bytes

__all__ = ["Trainer", "resolve_device"]

# End-of-run metrics written to TensorBoard (and the metric columns of its HPARAMS tab).
TB_METRICS = ("fid", "kid", "classifier_accuracy", "class_entropy", "diversity_ratio",
              "classifier_heldout_accuracy")


def progress_postfix(row: Dict[str, Any]) -> str:
    """The progress bar's figures: the two losses and D's accuracy on real and fake (when the loss
    reports them), short enough that the bar stays readable in an 80-column terminal (all the
    loss's figures are in log.jsonl)."""
    def frac(v):  # 0.81 -> .81: two characters fewer in an 80-column line
        t = f"{v:.2f}"
        return t[1:] if t.startswith("0.") else t

    acc = f" acc {frac(row['acc_real'])}/{frac(row['acc_fake'])}" if "acc_real" in row and "acc_fake" in row else ""
    return f"D {row['d_loss']:.2f} G {row['g_loss']:.2f}{acc}"


def _absolute_data(spec: str) -> str:
    """A data spec with its path made absolute (a folder, an array file, a torchvision ROOT);
    'digits' and other names are kept."""
    if spec.startswith("torchvision:"):
        parts = spec.split(":", 2)
        if len(parts) == 3 and parts[2] and os.path.exists(parts[2]):
            return f"{parts[0]}:{parts[1]}:{os.path.abspath(parts[2])}"
        return spec
    if spec != "digits" and os.path.exists(os.path.expanduser(spec)):
        return os.path.abspath(os.path.expanduser(spec))
    return spec


# The progress bar's layout: fixed-width fields (a 10-character bar, no rate), so at 80 columns it
# keeps its bar and its end however long the run (h:mm:ss past an hour, 6-digit step counts).
BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:10}| {n_fmt}/{total_fmt} {elapsed}<{remaining}{postfix}"


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


def _principal_direction(embeddings: torch.Tensor) -> torch.Tensor:
    """The unit vector along which the (N, E) embeddings vary most (the top eigenvector of their
    covariance, in float64; deterministic on the CPU), as float32."""
    e = embeddings.double()
    e = e - e.mean(0)
    _, vecs = torch.linalg.eigh(e.T @ e)
    return vecs[:, -1].float()


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


class _SkipStep(Exception):
    """Raised inside an update whose loss is non-finite under ``skip_nonfinite``."""


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


class Trainer:
    """Trains a generator against a discriminator, both built by name from ganx.models.registry
    (``config.generator`` / ``config.discriminator``; default the DCGAN pair), with the loss
    ``config.loss`` (ganx.train.losses).

    One *step* is ``d_steps`` discriminator updates followed by one generator update:

    * D update: a real batch and a generated batch made under ``torch.no_grad()`` (so G's
      output is detached and G gets no gradient) go to the loss's D step
      (:mod:`ganx.train.losses`, ``config.loss``); only D's optimiser steps.
    * G update: fresh noise, D's parameters frozen (``requires_grad_(False)``, so no gradient
      is even computed for them, and D's optimiser is not stepped), the loss's G step; only
      G's optimiser steps;
      then G's EMA is updated.

    With ``config.augment`` (DiffAugment, ganx.train.augment), D sees every image, real and
    generated, through the augmentation, in both updates (the loss gets D wrapped in
    :class:`~ganx.train.augment.Augmented`).

    Randomness: the global torch RNG (seeded with ``seed``) draws the initial weights; the
    latents and the augmentations come from dedicated CPU generators (same draws on any device);
    the data order is a function of (seed, epoch). All of them are in a checkpoint, so on the CPU
    a resumed run is bit-identical to an uninterrupted one.

    ``dataset`` overrides ``config.data`` (useful from Python); ``run_dir`` overrides
    ``config.out``.
    """

    def __init__(self, config: TrainConfig, dataset: Optional[ImageDataset] = None,
                 run_dir: Optional[str] = None):
        cfg = config.validate()
        self.dist = distributed.setup(cfg.device)  # no-op outside torchrun
        self.device = distributed.device_for(self.dist, resolve_device(cfg.device))
        self.is_main = self.dist.is_main  # only rank 0 writes logs, samples and checkpoints
        if cfg.amp != "off" and self.device.type != "cuda":
            raise ConfigError(f"amp={cfg.amp!r} needs a CUDA device (got {self.device}); use amp='off' on the CPU")
        self.config = cfg
        self._process_before = self._apply_process_settings()
        try:
            self._init(cfg, dataset, run_dir)
        except BaseException:
            self._restore_process_settings()
            raise

    def _apply_process_settings(self):
        """Set torch's process-wide switches this run asks for (threads, deterministic algorithms,
        cudnn.benchmark); returns what they were, for ``_restore_process_settings``."""
        cfg = self.config
        before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                  torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            # cuBLAS reads this when it initialises; it must be set before the first CUDA matmul.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        return before

    def close(self) -> None:
        """Give the process back its thread count, deterministic mode and cudnn.benchmark as
        they were before this Trainer was built. ``fit`` does it when it ends (and sets them again
        if called again); call it for a Trainer that is dropped without ``fit``."""
        self._restore_process_settings()

    def _restore_process_settings(self):
        """A Trainer leaves the process as it found it: after ``fit`` (or a failed start) the
        caller's thread count, deterministic mode and cudnn.benchmark are back."""
        threads, det, warn_only, bench = self._process_before
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.benchmark = bench

    def _init(self, cfg: TrainConfig, dataset: Optional[ImageDataset], run_dir: Optional[str]):
        torch.manual_seed(cfg.seed)

        if dataset is None:
            dataset = load_dataset(cfg.data, cfg.image_size, cfg.channels)
        elif dataset.image_size != cfg.image_size:
            raise ConfigError(f"dataset images are {dataset.image_size}px but image_size={cfg.image_size}")
        if cfg.conditional and dataset.labels is None and dataset.embeddings is None:
            why = f": {dataset.note}" if dataset.note else ""
            raise ConfigError(f"conditional=True needs labelled data, but {dataset.name!r} has no labels{why} "
                              f"(use class subfolders, a .npz with 'labels' or with 'embeddings', or --no-conditional)")
        if cfg.channels is None:
            cfg = cfg.replace(channels=dataset.channels)
        if cfg.data != _absolute_data(cfg.data):
            # config.yaml and the checkpoints record where the data is from anywhere, so a resume
            # from another working directory finds it (a --data given then still wins).
            cfg = cfg.replace(data=_absolute_data(cfg.data))
        if cfg.out is None:
            stem = os.path.basename(os.path.normpath(cfg.data)).split(":")[-1] or "run"
            cfg = cfg.replace(out=os.path.join("runs", f"{stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"))
        if run_dir is not None:
            cfg = cfg.replace(out=os.fspath(run_dir))
        if os.path.lexists(cfg.out) and not os.path.isdir(cfg.out):
            raise rundir.RunFolderError(f"run folder {cfg.out!r} exists and is not a folder (give --out a folder path)")
        self.config, self.dataset = cfg, dataset
        self.run_dir = cfg.out
        self._lock = rundir.RunLock(self.run_dir)
        # Conditioning: on the data's vectors when it has embeddings (its labels, if any, then serve
        # the metrics only), else on its classes; none with --no-conditional.
        self.num_classes, self.embedding_dim = run_conditioning(cfg.conditional, dataset)

        self._check_model_memory(cfg)
        self._check_metric_options(cfg, dataset)
        if os.environ.get("GANX_CPU_BUFFER_CACHE_MB"):
            # The CPU losses read it at their first large call; a bad value is a start-up error.
            try:
                cpu_buffer_cache_stats()
            except RuntimeError as e:
                raise ConfigError((str(e).strip().splitlines() or [""])[0]) from None
        # The architectures by name (ganx.models.registry); a checkpoint records both names.
        self.G = GENERATORS[cfg.generator].from_config(*self._model_args(cfg)).to(self.device)
        self.D = DISCRIMINATORS[cfg.discriminator].from_config(*self._model_args(cfg)).to(self.device)
        if cfg.sync_batchnorm and self.dist.enabled:
            self.G = distributed.convert_sync_batchnorm(self.G, self.device)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
        self.ema = EMA(self.G, cfg.ema_decay) if cfg.ema_decay > 0 else None
        # The DDP wrappers for the updates (the modules themselves for one process). self.G and
        # self.D stay the plain modules: checkpoints, EMA and sampling use those.
        self.G_train = self.dist.wrap(self.G, self.device)
        self.D_train = self.dist.wrap(self.D, self.device)
        self.loss = build_loss(cfg)  # its D and G objectives and the figures they report
        self.figures = self.loss.figures

        # fp16 needs loss scaling (its range underflows small gradients); bf16 does not.
        # One scaler per optimiser: D and G steps interleave unevenly (d_steps) and their
        # gradient magnitudes differ, so each gets its own scale.
        use_scaler = cfg.amp == "fp16"
        self.scaler_d = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.scaler_g = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self._amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)

        self.noise_gen = torch.Generator().manual_seed(cfg.seed + 1)
        # DiffAugment (--augment; off by default, and then nothing is drawn): D sees real and
        # generated images through it in both updates. Its draws have their own CPU generator,
        # in the checkpoint like the noise's.
        self.aug_gen = torch.Generator().manual_seed(cfg.seed + 4)
        self.augment = DiffAugment(cfg.augment, self.aug_gen, (self.dist.rank, self.dist.world_size))
        images = dataset.images.to(self.device)
        if self.embedding_dim is not None:  # the batches' "labels" are then the images' vectors
            labels = dataset.embeddings.to(self.device)
        else:
            labels = dataset.labels.to(self.device) if (cfg.conditional and dataset.labels is not None) else None
        # The direction along which an embedding batch is sorted before D sees it (see train_step).
        self._sort_direction = (_principal_direction(dataset.embeddings).to(self.device)
                                if self.embedding_dim is not None else None)
        try:
            self.data = BatchIterator(images, labels, cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world_size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.step = 0
        self.saved_step: Optional[int] = None  # the step of the newest checkpoint of this run (None: none yet)
        self.start_step = 0  # the step this session started from (fit sets it)
        self.elapsed = 0.0  # training seconds over all sessions of this run

        # The fixed latents of the per-epoch sample grids (one row per class if conditional,
        # the same z along each column so a column shows one "style" across the classes).
        g = torch.Generator().manual_seed(cfg.seed + 2)
        if self.num_classes:
            self.grid_cols = 10
            z = latents(self.grid_cols, cfg.latent_dim, g)
            self.grid_z = z.repeat(self.num_classes, 1)
            self.grid_y = torch.arange(self.num_classes).repeat_interleave(self.grid_cols)
        elif self.embedding_dim is not None:
            # One row per held embedding of the data (fixed for the run), the same z along each column.
            rows, self.grid_names = grid_embeddings(dataset)
            self.grid_cols = 10 if dataset.labels is not None else 8
            z = latents(self.grid_cols, cfg.latent_dim, g)
            self.grid_z = z.repeat(len(rows), 1)
            self.grid_y = rows.repeat_interleave(self.grid_cols, dim=0)
            self.grid_rows = rows
        else:
            self.grid_cols = 8
            self.grid_z, self.grid_y = latents(64, cfg.latent_dim, g), None
        self._tb = None

    @staticmethod
    def _check_metric_options(cfg: TrainConfig, dataset: ImageDataset) -> None:
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

    def _check_model_memory(self, cfg: TrainConfig) -> None:
        """Refuse widths whose models (with gradients, Adam's two moments and the EMA copy) do not
        fit the memory available, before allocating them."""
        try:
            g = model_bytes(GENERATORS[cfg.generator].from_config, self._model_args(cfg))
            d = model_bytes(DISCRIMINATORS[cfg.discriminator].from_config, self._model_args(cfg))
        except (ValueError, TypeError, RuntimeError, OverflowError) as e:
            raise ConfigError(f"the model of this config cannot be built: {e}") from None
        check_bytes(5 * g + 4 * d, f"g_width={cfg.g_width}, d_width={cfg.d_width}, latent_dim={cfg.latent_dim}: "
                    f"the models with their optimiser state", ConfigError)

    def _model_args(self, cfg: TrainConfig) -> tuple:
        """The arguments of the registry's ``from_config`` for this run: ``(cfg, num_classes)``, and
        the embedding size after them for a run conditioned on vectors."""
        if self.embedding_dim is not None:
            return cfg, None, self.embedding_dim
        return cfg, self.num_classes

    # ------------------------------------------------------------------ one update each
    def _autocast(self):
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self._amp_dtype)

    def _noise(self, n: int) -> torch.Tensor:
        """``n`` latents for this rank: every rank draws the whole global batch of latents (so the
        noise generator stays in step everywhere) and keeps its own slice."""
        w, r = self.dist.world_size, self.dist.rank
        z = latents(n * w, self.config.latent_dim, self.noise_gen)[r * n:(r + 1) * n]
        return z.to(self.device, non_blocking=True)

    def _check_finite(self, loss: torch.Tensor, name: str) -> bool:
        """False when the loss (on any rank) is NaN/Inf and the step is to be skipped; raises
        NonFiniteLossError when it is not to be skipped. One host sync per update."""
        value = float(self.dist.mean(loss.detach().float()))
        if math.isfinite(value):
            return True
        if self.config.skip_nonfinite:
            self._skip_reason = f"{name} = {value}"
            return False
        raise faults.NonFiniteLossError(self.step + 1, name, value)

    def _update(self, loss: torch.Tensor, name: str, opt, scaler) -> None:
        """Backward of ``loss`` and one step of ``opt`` (through the AMP ``scaler``); a non-finite
        loss stops the run, or skips the step (raises _SkipStep) under ``skip_nonfinite``."""
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if not self._check_finite(loss, name):
            raise _SkipStep
        scaler.step(opt)
        scaler.update()

    def d_step(self, real: torch.Tensor, labels: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """One discriminator update on a real batch and a detached generated batch."""
        z = self._noise(real.shape[0])
        with torch.no_grad(), self._autocast():
            fake = self.G(z, labels)
        D = Augmented(self.D_train, self.augment) if self.augment else self.D_train
        with self._autocast():
            loss, stats = self.loss.d_step(D, real, fake, labels)
        self._update(loss, "d_loss", self.opt_d, self.scaler_d)
        return {"d_loss": loss.detach(), **stats}

    def g_step(self, labels: Optional[torch.Tensor], n: Optional[int] = None) -> torch.Tensor:
        """One generator update through a frozen D; updates the EMA."""
        n = n if n is not None else (labels.shape[0] if labels is not None else self.config.batch_size)
        z = self._noise(n)
        self.D.requires_grad_(False)
        # The plain D, not its DDP wrapper: frozen, it gets no gradient and so no all-reduce.
        D = Augmented(self.D, self.augment) if self.augment else self.D
        try:
            with self._autocast():
                loss = self.loss.g_step(D, self.G_train(z, labels), labels)
            self._update(loss, "g_loss", self.opt_g, self.scaler_g)
        finally:
            self.D.requires_grad_(True)
        if self.ema is not None:
            self.ema.update(self.G)
        return loss.detach()

    def train_step(self) -> Dict[str, torch.Tensor]:
        """``d_steps`` D updates (each on the next real batch), then one G update on the labels
        of the last real batch (so G trains on the data's class frequencies). Returns the
        figures of the step as 0-dim tensors (D figures averaged over its updates)."""
        self.G.train()
        self.D.train()
        acc = None
        self._skipped = False
        for i in range(self.config.d_steps):
            real, labels, _ = self.data.next()
            if self._skipped:
                continue  # the rest of a skipped step: consume its batches, no update
            if labels is not None and self.config.minibatch_std > 1:
                # Sort the batch by class so D's minibatch-std groups hold (mostly) one class, in
                # the real half and in the fake half alike: D then sees the *within-class* spread,
                # and a conditional G that ignores its noise gets caught (with random class order
                # the spread is dominated by class differences, for real and fake alike). Embeddings
                # are sorted by their projection on the data's principal direction: similar vectors
                # then share groups (the labels a data set with embeddings may have are not used).
                key = labels if self._sort_direction is None else labels @ self._sort_direction
                order = torch.argsort(key, stable=True)
                real, labels = real[order], labels[order]
            try:
                s = self.d_step(real, labels)
            except _SkipStep:
                self._skipped = True
                continue
            acc = s if acc is None else {k: acc[k] + s[k] for k in s}
        if not self._skipped:
            figs = {k: v / self.config.d_steps for k, v in acc.items()}
            try:
                figs["g_loss"] = self.g_step(labels, real.shape[0])
            except _SkipStep:
                self._skipped = True
        if self._skipped:
            figs = {k: torch.tensor(float("nan")) for k in self.figures}
            if self.is_main:
                print(f"ganx: warning: non-finite {self._skip_reason} at step {self.step + 1}; "
                      f"step {self.step + 1} skipped (--skip-nonfinite)")
        self.step += 1
        return figs

    # ------------------------------------------------------------------ sampling
    @property
    def sampler(self) -> torch.nn.Module:
        """The generator used for samples: the EMA copy when there is one."""
        return self.ema.module if self.ema is not None else self.G

    @torch.no_grad()
    def save_samples(self, path) -> None:
        """The fixed-latent sample grid as a PNG at ``path`` (and as a TensorBoard image)."""
        G = self.sampler
        was = G.training
        G.eval()
        y = self.grid_y.to(self.device) if self.grid_y is not None else None
        with self._autocast():
            imgs = G(self.grid_z.to(self.device), y)
        G.train(was)
        grid = save_grid(imgs, path, self.grid_cols, root=self.run_dir)
        if self._tb is not None:
            self._tb.add_image("samples", grid, self.step, dataformats="HWC")

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue the run exactly: tensors and plain types only."""
        return {
            "format": FORMAT,
            "ganx_version": __version__,
            "torch_version": str(torch.__version__),
            "step": self.step,
            "epoch": self.data.epoch,
            "elapsed": self.elapsed,
            "config": self.config.to_dict(),
            "sample_every_unit": "steps",  # older checkpoints counted sample_every in epochs
            "generator_arch": self.G.arch,
            "generator_config": self.G.config(),
            "discriminator_arch": self.D.arch,
            "discriminator_config": self.D.config(),
            "class_names": list(self.dataset.class_names) if self.num_classes else [],
            "conditioning": self._conditioning_record(),
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
            "rng": {"global": capture_rng(), "noise": self.noise_gen.get_state(),
                    "data": self.data.state_dict(), "augment": self.aug_gen.get_state()},
        }

    def _conditioning_record(self) -> Dict[str, Any]:
        """What the run conditions on, for the checkpoint (``ganx sample`` reads it): the kind, the
        class count or the vectors' size, and for vectors the held rows of the sample grids (with
        the class of each where the data has labels)."""
        if self.embedding_dim is not None:
            return {"kind": "embedding", "embedding_dim": self.embedding_dim,
                    "sample_embeddings": self.grid_rows.clone(), "sample_names": list(self.grid_names)}
        if self.num_classes:
            return {"kind": "class", "num_classes": self.num_classes}
        return {"kind": None}

    def load_state_dict(self, ckpt: Dict[str, Any], name: str = "the checkpoint") -> None:
        """Restore a checkpoint's state. A part that does not fit this trainer's model, optimisers
        or RNGs is a :class:`CheckpointError` naming it (nothing is half-applied to the models:
        the weights are checked before anything is loaded)."""
        saved = ckpt.get("generator_config")
        if isinstance(saved, dict):
            was = describe_conditioning(saved.get("num_classes"), saved.get("embedding_dim"))
            now = describe_conditioning(self.num_classes, self.embedding_dim)
            if was != now:
                raise CheckpointError(f"{name}: its models are {was}, but this run's data {self.dataset.name!r} "
                                      f"makes them {now} (resume with the data the run was trained on)")

        def part(what, fn):
            try:
                fn()
            except CheckpointError:
                raise
            except Exception as e:  # RuntimeError (shapes), KeyError, TypeError, ValueError, IndexError
                lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()] or [type(e).__name__]
                detail = " ".join(lines[:2])
                if len(detail) > 300:
                    detail = detail[:300] + "..."
                raise CheckpointError(f"{name}: its {what} cannot be loaded into this run ({detail})") from None

        part("generator weights", lambda: self.G.load_state_dict(ckpt["G"]))
        part("discriminator weights", lambda: self.D.load_state_dict(ckpt["D"]))
        part("generator optimiser state", lambda: self.opt_g.load_state_dict(ckpt["opt_g"]))
        part("discriminator optimiser state", lambda: self.opt_d.load_state_dict(ckpt["opt_d"]))
        if self.ema is not None and ckpt.get("ema") is not None:
            part("EMA state", lambda: self.ema.load_state_dict(ckpt["ema"]))
        if ckpt.get("scaler_g"):
            part("gradient scaler state", lambda: self.scaler_g.load_state_dict(ckpt["scaler_g"]))
        if ckpt.get("scaler_d"):
            part("gradient scaler state", lambda: self.scaler_d.load_state_dict(ckpt["scaler_d"]))
        part("RNG state", lambda: restore_rng(ckpt["rng"]["global"]))
        part("noise RNG state", lambda: self.noise_gen.set_state(ckpt["rng"]["noise"]))
        if "augment" in ckpt["rng"]:  # checkpoints from before --augment have none (and no augmentation)
            part("augmentation RNG state", lambda: self.aug_gen.set_state(ckpt["rng"]["augment"]))

        def data_state():
            st = ckpt["rng"]["data"]
            self.data.load_state_dict(st)
            if not 0 <= self.data.seed <= MAX_SEED:
                raise ValueError(f"data seed {self.data.seed} is out of range [0, {MAX_SEED}]")
            if not (0 <= self.data.epoch <= 10 ** 12 and 0 <= self.data.index < self.data.batches_per_epoch):
                raise ValueError(f"data position (epoch {self.data.epoch}, batch {self.data.index}) is out of range "
                                 f"for {self.data.batches_per_epoch} batches per epoch")
        part("data position", data_state)
        self.step = int(ckpt["step"])
        self.saved_step = self.step
        try:
            self.elapsed = float(ckpt.get("elapsed", 0.0))
        except (TypeError, ValueError):
            self.elapsed = 0.0

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.run_dir, "checkpoints", "last.pt")

    def save_checkpoint(self, path: Optional[str] = None) -> str:
        """Write the checkpoint (rank 0 only; the ranks hold identical states). The file it
        replaces is kept as ``previous.pt``, the fallback of ``--resume auto``. A failed write
        (e.g. a full disk) raises CheckpointSaveError and leaves the previous file intact."""
        path = path or self.checkpoint_path
        if not self.is_main:
            return path
        if os.path.abspath(os.path.dirname(path)) == os.path.abspath(os.path.join(self.run_dir, "checkpoints")):
            rundir.safe_subdir(self.run_dir, "checkpoints")  # never through a link out of the run folder
        # The file being replaced becomes previous.pt (the fallback) only when it is a verified
        # checkpoint: after a resume from previous.pt past a corrupt last.pt, the corrupt file is
        # overwritten, never rotated over the one good fallback.
        rotate = path == self.checkpoint_path and self._last_is_verified()
        try:
            save_atomic(self.state_dict(), path, previous="previous.pt" if rotate else None)
        except OSError as e:
            intact = f"; the previous checkpoint {path!r} is intact" if os.path.isfile(path) else ""
            reason = getattr(e.__cause__, "strerror", None) or e.strerror or e
            raise CheckpointSaveError(e.errno, f"could not write checkpoint {path!r}: {reason}{intact}") from e
        if path == self.checkpoint_path:
            self._verified_last = True
        self.saved_step = self.step
        return path

    def _last_is_verified(self) -> bool:
        """Whether ``checkpoints/last.pt`` now holds a checkpoint that passes verification (this
        run wrote it, it is the one resumed from, or it loads and verifies now)."""
        if getattr(self, "_verified_last", None) is None:
            try:
                load_checkpoint(self.checkpoint_path)
                self._verified_last = True
            except (CheckpointError, OSError):
                self._verified_last = False
        return self._verified_last

    @classmethod
    def from_checkpoint(cls, path, overrides: Optional[Dict[str, Any]] = None,
                        dataset: Optional[ImageDataset] = None) -> "Trainer":
        """Resume: rebuild the run from the checkpoint's config (``overrides`` on top, e.g. a
        larger ``steps``) and restore its state. ``path`` is a checkpoint or a run folder.

        Where the resumed run writes is never taken from the checkpoint (a file can come from
        anywhere): ``overrides['out']`` if given, else the run folder the checkpoint lies in
        (``RUN/checkpoints/*.pt`` -> ``RUN``); a checkpoint elsewhere needs ``out``. Options that
        change the model (image size, widths, conditioning...) cannot be overridden."""
        overrides = dict(overrides or {})
        ckpt = load_checkpoint(path)
        src = os.fspath(path)
        if os.path.isdir(src):
            src = os.path.join(src, "checkpoints", "last.pt")
        saved = dict(ckpt["config"])
        if ckpt.get("sample_every_unit") != "steps" and saved.get("sample_every"):
            # A checkpoint from before sample_every counted steps: its value was in epochs (1
            # by default), which read as steps would write a grid at every step.
            saved["sample_every"] = None
        if overrides.get("out") is None:
            overrides.pop("out", None)
            out = run_dir_of(path)
            if out is None:
                raise ConfigError(f"checkpoint {src!r} does not lie in a run folder's checkpoints/; pass --out RUN "
                                  f"to say where the resumed run writes")
            overrides["out"] = out
        changed = [k for k in MODEL_KEYS if k in overrides and k in saved and overrides[k] != saved[k]
                   and not (k == "channels" and overrides[k] is None)]
        if changed:
            raise ConfigError(f"checkpoint {src!r}: a resumed run keeps its model; cannot change "
                              + ", ".join(f"{k} ({saved[k]!r} -> {overrides[k]!r})" for k in changed)
                              + " (start a new run in another --out for that)")
        try:
            cfg = TrainConfig.from_dict({**saved, **overrides})
        except ConfigError as e:
            raise ConfigError(f"checkpoint {src!r}: its config is not usable: {e}") from None
        check_model_size(ckpt, src)
        if dataset is None:
            dataset = load_dataset(cfg.data, cfg.image_size, cfg.channels)
        saved_g = ckpt.get("generator_config")
        if isinstance(saved_g, dict):
            # The conditioning comes from the data (its labels or its embeddings): data that would
            # condition the models otherwise is a model change, refused like the options above.
            was = describe_conditioning(saved_g.get("num_classes"), saved_g.get("embedding_dim"))
            now = describe_conditioning(*run_conditioning(cfg.conditional, dataset))
            if was != now:
                raise ConfigError(f"checkpoint {src!r}: a resumed run keeps its model, which is {was}, but the data "
                                  f"{dataset.name!r} would make it {now} (resume with the data the run was trained on)")
        trainer = cls(cfg, dataset=dataset)
        try:
            trainer.load_state_dict(ckpt, f"checkpoint {src!r}")
        except BaseException:
            trainer.close()
            raise
        try:
            if os.path.samefile(src, trainer.checkpoint_path):
                trainer._verified_last = True  # loaded and verified just now
        except OSError:
            pass
        return trainer

    # ------------------------------------------------------------------ the loop
    def _log(self, row: Dict[str, Any]) -> None:
        """One log.jsonl line (and its TensorBoard scalars). A row whose window covers fewer than
        ``log_every`` steps (a Ctrl-C, the first row after a resume, the last of a run whose
        length is not a multiple of log_every) carries ``"partial": true``; the plot skips it."""
        rundir.append_line(os.path.join(self.run_dir, "log.jsonl"), json.dumps(row))
        if self._tb is not None:
            for k in self.figures:
                self._tb.add_scalar(f"train/{k}", row[k], row["step"])

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # ImportError, or a tensorboard too old/new for this torch
            print('ganx: tensorboard is not installed; logging to log.jsonl only '
                  '(for TensorBoard logs: pip install "ganx[tensorboard]")')
            return
        self._tb = SummaryWriter(rundir.safe_subdir(self.run_dir, "tensorboard"), purge_step=self.step + 1)
        self._tb_hparams()

    def _tb_hparams(self) -> None:
        """The run's configuration in TensorBoard's HPARAMS tab, in this run's own event file
        (SummaryWriter.add_hparams would open a second run folder), with the final metrics as
        its metric columns (their values are the scalars written at the end of the run)."""
        from torch.utils.tensorboard.summary import hparams

        hp = {k: (v if isinstance(v, (bool, int, float, str)) else str(v))
              for k, v in self.config.to_dict().items()}
        exp, ssi, sei = hparams(hp, {f"metrics/{k}": 0.0 for k in TB_METRICS})
        writer = self._tb._get_file_writer()
        for summary in (exp, ssi, sei):
            writer.add_summary(summary)

    def _tb_metrics(self, metrics: Dict[str, Any]) -> None:
        for k in TB_METRICS:
            v = metrics.get(k)
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._tb.add_scalar(f"metrics/{k}", v, self.step)

    def acquire_run_folder(self) -> None:
        """Create the run folder and take its lock now (rank 0; ``fit`` does it anyway), so that a
        folder in use by another process is refused before the caller reports anything."""
        if self.is_main:
            rundir.check_run_dir(self.run_dir)
            self._lock.acquire()

    def _prepare_run_dir(self) -> None:
        """Take the run folder's lock, clean what interrupted runs left, write config.yaml and
        drop the log lines after the checkpoint, all without following links out of the folder."""
        import yaml

        rundir.check_run_dir(self.run_dir)
        self._lock.acquire()
        if self._lock.stale_note:
            rundir.warn(f"{self.run_dir}: {self._lock.stale_note}")
        n = rundir.clean_stale_temporaries(self.run_dir)
        if n:
            rundir.warn(f"{self.run_dir}: removed {n} temporary file(s) of interrupted saves")
        rundir.safe_subdir(self.run_dir, "samples")
        rundir.check_writable(rundir.safe_subdir(self.run_dir, "checkpoints"), ("last.pt", "previous.pt"))
        rundir.atomic_write(os.path.join(self.run_dir, "config.yaml"),
                            yaml.safe_dump(self.config.to_dict(), sort_keys=False), root=self.run_dir)
        # After a resume, drop log lines written after the checkpoint (they will be redone).
        # Never in place: a new file, fsynced, renamed over the old one (a kill leaves one of them).
        log = os.path.join(self.run_dir, "log.jsonl")
        if os.path.islink(log):
            raise rundir.RunFolderError(f"{log!r} is a symbolic link; ganx does not write through it. Remove the link")
        if os.path.isfile(log):
            keep, changed = [], False
            for line, row in read_log_lines(log):
                if row is not None and row.get("step", 0) <= self.step:
                    keep.append(line if line.endswith("\n") else line + "\n")
                else:
                    changed = True
            if changed:
                rundir.atomic_write(log, "".join(keep), root=self.run_dir)

    def fit(self, tensorboard: bool = True) -> Dict[str, Any]:
        """Train until ``config.steps``; returns the metrics that are also written to metrics.json.
        Holds the run folder's lock (one writer per folder) from start to end."""

        self._governor: Optional[ThreadGovernor] = None
        self._apply_process_settings()  # again: a second fit, or switches changed since __init__
        try:
            return self._fit(tensorboard)
        finally:
            if self._governor is not None:
                self._governor.close()
            self._restore_process_settings()
            self._lock.release()

    def _fit(self, tensorboard: bool) -> Dict[str, Any]:
        from tqdm.auto import tqdm

        cfg = self.config
        self.interrupted: Optional[str] = None
        self.start_step = self.step
        if self.is_main:
            self._prepare_run_dir()
        if self.step >= cfg.steps:
            # A finished run: complete what it lacks (a kill after its final checkpoint, or a
            # stop during its metrics), without training and without rewriting its checkpoint.
            if not self.is_main:
                return self._stopped_result({})
            return self._end_of_run(self._last_logged_row(), only_missing=True)
        if tensorboard and self.is_main:
            self._open_tensorboard()
        window: Dict[str, torch.Tensor] = {}
        n_window = 0
        window_from = self.step  # the step before the current log window's first step
        last_row: Dict[str, Any] = {}
        sample_every = cfg.sample_interval
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress and self.is_main),
                   desc="train", unit="step", bar_format=BAR_FORMAT)
        t0 = time.perf_counter()
        stop = faults.GracefulStop(announce=self.is_main)
        # Fewer threads while other processes hold cores; its last choice also serves the metrics.
        governor = self._governor = self._thread_governor(bar.write if self.is_main else None)
        try:
            stop.__enter__()
            while self.step < cfg.steps:
                governor.poll()
                figs = self.train_step()
                # SIGINT/SIGTERM: stop after this step, on every rank at the same step (decided
                # by a collective before any rank-dependent branch, so no rank waits alone).
                stopping = self.dist.any(stop.requested is not None, self.device) and self.step < cfg.steps
                # Accumulate on the device; read back (one host sync) only every log_every steps.
                if not self._skipped:
                    window = figs if not window else {k: window[k] + figs[k] for k in figs}
                    n_window += 1
                if window and (self.step % cfg.log_every == 0 or self.step == cfg.steps or stopping):
                    # Mean over the window and over the ranks (one all-reduce per log line).
                    vals = self.dist.mean(torch.stack([window[k] for k in self.figures]).div(n_window)).tolist()
                    last_row = {"step": self.step, "epoch": self.data.epoch, **dict(zip(self.figures, vals))}
                    if self.step - window_from < cfg.log_every:
                        last_row["partial"] = True
                        last_row["window_steps"] = self.step - window_from
                    if not all(math.isfinite(v) for v in vals):
                        raise FloatingPointError(f"non-finite losses at step {self.step}: {last_row}")
                    if self.is_main:
                        self._log(last_row)
                    bar.set_postfix_str(progress_postfix(last_row), refresh=False)
                    window, n_window, window_from = {}, 0, self.step
                bar.update(1)
                if sample_every and self.step % sample_every == 0 and self.step < cfg.steps and self.is_main:
                    self.save_samples(os.path.join(self.run_dir, "samples", f"step_{self.step:06d}.png"))
                if stopping:
                    self.interrupted = stop.requested or "a signal on another process"
                    break  # the checkpoint is written below
                if self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.elapsed += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self.save_checkpoint()
        finally:
            stop.__exit__()
            bar.close()
        self.elapsed += time.perf_counter() - t0
        self.save_checkpoint()
        if self.interrupted or not self.is_main:
            return self._stopped_result(last_row)
        return self._end_of_run(last_row)

    def _thread_governor(self, log) -> ThreadGovernor:
        """On the CPU with ``threads`` 0, not ``deterministic`` and no OMP_NUM_THREADS: fewer torch
        threads while other processes hold cores (train/cores.py); otherwise one that does nothing."""
        cfg = self.config
        auto = (self.device.type == "cpu" and not cfg.threads and not cfg.deterministic
                and not os.environ.get("OMP_NUM_THREADS"))
        return ThreadGovernor(enabled=auto, log=log)

    def _stopped_result(self, last_row: Dict[str, Any], **extra) -> Dict[str, Any]:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        return {"steps": self.step, "epochs": self.data.epoch, "interrupted": self.interrupted,
                "checkpoint": self.checkpoint_path, "final": {k: last_row.get(k) for k in self.figures}, **extra}

    def missing_outputs(self):
        """The end-of-run outputs a finished run lacks (a kill after its final checkpoint, or a
        stop during its metrics): ``samples/final.png`` and ``metrics.json``. ``fit()`` on a
        finished run writes exactly these (and ``losses.png`` when absent), without training."""
        return [name for name in (os.path.join("samples", "final.png"), "metrics.json")
                if not os.path.isfile(os.path.join(self.run_dir, name))]

    def _earlier_metrics(self) -> Optional[Dict[str, Any]]:
        """The quality figures of the run's existing metrics.json (with the step they were computed
        at), for a run resumed with metrics off; None when there are none."""
        path = os.path.join(self.run_dir, "metrics.json")
        try:
            with open(path) as f:
                old = json.load(f) if os.path.getsize(path) < (1 << 20) else None
        except (OSError, ValueError):
            return None
        if not isinstance(old, dict):
            return None
        if isinstance(old.get("earlier_metrics"), dict):
            return old["earlier_metrics"]
        keep = {k: v for k, v in old.items() if k in TB_METRICS or k.startswith(("kid", "classifier", "class_"))
                or k in ("feature_space", "n_generated", "n_real")}
        return {"steps": old.get("steps"), **keep} if any(k in TB_METRICS for k in keep) else None

    def _last_logged_row(self) -> Dict[str, Any]:
        log = os.path.join(self.run_dir, "log.jsonl")
        rows = [row for _, row in read_log_lines(log) if isinstance(row, dict)] if os.path.isfile(log) else []
        return next((row for row in reversed(rows) if row.get("step") == self.step), {})

    def _end_of_run(self, last_row: Dict[str, Any], only_missing: bool = False) -> Dict[str, Any]:
        """The final grid, the loss plot, the metrics and metrics.json (with ``only_missing``: only
        those the run folder lacks). SIGINT/SIGTERM during the metrics stop them; metrics.json
        is then not written, and the next resume computes them."""
        cfg = self.config
        final_png = os.path.join(self.run_dir, "samples", "final.png")
        losses_png = os.path.join(self.run_dir, "losses.png")
        if not (only_missing and os.path.isfile(final_png)):
            self.save_samples(final_png)
        if not (only_missing and os.path.isfile(losses_png)):
            plot_log(os.path.join(self.run_dir, "log.jsonl"), losses_png, self.loss.stats)
        metrics_path = os.path.join(self.run_dir, "metrics.json")
        if only_missing and os.path.isfile(metrics_path):
            try:
                with open(metrics_path) as f:
                    done = json.load(f)
                if isinstance(done, dict):
                    return done  # the run has its metrics: not recomputed, not rewritten
            except (OSError, ValueError):
                pass
        metrics: Dict[str, Any] = {"steps": self.step, "epochs": self.data.epoch,
                                   "train_seconds": round(self.elapsed, 3), "device": str(self.device),
                                   "final": {k: last_row.get(k) for k in self.figures}}
        if cfg.metrics:
            t = time.perf_counter()
            if cfg.progress:
                print(f"ganx: end-of-run metrics on {cfg.metric_samples} generated images "
                      f"(Ctrl-C stops them; the trained run is saved)", flush=True)
            try:
                with faults.StopRaises():
                    metrics.update(evaluate_generator(self.sampler, self.dataset, self.run_dir, n=cfg.metric_samples,
                                                      seed=cfg.seed + 3, feature_space=cfg.feature_space,
                                                      inception_weights=cfg.inception_weights, device=self.device))
            except faults.Stopped as e:
                self.interrupted = e.signal_name
                return self._stopped_result(last_row, during="metrics")
            metrics["metrics_seconds"] = round(time.perf_counter() - t, 3)
        else:
            earlier = self._earlier_metrics()
            if earlier:
                metrics["earlier_metrics"] = earlier  # a --no-metrics resume keeps the run's last results
        rundir.atomic_write(os.path.join(self.run_dir, "metrics.json"), json.dumps(metrics, indent=2),
                            root=self.run_dir)
        if self._tb is not None:
            self._tb_metrics(metrics)
            self._tb.close()
            self._tb = None
        return metrics
