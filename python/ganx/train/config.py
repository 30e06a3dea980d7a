"""Training configuration: one dataclass, its help text, and strict loading from dicts,
YAML/TOML files and command-line flags (unknown keys and wrong types are errors)."""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Optional, Union, get_args, get_origin, get_type_hints

from ganx.models.registry import DISCRIMINATORS, GENERATORS
from ganx.ops.bce import TARGET_RANGE  # the losses' own range, the one every layer checks
from ganx.train.augment import parse_policy
from ganx.train.losses import LOSSES

__all__ = ["TrainConfig", "ConfigError", "load_config_file", "load_yaml_file", "max_threads", "MAX_SEED",
           "resolve_run_config"]


class ConfigError(ValueError):
    """A configuration value or key that ganx cannot use; the message names it."""


MAX_SEED = 2 ** 63 - 8  # the seeds derived from it (seed + 1, + 2, + 3) stay within torch's int64 range


def max_threads() -> int:
    """The most CPU threads a run may ask for: the CPUs of this machine (more only oversubscribe
    them, and a huge count exhausts the process's thread limit inside OpenMP)."""
    return os.cpu_count() or 1


def _key(name: str) -> str:
    """A setting as the user may have typed it: the flag and the config-file key."""
    return f"--{name.replace('_', '-')} / config key {name!r}"


def _opt(default, help: str, choices=None, default_text=None):
    # default_text: what --help shows as the default when ``default`` is a placeholder (None) that
    # validate() resolves from other options.
    return field(default=default, metadata={"help": help, "choices": choices, "default_text": default_text})


