"""Loaders that turn a data source into an in-memory :class:`ImageDataset`.

Why in memory: the GAN datasets this toolkit targets (digits, small image folders, arrays)
fit in RAM, and an in-memory tensor makes the data order a pure function of (seed, epoch),
which is what lets a resumed run be bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ganx._limits import check_bytes

__all__ = ["DataError", "ImageDataset", "load_dataset", "load_digits_dataset", "load_image_folder",
           "load_array", "load_vectors", "load_torchvision", "IMAGE_EXTENSIONS", "held_bytes"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Pixels of one image file, checked from its header before it is decoded: a 164 KB PNG can
# declare 13000 x 13000 pixels (1.7 GB decoded). GANX_MAX_IMAGE_PIXELS overrides it.
MAX_IMAGE_PIXELS = 1 << 25


def _max_image_pixels() -> int:
    v = os.environ.get("GANX_MAX_IMAGE_PIXELS")
    if not v:
        return MAX_IMAGE_PIXELS
    try:
        n = int(v)
    except ValueError:
        n = 0
    if n < 1:
        raise DataError(f"GANX_MAX_IMAGE_PIXELS={v!r}: expected a positive integer")
    return n


class DataError(ValueError):
    """A data source that cannot be used as given (the message says which file and why)."""


@dataclass
class ImageDataset:
    """Images (N, C, H, W) float32 in [-1, 1], labels (N,) int64 or None, class names, and
    optionally one conditioning vector per image: ``embeddings`` (N, E) float32 (e.g. a text
    embedding; a .npz's ``embeddings`` array). A data set with embeddings trains a model
    conditioned on them; its labels, if any, then serve the metrics only."""

    images: torch.Tensor
    labels: Optional[torch.Tensor] = None
    class_names: List[str] = field(default_factory=list)
    name: str = ""
    note: str = ""  # why a data set that looks labelled has no labels (e.g. files outside the class folders)
    embeddings: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.images.dim() != 4:
            raise DataError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.embeddings is not None:
            e = self.embeddings
            if e.dim() != 2 or e.shape[1] < 1 or not e.is_floating_point():
                raise DataError(f"embeddings must be a float (N, E) tensor with E >= 1, got {e.dtype} of shape "
                                f"{tuple(e.shape)}")
            if len(e) != len(self.images):
                raise DataError(f"{len(self.images)} images but {len(e)} embeddings")
        if self.labels is not None and not self.class_names:
            self.class_names = [str(i) for i in range(int(self.labels.max()) + 1)]

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> Optional[int]:
        return len(self.class_names) if self.labels is not None else None

    @property
    def embedding_dim(self) -> Optional[int]:
        """E of the (N, E) embeddings; None when the data set has none."""
        return int(self.embeddings.shape[1]) if self.embeddings is not None else None

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        return self.images.shape[-1]

    def split(self, holdout: float = 0.2, seed: int = 0):
        """Deterministic (train, held-out) split: stratified by label when there are labels."""
        g = torch.Generator().manual_seed(seed)
        n = len(self)
        if self.labels is None:
            perm = torch.randperm(n, generator=g)
            k = int(round(n * holdout))
            return self._subset(perm[k:]), self._subset(perm[:k])
        train_idx, test_idx = [], []
        for c in range(self.num_classes):
            idx = torch.nonzero(self.labels == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            k = int(round(len(idx) * holdout))
            test_idx.append(idx[:k])
            train_idx.append(idx[k:])
        return self._subset(torch.cat(train_idx).sort().values), self._subset(torch.cat(test_idx).sort().values)

    def _subset(self, idx: torch.Tensor) -> "ImageDataset":
        return ImageDataset(self.images[idx], None if self.labels is None else self.labels[idx],
                            list(self.class_names), self.name,
                            embeddings=None if self.embeddings is None else self.embeddings[idx])


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) in [0, 1] -> (N, C, size, size): shorter side to ``size``, centre crop.

    Antialiased bilinear when shrinking (no aliasing), plain bilinear when enlarging.
    """
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=scale < 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size].clamp_(0, 1)


