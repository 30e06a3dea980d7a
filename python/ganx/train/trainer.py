"""The GAN training loop: alternating D and G updates, EMA, AMP, the run's checkpoints and its
end of run. What a run writes besides (logs, config.yaml, TensorBoard, metrics.json) is
train/runlog.py; its checks before it starts, train/preflight.py; its resolved config,
train/config.py; what it conditions on and its sample grids, train/conditioning.py."""
from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, Dict, Optional

import torch

from ganx.data import ImageDataset, load_dataset
from ganx.models import DISCRIMINATORS, GENERATORS
from ganx.models.common import latents
from ganx.train import distributed, faults, rundir
from ganx.train.augment import Augmented, DiffAugment
from ganx.train.checkpoint import RunCheckpoint, load_checkpoint
from ganx.train.conditioning import SampleGrid, conditioned_batches, model_args, run_conditioning
from ganx.train.config import TrainConfig, resolve_run_config
from ganx.train.cores import ThreadGovernor
from ganx.train.ema import EMA, recalibrate_batchnorm
from ganx.train.finish import end_of_run, stopped_result
from ganx.train.plots import save_grid
from ganx.train.losses import build_loss
from ganx.train.preflight import (check_buffer_cache_env, check_data, check_metric_options, check_model_memory,
                                  resolve_device, run_device)
from ganx.train.resume import check_resume_conditioning, resume_config
from ganx.train.runlog import BAR_FORMAT, LogWindow, RunLog, progress_postfix
from ganx.train.state import restore_trainer_state, trainer_state
from ganx.train.switches import ProcessSwitches

__all__ = ["Trainer", "resolve_device"]


class _SkipStep(Exception):
    """Raised inside an update whose loss is non-finite under ``skip_nonfinite``."""