@dataclass
class TrainConfig:
    """Everything a training run needs. Defaults train a conditional GAN on the embedded
    sklearn digits at 16x16 and meet the quality bar on a 2-core CPU (see scripts/quality.py)."""

    # data
    data: str = _opt("digits", "data source: 'digits' (embedded sklearn digits), a folder of PNG/JPEG "
                     "images (class subfolders become labels), a .npy/.npz array file (a .npz: 'images', optional "
                     "'labels' and 'embeddings'), or "
                     "'torchvision:NAME:ROOT' for a torchvision dataset already on disk")
    image_size: int = _opt(16, "image side in pixels (16, 32, 64 or 128); data is resized to it",
                           choices=(16, 32, 64, 128))
    channels: Optional[int] = _opt(None, "image channels, 1 or 3; default: those of the data",
                                   choices=(None, 1, 3))
    conditional: bool = _opt(True, "conditional GAN: on the data's 'embeddings' (one vector per image) when a .npz "
                             "has them, else on its class labels (needs labels); --no-conditional for unconditional")
    # models
    generator: str = _opt("dcgan", "generator architecture (ganx.models.registry): 'dcgan' = DCGAN on "
                          "ganx's fused upsample+conv; 'resnet' = SNGAN-style residual up-blocks on the fused "
                          "upsample+conv, conditional batch norm", choices=tuple(GENERATORS))
    discriminator: str = _opt("dcgan", "discriminator architecture (ganx.models.registry): 'dcgan' = strided "
                              "convs; 'resnet' = SNGAN-style residual down-blocks, spectral norm; both condition "
                              "by projection", choices=tuple(DISCRIMINATORS))
    latent_dim: int = _opt(64, "size of the Gaussian latent z")
    g_width: int = _opt(32, "generator width: channels of its last hidden block (doubling towards the input)")
    d_width: int = _opt(32, "discriminator width: channels of its first conv (doubling at every block)")
    spectral_norm: Optional[bool] = _opt(None, "spectral normalisation on every discriminator layer",
                                         default_text="on for --discriminator resnet, off for dcgan")
    minibatch_std: int = _opt(4, "discriminator minibatch-stddev group size against mode collapse "
                              "(0 = off); groups never mix real and fake samples")
    impl: str = _opt("fused", "'fused' = ganx's C++/CUDA kernels (upsample+conv, BCE / hinge / WGAN losses); "
                     "'reference' = plain PyTorch layers and losses, for comparison",
                     choices=("fused", "reference"))
    # optimisation
    steps: int = _opt(3000, "generator updates to train for")
    batch_size: int = _opt(64, "images per batch (real and fake alike)")
    d_steps: int = _opt(1, "discriminator updates per generator update")
    loss: Optional[str] = _opt(None, "adversarial loss, each fused: 'bce' (the classic GAN losses on logits), 'hinge' "
                               "(D: relu(1 - D(x)) + relu(1 + D(G(z))), G: -D(G(z))) or 'wgan' (D: D(G(z)) - D(x), "
                               "G: -D(G(z)); needs a Lipschitz constraint on D: --r1-gamma or --spectral-norm)",
                               choices=(None, *LOSSES),
                               default_text="hinge for --discriminator resnet, bce for dcgan")
    g_loss: str = _opt("non_saturating", "generator loss of --loss bce: 'non_saturating' (-log D(G(z))) or "
                       "'minimax' (log(1 - D(G(z))))", choices=("non_saturating", "minimax"))
    real_target: float = _opt(1.0, "target for real images in D's loss (--loss bce); < 1 is one-sided "
                              "label smoothing")
    augment: str = _opt("", "DiffAugment policy (Zhao et al. 2020): a comma-separated subset of 'color', "
                        "'translation', 'cutout', applied (differentiably, each image its own random draw) to "
                        "real and generated images alike before D, in D and G updates; '' = off. For small "
                        "data sets such as the digits")
    r1_gamma: float = _opt(0.0, "weight of the R1 penalty gamma/2 * E ||grad D(x)||^2 on real images added "
                           "to D's loss (StyleGAN's regulariser; 0 = off)")
    lr_g: float = _opt(2e-4, "Adam learning rate of the generator")
    lr_d: float = _opt(2e-4, "Adam learning rate of the discriminator")
    beta1: float = _opt(0.5, "Adam beta1 (both optimisers)")
    beta2: float = _opt(0.999, "Adam beta2 (both optimisers)")
    ema_decay: float = _opt(0.999, "decay of the exponential moving average of G's weights used for "
                            "sampling (0 disables it: samples come from G itself)")
    bn_recalibration: int = _opt(10, "batches (of --batch-size generated images) over which the EMA generator's "
                                 "BatchNorm statistics are recomputed before it draws samples or metrics or is "
                                 "saved (its weights are an average, so the statistics G gathered do not fit them); "
                                 "0 = use G's")
    # runtime
    device: str = _opt("auto", "'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'")
    amp: str = _opt("off", "mixed precision on CUDA: 'off', 'bf16' or 'fp16' (fp16 uses a gradient scaler)",
                    choices=("off", "bf16", "fp16"))
    memory_format: str = _opt("auto", "layout of the models' weights and images: 'channels_last' (NHWC, what "
                              "oneDNN's and cuDNN's fastest convolutions read), 'contiguous' (NCHW) or 'auto' "
                              "(channels_last on CUDA and for images of 32 px and more; contiguous for smaller "
                              "images on the CPU, where NHWC measured slower); the same numbers up to rounding",
                              choices=("auto", "channels_last", "contiguous"))
    seed: int = _opt(0, "seed of everything random: weights, noise, data order")
    deterministic: bool = _opt(False, "deterministic algorithms only (slower on CUDA; CPU runs are "
                               "reproducible anyway)")
    threads: int = _opt(0, "CPU threads for torch (0 = torch's default, lowered while other processes "
                                "hold cores; results may then differ in the last bits)")
    sync_batchnorm: bool = _opt(False, "multi-process runs (torchrun): BatchNorm statistics over the global "
                                "batch of all processes instead of each process's share")
    skip_nonfinite: bool = _opt(False, "skip a step whose loss is NaN/Inf (no update) instead of stopping "
                                "the run with an error")
    # outputs
    out: Optional[str] = _opt(None, "run folder; default runs/<data>-<date>-<time>")
    log_every: int = _opt(10, "steps between log lines (JSONL, TensorBoard, progress bar); "
                          "each line holds the mean of the figures since the previous one")
    checkpoint_every: int = _opt(1000, "steps between checkpoints (one is always written at the end)")
    sample_every: Optional[int] = _opt(None, "steps between sample grids (samples/step_NNNNNN.png, and "
                                       "TensorBoard images); the final grid (samples/final.png) is always "
                                       "written; 0 = only the final grid; default: a round number of steps "
                                       "giving 8-20 grids per run (200 for 3000 steps)")
    metrics: bool = _opt(True, "compute FID/KID and classifier metrics at the end of training")
    metric_samples: int = _opt(2000, "generated images used for the final metrics")
    feature_space: str = _opt("auto", "features for FID/KID: 'classifier' (a small CNN trained on the "
                              "labelled real data, cached in the run folder), 'inception' (needs "
                              "--inception-weights and torchvision) or 'auto' (classifier when the data "
                              "has labels)", choices=("auto", "classifier", "inception"))
    inception_weights: Optional[str] = _opt(None, "path to torchvision Inception-v3 weights (a state_dict "
                                            "file); ganx never downloads")
    progress: bool = _opt(True, "show a tqdm progress bar")

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> "TrainConfig":
        hints = get_type_hints(type(self))
        for f in fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), hints[f.name]))
            choices = f.metadata.get("choices")
            if choices is not None and getattr(self, f.name) not in choices:
                raise ConfigError(f"{_key(f.name)}: must be one of "
                                  f"{', '.join(map(repr, choices))}; got {getattr(self, f.name)!r}")
        # Defaults that depend on the architecture, resolved once here (config.yaml and the
        # checkpoints record the resolved values; an explicit value always wins).
        if self.spectral_norm is None:
            self.spectral_norm = self.discriminator == "resnet"
        auto_loss = self.loss is None
        if auto_loss:
            self.loss = "hinge" if self.discriminator == "resnet" else "bce"
        try:
            self.augment = parse_policy(self.augment)
        except ValueError as e:
            raise ConfigError(f"{_key('augment')}: {e}") from None
        for name in ("latent_dim", "g_width", "d_width", "steps", "batch_size", "d_steps", "log_every",
                     "checkpoint_every", "metric_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{_key(name)}: must be >= 1, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{_key(name)}: must be > 0, got {getattr(self, name)}")
        for name in ("beta1", "beta2", "ema_decay"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{_key(name)}: must be in [0, 1), got {getattr(self, name)}")
        if not TARGET_RANGE[0] <= self.real_target <= TARGET_RANGE[1]:
            raise ConfigError(f"{_key('real_target')}: must be in [0, 1], got {self.real_target}")
        if self.loss != "bce" and (self.g_loss != "non_saturating" or self.real_target != 1):
            raise ConfigError(f"--g-loss and --real-target (config keys 'g_loss', 'real_target') belong to loss 'bce'; "
                              f"loss {self.loss!r} has neither (leave them at their defaults)"
                              + (f"; {self.loss!r} is the default loss of --discriminator {self.discriminator}, "
                                 f"--loss bce selects bce" if auto_loss else ""))
        if not self.r1_gamma >= 0:
            raise ConfigError(f"{_key('r1_gamma')}: must be >= 0, got {self.r1_gamma}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError(f"{_key('seed')}: must be in [0, 2**63 - 8], got {_short(self.seed, 40)}")
        if (self.sample_every is not None and self.sample_every < 0) or self.threads < 0 or self.bn_recalibration < 0:
            raise ConfigError("--sample-every, --threads and --bn-recalibration (config keys 'sample_every', 'threads', "
                              "'bn_recalibration') must be >= 0")
        if self.threads > max_threads():
            raise ConfigError(f"{_key('threads')}: {self.threads} is more than the {max_threads()} CPUs of this "
                              f"machine (use 0 for torch's default, or at most {max_threads()})")
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{_key(f.name)}: must be a finite number, got {v}")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
            raise ConfigError(f"{_key('device')}: must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {dev!r}")
        return self

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """Strict: unknown keys are an error that lists the valid ones. Dashes work like underscores."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of keys to values, got {type(d).__name__}")
        d = {str(k).replace("-", "_"): v for k, v in d.items()}
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            import difflib

            hints = [f"{_short(u, 60)}: did you mean {close[0]!r}?" for u in unknown[:10]
                     for close in [difflib.get_close_matches(u, sorted(names), n=1, cutoff=0.75)] if close]
            raise ConfigError(f"unknown config key(s) {', '.join(_short(u, 60) for u in unknown[:10])}"
                              + "".join(f"; {h}" for h in hints) + f"; valid keys: {', '.join(sorted(names))}")
        return cls(**d)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @property
    def sample_interval(self) -> int:
        """Steps between sample grids (0 = none but the final one). The default is the smallest
        number of the form 1, 2 or 5 x 10^k that is at least steps / 20: 8 to 20 grids per run."""
        if self.sample_every is not None:
            return self.sample_every
        target = self.steps / 20
        k = 1
        while True:
            for m in (1, 2, 5):
                if m * k >= target:
                    return m * k
            k *= 10


def absolute_data(spec: str) -> str:
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


def resolve_run_config(cfg: TrainConfig, data_channels: int, run_dir: Optional[str] = None) -> TrainConfig:
    """The config a run records (config.yaml, its checkpoints), with every default that depends on
    the data or the moment resolved, in one step: ``channels`` those of the data (``data_channels``)
    when not given, ``data`` an absolute path (so a resume from another working directory finds
    it; a --data given then still wins), ``out`` default runs/<data>-<date>-<time>, and ``run_dir``
    (when given) in place of ``out``. ``cfg`` itself is not changed; it is returned as it is when
    nothing needs resolving."""
    changes: Dict[str, Any] = {}
    if cfg.channels is None:
        changes["channels"] = data_channels
    if cfg.data != absolute_data(cfg.data):
        changes["data"] = absolute_data(cfg.data)
    if run_dir is not None:
        changes["out"] = os.fspath(run_dir)
    elif cfg.out is None:
        data = changes.get("data", cfg.data)
        stem = os.path.basename(os.path.normpath(data)).split(":")[-1] or "run"
        changes["out"] = os.path.join("runs", f"{stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    return cfg.replace(**changes) if changes else cfg


def _coerce(name: str, value: Any, typ) -> Any:
    """Check ``value`` against the annotated type. Ints are accepted where floats are expected
    (YAML writes 1e-3 as a string, so numeric strings are accepted for floats too); nothing
    else is converted silently."""
    optional = get_origin(typ) is Union and type(None) in get_args(typ)
    if optional:
        if value is None:
            return None
        typ = next(a for a in get_args(typ) if a is not type(None))
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, os.PathLike):
            return os.fspath(value)
    tname = getattr(typ, "__name__", str(typ)) + (" or null" if optional else "")
    raise ConfigError(f"{_key(name)}: expected {tname}, got {type(value).__name__} {_short(value)}")


def _short(value: Any, limit: int = 120) -> str:
    """repr of a value for an error message, cut short (a YAML alias bomb must not become a
    gigabyte-long message)."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxstring, r.maxother = 3, limit, limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 8
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred bytes; anything near this is not one
MAX_YAML_NODES = 100_000  # values after expanding aliases; a config has a few dozen


def _yaml_load(f):
    """yaml.safe_load that first counts the values the document holds with its aliases
    expanded, and refuses more than MAX_YAML_NODES (a "billion laughs" file of a few hundred
    bytes would otherwise expand to gigabytes when it is copied or printed)."""
    import yaml

    loader = yaml.SafeLoader(f)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        memo: Dict[int, int] = {}

        def size(n, depth=0) -> int:
            if id(n) in memo:
                return memo[id(n)]
            if depth > 100:
                raise yaml.YAMLError("nested more than 100 levels deep")
            memo[id(n)] = 1  # a (recursive) alias to an ancestor counts once
            if isinstance(n, yaml.SequenceNode):
                total = 1 + sum(size(c, depth + 1) for c in n.value)
            elif isinstance(n, yaml.MappingNode):
                total = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
            else:
                total = 1
            memo[id(n)] = total
            if total > MAX_YAML_NODES:
                raise yaml.YAMLError(f"it expands to more than {MAX_YAML_NODES} values through its aliases "
                                     f"(*name); refused (a config holds a few dozen)")
            return total

        size(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml_file(path, what: str = "YAML file") -> Any:
    """Every YAML file ganx reads (a --config file, a run folder's config.yaml) goes through here:
    at most MAX_CONFIG_BYTES, aliases expanded to at most MAX_YAML_NODES values, no Python tags
    (yaml.SafeLoader). A ConfigError naming the file otherwise."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise ConfigError(f"{what} {path!r} cannot be read ({e.strerror or e})") from None
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} {path!r} is {size} bytes; a config file must be under {MAX_CONFIG_BYTES} bytes")
    try:
        with open(path, encoding="utf-8") as f:
            return _yaml_load(f)
    except Exception as e:  # yaml.YAMLError, OSError, UnicodeDecodeError: the parser's message
        msg = " ".join(str(e).split())
        raise ConfigError(f"{what} {path!r} could not be parsed: {msg[:400]}") from None


def load_config_file(path) -> Dict[str, Any]:
    """Read a YAML (.yaml/.yml) or TOML (.toml) config file into a dict (not yet validated)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    if os.path.getsize(path) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path!r} is {os.path.getsize(path)} bytes; a config file must be under "
                          f"{MAX_CONFIG_BYTES} bytes")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".toml":
            import tomllib  # Python >= 3.11

            with open(path, "rb") as f:
                d = tomllib.load(f)
        elif ext in (".yaml", ".yml"):
            d = load_yaml_file(path, "config file") or {}
        else:
            raise ConfigError(f"config file {path!r}: use a .yaml, .yml or .toml file")
    except ConfigError:
        raise
    except ImportError as e:
        raise ConfigError(f"config file {path!r}: TOML needs Python >= 3.11 (tomllib)") from e
    except Exception as e:  # yaml.YAMLError, tomllib.TOMLDecodeError: show the parser's message
        msg = " ".join(str(e).split())
        raise ConfigError(f"config file {path!r} could not be parsed: {msg[:400]}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of keys to values")
    return d
