"""Datasets for ganx: embedded sklearn digits (default), image folders, .npy/.npz arrays and
torchvision datasets already on disk. Everything is loaded into memory as one float tensor
in [-1, 1] (N, C, H, W) plus optional int64 labels; see :class:`ImageDataset`."""
from ganx.data.datasets import (  # noqa: F401
    DataError,
    ImageDataset,
    load_array,
    load_dataset,
    load_digits_dataset,
    load_image_folder,
    load_torchvision,
    load_vectors,
)
from ganx.data.loader import BatchIterator  # noqa: F401
