"""What a checkpoint holds of a Trainer (written and read back here, side by side): the step, the
config, the models with their architecture records, the optimisers, the EMA, the gradient
scalers and every RNG, so that a resumed run continues exactly (bit-identical on the CPU)."""
from __future__ import annotations

from typing import Any, Dict

import torch

from ganx._version import __version__
from ganx.train.checkpoint import (FORMAT, CheckpointError, capture_rng, check_data_position, restore_part,
                                   restore_rng)
from ganx.train.conditioning import conditioning_record, describe_conditioning

__all__ = ["trainer_state", "restore_trainer_state"]


def trainer_state(t) -> Dict[str, Any]:
    """Everything needed to continue the run of the Trainer ``t`` exactly: tensors and plain types only."""
    return {
        "format": FORMAT,
        "ganx_version": __version__,
        "torch_version": str(torch.__version__),
        "step": t.step,
        "epoch": t.data.epoch,
        "elapsed": t.elapsed,
        "config": t.config.to_dict(),
        "sample_every_unit": "steps",  # older checkpoints counted sample_every in epochs
        "generator_arch": t.G.arch,
        "generator_config": t.G.config(),
        "discriminator_arch": t.D.arch,
        "discriminator_config": t.D.config(),
        "class_names": list(t.dataset.class_names) if t.num_classes else [],
        "conditioning": conditioning_record(t.num_classes, t.embedding_dim, t.grid),
        "G": t.G.state_dict(),
        "D": t.D.state_dict(),
        "opt_g": t.opt_g.state_dict(),
        "opt_d": t.opt_d.state_dict(),
        # t.sampler first: the EMA G's BatchNorm statistics recomputed, so the checkpoint samples as the run does
        "ema": t.ema.state_dict() if t.ema is not None and t.sampler is not None else None,
        "scaler_g": t.scaler_g.state_dict(),
        "scaler_d": t.scaler_d.state_dict(),
        "rng": {"global": capture_rng(), "noise": t.noise_gen.get_state(),
                "data": t.data.state_dict(), "augment": t.aug_gen.get_state()},
    }


def restore_trainer_state(t, ckpt: Dict[str, Any], name: str = "the checkpoint") -> None:
    """Restore the checkpoint ``ckpt`` (called ``name`` in messages) into the Trainer ``t``. A part
    that does not fit its model, optimisers or RNGs is a :class:`CheckpointError` naming it
    (nothing is half-applied to the models: the weights are checked before anything is loaded)."""
    saved = ckpt.get("generator_config")
    if isinstance(saved, dict):
        was = describe_conditioning(saved.get("num_classes"), saved.get("embedding_dim"))
        now = describe_conditioning(t.num_classes, t.embedding_dim)
        if was != now:
            raise CheckpointError(f"{name}: its models are {was}, but this run's data {t.dataset.name!r} "
                                  f"makes them {now} (resume with the data the run was trained on)")

    def part(what, fn):
        restore_part(name, what, fn)

    part("generator weights", lambda: t.G.load_state_dict(ckpt["G"]))
    part("discriminator weights", lambda: t.D.load_state_dict(ckpt["D"]))
    part("generator optimiser state", lambda: t.opt_g.load_state_dict(ckpt["opt_g"]))
    part("discriminator optimiser state", lambda: t.opt_d.load_state_dict(ckpt["opt_d"]))
    if t.ema is not None and ckpt.get("ema") is not None:
        part("EMA state", lambda: t.ema.load_state_dict(ckpt["ema"]))
    if ckpt.get("scaler_g"):
        part("gradient scaler state", lambda: t.scaler_g.load_state_dict(ckpt["scaler_g"]))
    if ckpt.get("scaler_d"):
        part("gradient scaler state", lambda: t.scaler_d.load_state_dict(ckpt["scaler_d"]))
    part("RNG state", lambda: restore_rng(ckpt["rng"]["global"]))
    part("noise RNG state", lambda: t.noise_gen.set_state(ckpt["rng"]["noise"]))
    if "augment" in ckpt["rng"]:  # checkpoints from before --augment have none (and no augmentation)
        part("augmentation RNG state", lambda: t.aug_gen.set_state(ckpt["rng"]["augment"]))
    part("data position", lambda: (t.data.load_state_dict(ckpt["rng"]["data"]), check_data_position(t.data)))
    t.step = int(ckpt["step"])
    t.saved_step = t.step
    try:
        t.elapsed = float(ckpt.get("elapsed", 0.0))
    except (TypeError, ValueError):
        t.elapsed = 0.0