def memory_format(cfg: TrainConfig, device: torch.device) -> torch.memory_format:
    """The layout of a run's models and images (``--memory-format``). 'auto': channels_last on CUDA
    (cuDNN's NHWC kernels, tensor cores under AMP) and on the CPU from 32 px up; contiguous below.
    On the 2-core CPU (torch 2.13.0+cpu, 2026-12-07, a noisy host: ranges over two runs each) a
    ResNet 32 px step took 0.21-0.25 s in NHWC against 0.26-0.34 s in NCHW, the DCGAN at 32 px
    0.056 against 0.065 s, but the DCGAN at its 16 px default 0.016-0.017 s against 0.014-0.016 s."""
    fmt = cfg.memory_format
    if fmt == "auto":
        fmt = "channels_last" if device.type == "cuda" or cfg.image_size >= 32 else "contiguous"
    return torch.channels_last if fmt == "channels_last" else torch.contiguous_format


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
    ``config.out``. The config is resolved once (train/config.py: ``resolve_run_config``), when
    the data is known; ``self.config`` is the resolved one.
    """

    def __init__(self, config: TrainConfig, dataset: Optional[ImageDataset] = None,
                 run_dir: Optional[str] = None):
        cfg = config.validate()
        self.dist = distributed.setup(cfg.device)  # no-op outside torchrun
        self.device = run_device(cfg, self.dist)  # this process's device (a ConfigError for a bad one)
        self.is_main = self.dist.is_main  # only rank 0 writes logs, samples and checkpoints
        self.config = cfg
        self._switches = ProcessSwitches(cfg, self.device)  # threads, deterministic mode, cudnn.benchmark
        self._switches.apply()
        try:
            self._build(cfg, dataset, run_dir)
        except BaseException:
            self._switches.restore()
            raise

    def close(self) -> None:
        """Give the process back its thread count, deterministic mode and cudnn.benchmark as
        they were before this Trainer was built. ``fit`` does it when it ends (and sets them again
        if called again); call it for a Trainer that is dropped without ``fit``."""
        self._switches.restore()

    def _build(self, cfg: TrainConfig, dataset: Optional[ImageDataset], run_dir: Optional[str]):
        torch.manual_seed(cfg.seed)
        if dataset is None:
            dataset = load_dataset(cfg.data, cfg.image_size, cfg.channels)
        check_data(cfg, dataset)
        cfg = resolve_run_config(cfg, dataset.channels, run_dir)
        if os.path.lexists(cfg.out) and not os.path.isdir(cfg.out):
            raise rundir.RunFolderError(f"run folder {cfg.out!r} exists and is not a folder (give --out a folder path)")
        self.config, self.dataset, self.run_dir = cfg, dataset, cfg.out
        self.runlog = RunLog(self.run_dir)  # its log, config.yaml, metrics.json, TensorBoard
        self.checkpoints = RunCheckpoint(self.run_dir)  # its checkpoints/last.pt (and previous.pt)
        # Conditioning: on the data's vectors when it has embeddings (its labels, if any, then serve
        # the metrics only), else on its classes; none with --no-conditional.
        self.num_classes, self.embedding_dim = run_conditioning(cfg.conditional, dataset)
        args = model_args(cfg, self.num_classes, self.embedding_dim)  # of the registry's from_config
        check_model_memory(cfg, args)
        check_metric_options(cfg, dataset)
        check_buffer_cache_env()

        # The architectures by name (ganx.models.registry); a checkpoint records both names.
        self.G = GENERATORS[cfg.generator].from_config(*args).to(self.device)
        self.D = DISCRIMINATORS[cfg.discriminator].from_config(*args).to(self.device)
        # --memory-format: the models' 4-D weights (and so their activations) and the real batches.
        self._memory_format = memory_format(cfg, self.device)
        self.G.to(memory_format=self._memory_format)
        self.D.to(memory_format=self._memory_format)
        if cfg.sync_batchnorm and self.dist.enabled:
            self.G = distributed.convert_sync_batchnorm(self.G, self.device)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=betas)
        self.ema = EMA(self.G, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self._recalibrated: Optional[int] = None  # the EMA update whose BatchNorm statistics were recomputed
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
        # The batches (their "labels": the conditioning), and the direction along which an embedding
        # batch is sorted before D sees it (see train_step).
        self.data, self._sort_direction = conditioned_batches(cfg, dataset, self.embedding_dim, self.device,
                                                              self.dist.rank, self.dist.world_size)
        self.step = 0
        self.saved_step: Optional[int] = None  # the step of the newest checkpoint of this run (None: none yet)
        self.start_step = 0  # the step this session started from (fit sets it)
        self.elapsed = 0.0  # training seconds over all sessions of this run
        # The fixed latents of the sample grids (one row per class or held embedding).
        self.grid = SampleGrid(self.num_classes, self.embedding_dim, dataset, cfg.latent_dim, cfg.seed + 2)

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

    def _update(self, loss: torch.Tensor, name: str, opt, scaler) -> None:
        """Backward of ``loss`` and one step of ``opt`` (through the AMP ``scaler``). A non-finite
        loss (on any rank; one host sync per update) stops the run (NonFiniteLossError), or skips
        the step (raises _SkipStep) under ``skip_nonfinite``."""
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        value = float(self.dist.mean(loss.detach().float()))
        if not math.isfinite(value):
            if not self.config.skip_nonfinite:
                raise faults.NonFiniteLossError(self.step + 1, name, value)
            self._skip_reason = f"{name} = {value}"
            raise _SkipStep
        scaler.step(opt)
        scaler.update()

    def d_step(self, real: torch.Tensor, labels: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """One discriminator update on a real batch and a detached generated batch."""
        real = real.contiguous(memory_format=self._memory_format)
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

    def _grouped(self, real: torch.Tensor, labels: Optional[torch.Tensor]):
        """The batch sorted by class so D's minibatch-std groups hold (mostly) one class, in the real
        half and in the fake half alike: D then sees the *within-class* spread, and a conditional G
        that ignores its noise gets caught (with random class order the spread is dominated by class
        differences, for real and fake alike). Embeddings are sorted by their projection on the
        data's principal direction: similar vectors then share groups (the labels a data set with
        embeddings may have are not used). Unchanged without labels or minibatch-std."""
        if labels is None or self.config.minibatch_std <= 1:
            return real, labels
        key = labels if self._sort_direction is None else labels @ self._sort_direction
        order = torch.argsort(key, stable=True)
        return real[order], labels[order]

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
            real, labels = self._grouped(real, labels)
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
        """The generator used for samples: the EMA copy when there is one, its BatchNorm statistics
        recomputed for its own weights (``bn_recalibration`` batches; once per EMA update)."""
        if self.ema is None:
            return self.G
        n = self.config.bn_recalibration
        if n and self._recalibrated != self.ema.num_updates:
            self._recalibrated = self.ema.num_updates
            recalibrate_batchnorm(self.ema.module, self._recalibration_batches(n))
        return self.ema.module

    def _recalibration_batches(self, n: int):
        """``n`` batches of G's inputs: latents and, for a conditional G, the labels or embeddings of
        random rows of the data (its class frequencies, as in training). They come from their own
        generator, seeded afresh each time: the run's random streams are untouched, and the same
        weights always get the same statistics."""
        gen = torch.Generator().manual_seed(self.config.seed + 5)
        conditioning = (self.dataset.embeddings if self.embedding_dim is not None
                        else self.dataset.labels if self.num_classes else None)
        bs = self.config.batch_size
        for _ in range(n):
            z = latents(bs, self.config.latent_dim, gen).to(self.device)
            y = None
            if conditioning is not None:
                y = conditioning[torch.randint(len(conditioning), (bs,), generator=gen)].to(self.device)
            yield z, y

    @torch.no_grad()
    def save_samples(self, path) -> None:
        """The fixed-latent sample grid as a PNG at ``path`` (and as a TensorBoard image)."""
        G = self.sampler
        was = G.training
        G.eval()
        y = self.grid.y.to(self.device) if self.grid.y is not None else None
        with self._autocast():
            imgs = G(self.grid.z.to(self.device), y)
        G.train(was)
        self.runlog.add_image(save_grid(imgs, path, self.grid.cols, root=self.run_dir), self.step)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue the run exactly: tensors and plain types only (the
        checkpoint's layout: train/state.py)."""
        return trainer_state(self)

    def load_state_dict(self, ckpt: Dict[str, Any], name: str = "the checkpoint") -> None:
        """Restore a checkpoint's state. A part that does not fit this trainer's model, optimisers
        or RNGs is a :class:`~ganx.train.checkpoint.CheckpointError` naming it (nothing is half-applied to the models:
        the weights are checked before anything is loaded)."""
        restore_trainer_state(self, ckpt, name)

    @property
    def checkpoint_path(self) -> str:
        return self.checkpoints.path

    def save_checkpoint(self, path: Optional[str] = None) -> str:
        """Write the checkpoint (rank 0 only; the ranks hold identical states); see
        :meth:`~ganx.train.checkpoint.RunCheckpoint.save` (previous.pt, CheckpointSaveError)."""
        path = path or self.checkpoint_path
        if not self.is_main:
            return path
        self.checkpoints.save(self.state_dict, path)
        self.saved_step = self.step
        return path

    @classmethod
    def from_checkpoint(cls, path, overrides: Optional[Dict[str, Any]] = None,
                        dataset: Optional[ImageDataset] = None) -> "Trainer":
        """Resume: rebuild the run from the checkpoint's config (``overrides`` on top, e.g. a
        larger ``steps``; see train/resume.py ``resume_config`` for what may change and where the
        run writes) and restore its state. ``path`` is a checkpoint or a run folder."""
        ckpt = load_checkpoint(path)
        src, cfg = resume_config(ckpt, path, overrides)
        if dataset is None:
            dataset = load_dataset(cfg.data, cfg.image_size, cfg.channels)
        check_resume_conditioning(ckpt, src, cfg, dataset)
        trainer = cls(cfg, dataset=dataset)
        try:
            trainer.load_state_dict(ckpt, f"checkpoint {src!r}")
        except BaseException:
            trainer.close()
            raise
        trainer.checkpoints.loaded_from(src)
        return trainer

    # ------------------------------------------------------------------ the loop
    def acquire_run_folder(self) -> None:
        """Create the run folder and take its lock now (rank 0; ``fit`` does it anyway), so that a
        folder in use by another process is refused before the caller reports anything."""
        if self.is_main:
            self.runlog.acquire()

    def missing_outputs(self):
        """The end-of-run outputs a finished run lacks (a kill after its final checkpoint, or a
        stop during its metrics): ``samples/final.png`` and ``metrics.json``. ``fit()`` on a
        finished run writes exactly these (and ``losses.png`` when absent), without training."""
        return self.runlog.missing_outputs()

    def fit(self, tensorboard: bool = True) -> Dict[str, Any]:
        """Train until ``config.steps``; returns the metrics that are also written to metrics.json.
        Holds the run folder's lock (one writer per folder) from start to end, and gives the
        process its torch switches back at the end."""
        from tqdm.auto import tqdm

        cfg = self.config
        self._switches.apply()  # again: a second fit, or switches changed since __init__
        with contextlib.ExitStack() as at_exit:  # run in reverse order, however fit ends
            at_exit.callback(self.runlog.release)
            at_exit.callback(self._switches.restore)
            self.interrupted: Optional[str] = None
            self.start_step = self.step
            if self.is_main:
                self.runlog.prepare(cfg, self.step)  # lock, config.yaml, log lines past the checkpoint dropped
            if self.step >= cfg.steps:
                # A finished run: complete what it lacks (a kill after its final checkpoint, or a
                # stop during its metrics), without training and without rewriting its checkpoint.
                if not self.is_main:
                    return stopped_result(self, {})
                return end_of_run(self, self.runlog.last_logged_row(self.step), only_missing=True)
            if tensorboard and self.is_main:
                self.runlog.open_tensorboard(cfg, self.step)
            window = LogWindow(self.figures, self.step)  # the figures since the last log line
            last_row: Dict[str, Any] = {}
            sample_every = cfg.sample_interval  # steps between sample grids (0: the final one only)
            bar = tqdm(total=cfg.steps, initial=self.step, disable=not (cfg.progress and self.is_main),
                       desc="train", unit="step", bar_format=BAR_FORMAT)
            t0 = time.perf_counter()
            stop = faults.GracefulStop(announce=self.is_main)  # SIGINT/SIGTERM: finish the step, save, stop
            # On the CPU with threads 0, not deterministic and no OMP_NUM_THREADS: fewer threads while
            # other processes hold cores (train/cores.py); its last choice also serves the metrics.
            auto_threads = (self.device.type == "cpu" and not cfg.threads and not cfg.deterministic
                            and not os.environ.get("OMP_NUM_THREADS"))
            governor = ThreadGovernor(enabled=auto_threads, log=bar.write if self.is_main else None)
            at_exit.callback(governor.close)
            with contextlib.closing(bar), stop:
                while self.step < cfg.steps:
                    governor.poll()
                    figs = self.train_step()
                    # A signal stops the run after this step, on every rank at the same step (decided
                    # by a collective before any rank-dependent branch, so no rank waits alone).
                    stopping = self.dist.any(stop.requested is not None, self.device) and self.step < cfg.steps
                    if not self._skipped:
                        window.add(figs)
                    if window.n and (self.step % cfg.log_every == 0 or self.step == cfg.steps or stopping):
                        last_row = window.row(self.step, self.data.epoch, cfg.log_every, self.dist.mean)
                        if self.is_main:
                            self.runlog.log(last_row, self.figures)
                        bar.set_postfix_str(progress_postfix(last_row), refresh=False)
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
            self.elapsed += time.perf_counter() - t0
            self.save_checkpoint()
            if self.interrupted or not self.is_main:
                return stopped_result(self, last_row)
            return end_of_run(self, last_row)
