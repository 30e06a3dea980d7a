"""Training: the Trainer, its config, its losses, checkpoints, EMA."""
from ganx.train.checkpoint import load_checkpoint, save_atomic  # noqa: F401
from ganx.train.config import ConfigError, TrainConfig, load_config_file  # noqa: F401
from ganx.train.ema import EMA  # noqa: F401
from ganx.train.losses import LOSSES, GANLoss, build_loss  # noqa: F401
from ganx.train.trainer import Trainer, resolve_device  # noqa: F401
from ganx.train.rebuild import load_generator  # noqa: F401