def _set_channels(x: torch.Tensor, channels: Optional[int], what: str) -> torch.Tensor:
    if channels is None or x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] == 3 and channels == 1:  # ITU-R 601 luma, what PIL's "L" conversion uses
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise DataError(f"{what}: cannot convert {x.shape[1]} channels to {channels}")


def _finish(x01: torch.Tensor, labels, class_names, image_size: int, channels: Optional[int],
            name: str, embeddings: Optional[torch.Tensor] = None) -> ImageDataset:
    # Clamped whether or not it was resized (the loaders already refuse values out of range;
    # this only removes the interpolation's overshoot, the same way at every size).
    x = _set_channels(_resize(x01.float(), image_size).clamp_(0, 1), channels, name)
    return ImageDataset(x.mul_(2).sub_(1).contiguous(), labels, class_names or [], name, embeddings=embeddings)


def load_digits_dataset(image_size: int = 16, channels: int = 1) -> ImageDataset:
    """sklearn's embedded digits (1,797 8x8 grey images, 10 classes; no download), resized."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values are 0..16
    y = torch.tensor(d.target, dtype=torch.int64)
    return _finish(x, y, [str(i) for i in range(10)], image_size, channels, "digits")


def _pil_to_tensor(img) -> torch.Tensor:
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float().div_(255.0)


def _normalise_mode(img, what: str = "image"):
    """PIL image -> mode "L" (grey) or "RGB" (colour); alpha is dropped, and a palette image
    whose palette is all greys counts as grey. 16-bit grey ("I;16", or "I" holding 0..65535)
    is scaled by 255/65535 (not clipped at 255, which is what PIL's own conversion does);
    float grey ("F") must hold 0..1 or 0..255."""
    from PIL import Image

    if img.mode.startswith("I") or img.mode == "F":
        a = np.asarray(img).astype(np.float64)
        hi, lo = (float(a.max()), float(a.min())) if a.size else (0.0, 0.0)
        if not np.isfinite(a).all():
            raise DataError(f"{what}: the image contains NaN or infinity")
        if img.mode == "F":
            if lo < 0 or hi > 255:
                raise DataError(f"{what}: float image values must lie in [0, 1] or [0, 255], got [{lo}, {hi}]")
            a = a * (1.0 if hi > 1 else 255.0)
        else:
            if lo < 0 or hi > 65535:
                raise DataError(f"{what}: integer image values must lie in [0, 65535], got [{lo}, {hi}]")
            a = a * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("1", "L", "LA"):
        return img.convert("L")
    rgb = img.convert("RGB")
    if img.mode == "P":
        a = np.asarray(rgb)
        if (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all():
            return img.convert("L")
    return rgb


def load_image_folder(root, image_size: int, channels: Optional[int] = None) -> ImageDataset:
    """All PNG/JPEG files under ``root`` (recursive). When every image lies inside a
    subfolder of ``root``, the first-level subfolder names (sorted) are the class labels.

    Channels: grey images give 1 channel, colour ones 3 (alpha is dropped). A folder that
    mixes both is an error unless ``channels`` is given, in which case all are converted.
    Images of different sizes are resized (shorter side, then centre crop).
    """
    from PIL import Image

    root = Path(root)
    if not root.exists():
        import difflib

        close = difflib.get_close_matches(str(root), ["digits"], n=1, cutoff=0.7)
        hint = "; did you mean 'digits' (the embedded data set)?" if close else ""
        raise DataError(f"image folder {str(root)!r} does not exist{hint}")
    if not root.is_dir():
        raise DataError(f"{str(root)!r} is not a folder (expected a folder of PNG/JPEG images, "
                        f"a .npy/.npz file, 'digits' or 'torchvision:NAME:ROOT')")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"image folder {str(root)!r} contains no PNG/JPEG images (searched recursively)")

    # Every image is held at image_size (colour at most): bounded before anything is decoded.
    check_bytes(held_bytes(len(files), image_size, channels or 3),
                f"image folder {str(root)!r} ({len(files)} images held at {image_size}x{image_size})", DataError)
    rel_parts = [p.relative_to(root).parts for p in files]
    labelled = all(len(parts) >= 2 for parts in rel_parts)
    class_names = sorted({parts[0] for parts in rel_parts}) if labelled else []
    if labelled and len(class_names) < 2:  # a single subfolder is just a folder, not classes
        labelled, class_names = False, []
    note = ""
    outside = [os.path.join(*parts) for parts in rel_parts if len(parts) < 2]
    if not labelled and len({parts[0] for parts in rel_parts if len(parts) >= 2}) >= 2:
        note = (f"{len(outside)} image(s) lie outside the class subfolders ({', '.join(map(repr, outside[:3]))}"
                f"{' ...' if len(outside) > 3 else ''}); move or remove them")
    class_index = {c: i for i, c in enumerate(class_names)}
    max_px = _max_image_pixels()
    # ganx checks the declared size itself (below, with its own lower limit and a message that
    # names the file); PIL's bomb check would raise before that, so it is off while reading.
    pil_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        ds = _load_image_files(root, files, labelled, class_names, class_index, rel_parts, image_size,
                               channels, max_px)
        ds.note = note
        return ds
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit


def _load_image_files(root, files, labelled, class_names, class_index, rel_parts, image_size, channels,
                      max_px) -> ImageDataset:
    from PIL import Image, UnidentifiedImageError

    tensors, modes = [], {}
    for p in files:
        try:
            with Image.open(p) as img:
                w, h = img.size  # from the header: nothing decoded yet
                if w * h > max_px:
                    raise DataError(f"image {str(p)!r} declares {w}x{h} pixels, more than the {max_px} ganx "
                                    f"decodes per image (set GANX_MAX_IMAGE_PIXELS to allow more)")
                img.load()
                img = _normalise_mode(img, str(p))
                grey = img.mode == "L"
        except DataError:
            raise
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError,
                MemoryError) as e:
            raise DataError(f"cannot read image {str(p)!r}: {' '.join(str(e).split())[:300]}") from None
        c = 1 if grey else 3
        modes.setdefault(c, p)
        t = _pil_to_tensor(img).unsqueeze(0)
        # Resize one by one: mixed sizes are allowed and are all brought to image_size.
        t = _resize(t, image_size)
        tensors.append(_set_channels(t, channels, str(p)) if channels else t)
    if channels is None and len(modes) > 1:
        raise DataError(f"image folder {str(root)!r} mixes greyscale and colour images "
                        f"(e.g. {str(modes[1])!r} is greyscale, {str(modes[3])!r} is colour); "
                        f"set channels to 1 or 3 to convert them all")
    x = torch.cat(tensors)
    labels = torch.tensor([class_index[parts[0]] for parts in rel_parts]) if labelled else None
    return _finish(x, labels, class_names, image_size, channels, str(root))


def _array_to_unit(a: np.ndarray, what: str) -> torch.Tensor:
    """Images array -> (N, C, H, W) float in [0, 1]. Accepts (N, H, W), (N, H, W, C) or
    (N, C, H, W) with C in {1, 3}; uint8 is 0..255, floats are taken as [-1, 1] if they go
    below 0, as [0, 1] if they stay in it, else as 0..255."""
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[-1] in (1, 3) and a.shape[1] not in (1, 3):
            a = a.transpose(0, 3, 1, 2)
        elif a.shape[1] not in (1, 3):
            raise DataError(f"{what}: cannot find the channel axis in shape {a.shape} (need 1 or 3 channels)")
    else:
        raise DataError(f"{what}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {a.shape}")
    if len(a) == 0:
        raise DataError(f"{what}: the array holds no images")
    if a.shape[2] == 0 or a.shape[3] == 0:
        raise DataError(f"{what}: its images are {a.shape[2]}x{a.shape[3]} pixels (shape {a.shape}); "
                        f"an image needs at least one pixel")
    if a.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(a)).float() / 255.0
    if a.dtype == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"{what}: images must be real numbers, got dtype {a.dtype} (ganx does not drop an "
                        f"imaginary part silently; pass np.abs(a) or a.real)")
    if not np.issubdtype(a.dtype, np.number):
        raise DataError(f"{what}: images must be numeric, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.integer):
        lo, hi = int(a.min()), int(a.max())
        if a.dtype == np.uint16:  # the 16-bit convention: 0..65535
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) / 65535.0
        if lo < 0 or hi > 255:
            raise DataError(f"{what}: {a.dtype} images must hold 0..255 (uint8's convention; uint16 is read as "
                            f"0..65535), got values in [{lo}, {hi}]")
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if not torch.isfinite(t).all():
        raise DataError(f"{what}: the array contains NaN or infinity (or values beyond float32's range)")
    lo, hi = float(t.min()), float(t.max())
    if lo < 0:
        if lo < -1 or hi > 1:
            raise DataError(f"{what}: float images with negative values must lie in [-1, 1], got [{lo}, {hi}]")
        return (t + 1) / 2
    if hi > 255:
        raise DataError(f"{what}: float images must lie in [-1, 1], [0, 1] or [0, 255], got [{lo}, {hi}]")
    return t if hi <= 1 else t / 255.0


def _npy_header(f, what: str):
    """(shape, dtype) of the .npy stream ``f`` from its header, without reading the data."""
    from numpy.lib import format as npf

    try:
        version = npf.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npf.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = npf.read_array_header_2_0(f)
    except (ValueError, OSError, SyntaxError, TypeError, EOFError) as e:
        raise DataError(f"cannot read array file {what}: {' '.join(str(e).split())[:200]}") from None
    return tuple(int(d) for d in shape), dtype


def held_bytes(n_images: int, image_size: int, channels: int) -> int:
    """Bytes of ``n_images`` as the training holds them: float32 at ``image_size``, ``channels``
    channels, with the copies made on the way (the resized images, then their channel conversion
    and scaling to [-1, 1]): about three float32 copies at the training size."""
    return 3 * 4 * n_images * channels * image_size * image_size


def _check_array_size(shape, dtype, what: str, stored: Optional[int] = None, image_size: Optional[int] = None,
                      channels: Optional[int] = None) -> None:
    n = 1
    for d in shape:
        n *= d
    nbytes = n * dtype.itemsize
    if stored is not None and nbytes > stored:
        raise DataError(f"{what}: its header declares {nbytes} bytes of data (shape {shape}, {dtype}) but the file "
                        f"holds only {stored}; the file is truncated or not what it claims")
    # The array itself and its float32 copy (itemsize + 4 bytes per value), and the images as they
    # will be held: resized to image_size, with `channels` channels (a small grey array upscaled
    # to 128px colour holds hundreds of times its size).
    need = n * (dtype.itemsize + 4)
    held = ""
    if image_size and len(shape) in (3, 4) and shape[0] > 0:
        src_c = 1 if len(shape) == 3 else (shape[1] if shape[1] in (1, 3) else shape[-1])
        c = channels or (src_c if src_c in (1, 3) else 3)
        need += held_bytes(shape[0], image_size, max(c, src_c if src_c in (1, 3) else 1))
        held = f", held as {shape[0]} images of {c}x{image_size}x{image_size}"
    check_bytes(need, f"{what} (shape {shape}, {dtype}{held})", DataError)


def _check_array_file(path: Path, image_size: Optional[int] = None, channels: Optional[int] = None) -> None:
    """Check the sizes every array of a .npy/.npz declares before numpy allocates them (and the
    images as they will be held at ``image_size`` with ``channels``)."""
    import zipfile

    what = repr(str(path))
    if path.suffix == ".npz":
        try:
            with zipfile.ZipFile(path) as z:
                for info in z.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    with z.open(info) as f:
                        shape, dtype = _npy_header(f, f"{what} ({info.filename})")
                    stored = info.file_size if info.compress_type == zipfile.ZIP_STORED else None
                    is_images = info.filename[:-4] in ("images", "x", "X")
                    _check_array_size(shape, dtype, f"{what} ({info.filename})", stored,
                                      image_size if is_images else None, channels)
        except zipfile.BadZipFile as e:
            raise DataError(f"cannot read array file {what}: {e}") from None
    else:
        with open(path, "rb") as f:
            shape, dtype = _npy_header(f, what)
            stored = os.fstat(f.fileno()).st_size - f.tell()
        _check_array_size(shape, dtype, what, stored, image_size, channels)


def _real(a: np.ndarray) -> bool:
    """Whether a conditioning vector array holds real numbers (not bool, not complex)."""
    return not (a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number)
                or np.issubdtype(a.dtype, np.complexfloating))


def _finite_float32(a: np.ndarray, error: str) -> torch.Tensor:
    """Conditioning vectors ``a`` (real numbers) as a float32 tensor; DataError(``error``) if one is
    NaN, infinite, or beyond float32's range (which the conversion makes infinite)."""
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused below
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if not torch.isfinite(t).all():
        raise DataError(error)
    return t


def _embeddings(e: np.ndarray, n: int, what: str) -> torch.Tensor:
    """A .npz's ``embeddings`` array checked: (N, E) real numbers, finite in float32, one row per image."""
    if e.ndim != 2 or e.shape[1] < 1:
        raise DataError(f"{what}: 'embeddings' must be an (N, E) array, one vector of E >= 1 values per image; got "
                        f"shape {e.shape}")
    if not _real(e):
        raise DataError(f"{what}: 'embeddings' must hold real numbers, got dtype {e.dtype}")
    if len(e) != n:
        raise DataError(f"{what}: {n} images but {len(e)} rows of 'embeddings' (one vector per image)")
    return _finite_float32(e, f"{what}: 'embeddings' contains NaN or infinity (or values beyond float32's range)")


def load_array(path, image_size: int, channels: Optional[int] = None) -> ImageDataset:
    """A .npy file of images, or a .npz with ``images`` (or ``x``), optional ``labels`` (or ``y``)
    and optional ``embeddings`` (N, E): one conditioning vector per image (see :class:`ImageDataset`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"array file {str(path)!r} does not exist")
    labels = emb = None
    _check_array_file(path, image_size, channels)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                key = next((k for k in ("images", "x", "X") if k in z.files), None)
                if key is None:
                    raise DataError(f"{str(path)!r}: a .npz needs an 'images' (or 'x') array, found {z.files}")
                a = z[key]
                lkey = next((k for k in ("labels", "y", "Y") if k in z.files), None)
                labels = z[lkey] if lkey else None
                emb = z["embeddings"] if "embeddings" in z.files else None
        else:
            a = np.load(path, allow_pickle=False)
    except DataError:
        raise
    except (ValueError, OSError, EOFError, MemoryError) as e:
        raise DataError(f"cannot read array file {str(path)!r}: {' '.join(str(e).split())[:300]}") from None
    x = _array_to_unit(a, str(path))
    embeddings = _embeddings(emb, len(x), repr(str(path))) if emb is not None else None
    class_names = []
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if np.issubdtype(labels.dtype, np.complexfloating) or not (
                np.issubdtype(labels.dtype, np.number) or labels.dtype.kind in "bUS"):
            raise DataError(f"{str(path)!r}: labels must be integers or strings, got dtype {labels.dtype}")
        if np.issubdtype(labels.dtype, np.floating):
            if not np.isfinite(labels).all():
                raise DataError(f"{str(path)!r}: the labels contain NaN or infinity")
            if not (labels == np.round(labels)).all():
                raise DataError(f"{str(path)!r}: float labels must be whole numbers (class indices)")
            labels = labels.astype(np.int64)
        if len(labels) != len(x):
            raise DataError(f"{str(path)!r}: {len(x)} images but {len(labels)} labels")
        # Any label values (ints or strings) map to 0..K-1 in sorted order.
        uniq, inv = np.unique(labels, return_inverse=True)
        class_names = [str(u) for u in uniq]
        labels = torch.from_numpy(inv.astype(np.int64))
        if len(class_names) < 2:
            labels, class_names = None, []
    return _finish(x, labels, class_names, image_size, channels, str(path), embeddings)


def load_vectors(path) -> torch.Tensor:
    """Conditioning vectors from a file (``ganx sample --embedding``): a .npy of shape (N, E), or
    (E,) for one vector, or a .npz's ``embeddings``; float32 (N, E), finite. A DataError naming
    the file otherwise."""
    p = Path(path)
    what = repr(str(path))
    if not p.is_file():
        raise DataError(f"{what}: no such file")
    if p.suffix not in (".npy", ".npz"):
        raise DataError(f"{what}: give a .npy file of vectors (N x E, or one vector of E values) or a .npz with an "
                        f"'embeddings' array")
    _check_array_file(p)  # declared sizes checked before numpy allocates them
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "embeddings" not in z.files:
                    raise DataError(f"{what}: the .npz has no 'embeddings' array (it holds {z.files})")
                a = z["embeddings"]
        else:
            a = np.load(p, allow_pickle=False)
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{what}: cannot read it ({' '.join(str(e).split())[:200]})") from None
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise DataError(f"{what}: expected vectors of shape (N, E) or (E,), got shape {a.shape}")
    if not _real(a):
        raise DataError(f"{what}: the vectors must be real numbers, got dtype {a.dtype}")
    return _finite_float32(a, f"{what}: the vectors contain NaN or infinity (or values beyond float32's range)")


def load_torchvision(name: str, root, image_size: int, channels: Optional[int] = None) -> ImageDataset:
    """A torchvision dataset (e.g. MNIST, CIFAR10) already on disk under ``root``; never downloads."""
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise DataError(f"data 'torchvision:{name}' needs torchvision, which is not installed "
                        f"(pip install torchvision matching your torch)") from e
    cls = getattr(tvd, name, None)
    if cls is None:
        raise DataError(f"torchvision.datasets has no dataset {name!r}")
    try:
        ds = cls(root=str(root), train=True, download=False)
    except TypeError:
        ds = cls(root=str(root), download=False)
    except RuntimeError:  # torchvision's "Dataset not found. You can use download=True"
        raise DataError(f"torchvision dataset {name} not found under {str(root)!r}: ganx never downloads; it reads "
                        f"the files that torchvision's own download writes, e.g. for MNIST "
                        f"ROOT/MNIST/raw/train-images-idx3-ubyte (and the other raw files), for CIFAR10 "
                        f"ROOT/cifar-10-batches-py/; download them once with torchvision "
                        f"(datasets.{name}(ROOT, download=True)) and pass that ROOT") from None
    check_bytes(held_bytes(len(ds), image_size, channels or 3),
                f"torchvision dataset {name} ({len(ds)} images held at {image_size}x{image_size})", DataError)
    xs, ys = [], []
    for img, y in ds:
        xs.append(_resize(_pil_to_tensor(img.convert("RGB") if img.mode not in ("L", "RGB") else img)
                          .unsqueeze(0), image_size))
        ys.append(int(y))
    if not xs:
        raise DataError(f"torchvision dataset {name} under {str(root)!r} is empty")
    names = [str(c) for c in getattr(ds, "classes", [])] or [str(i) for i in range(max(ys) + 1)]
    return _finish(torch.cat(xs), torch.tensor(ys), names, image_size, channels, f"torchvision:{name}")


def load_dataset(spec: str, image_size: int, channels: Optional[int] = None) -> ImageDataset:
    """Resolve a data spec: ``"digits"``, ``"torchvision:NAME:ROOT"``, a ``.npy``/``.npz`` file,
    or a folder of images."""
    if spec == "digits":
        return load_digits_dataset(image_size, channels or 1)
    if spec.startswith("torchvision:"):
        parts = spec.split(":", 2)
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise DataError(f"torchvision data spec must be 'torchvision:NAME:ROOT', got {spec!r}")
        return load_torchvision(parts[1], parts[2], image_size, channels)
    if spec.endswith((".npy", ".npz")):
        return load_array(spec, image_size, channels)
    return load_image_folder(os.path.expanduser(spec), image_size, channels)
