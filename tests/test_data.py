"""Data loaders, including the bad inputs, and the resumable batch iterator."""
import numpy as np
import pytest
import torch
from PIL import Image

from ganx.data import BatchIterator, DataError, load_dataset, load_digits_dataset


def _png(path, size=(10, 10), mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


def test_digits_default():
    ds = load_digits_dataset(32)
    assert ds.images.shape == (1797, 1, 32, 32) and ds.num_classes == 10
    assert ds.images.min() >= -1 and ds.images.max() <= 1
    assert ds.images.min() == -1 and ds.images.max() > 0.9
    assert load_dataset("digits", 16, channels=3).images.shape == (1797, 3, 16, 16)
    train, test = ds.split(0.2)
    assert len(train) + len(test) == 1797 and set(test.labels.tolist()) == set(range(10))


def test_folder_with_classes_and_mixed_sizes(tmp_path):
    _png(tmp_path / "cats" / "a.png", (10, 12), value=0)
    _png(tmp_path / "cats" / "deep" / "b.PNG", (30, 20), value=255)
    _png(tmp_path / "dogs" / "c.jpg", (16, 16), value=255)
    ds = load_dataset(str(tmp_path), 16)
    assert ds.images.shape == (3, 1, 16, 16)
    assert ds.class_names == ["cats", "dogs"] and ds.labels.tolist() == [0, 0, 1]
    assert ds.images[0].max() == -1 and ds.images[1].min() == pytest.approx(1)


def test_folder_without_classes(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "sub" / "b.png")
    ds = load_dataset(str(tmp_path), 16)
    assert ds.labels is None and len(ds) == 2


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"), 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="contains no PNG/JPEG"):
        load_dataset(str(tmp_path / "empty"), 16)
    bad = tmp_path / "bad"
    _png(bad / "ok.png")
    (bad / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.png"):
        load_dataset(str(bad), 16)


def test_folder_inconsistent_channels(tmp_path):
    _png(tmp_path / "grey.png", mode="L")
    _png(tmp_path / "colour.png", mode="RGB")
    with pytest.raises(DataError, match="mixes greyscale and colour"):
        load_dataset(str(tmp_path), 16)
    assert load_dataset(str(tmp_path), 16, channels=3).images.shape == (2, 3, 16, 16)
    assert load_dataset(str(tmp_path), 16, channels=1).images.shape == (2, 1, 16, 16)


def test_arrays(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", a)
    ds = load_dataset(str(tmp_path / "x.npy"), 16)
    assert ds.images.shape == (6, 3, 16, 16) and ds.labels is None
    np.savez(tmp_path / "x.npz", images=a.transpose(0, 3, 1, 2).astype(np.float32) / 255, labels=np.array(list("abcabc")))
    ds = load_dataset(str(tmp_path / "x.npz"), 16)
    assert ds.class_names == ["a", "b", "c"] and ds.labels.tolist() == [0, 1, 2, 0, 1, 2]
    np.save(tmp_path / "bad.npy", np.zeros((4, 5, 5, 5), np.float32))
    with pytest.raises(DataError, match="channel axis"):
        load_dataset(str(tmp_path / "bad.npy"), 16)
    np.savez(tmp_path / "nokey.npz", foo=a)
    with pytest.raises(DataError, match="'images'"):
        load_dataset(str(tmp_path / "nokey.npz"), 16)
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npz"), 16)


def test_torchvision_spec():
    with pytest.raises(DataError, match="torchvision:NAME:ROOT"):
        load_dataset("torchvision:MNIST", 16)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="needs torchvision"):
            load_dataset("torchvision:MNIST:/nonexistent", 16)


def test_batch_iterator_order_is_resumable():
    x = torch.arange(10.0).view(10, 1, 1, 1)
    it = BatchIterator(x, None, 3, seed=5)
    seq = [it.next()[0].flatten().tolist() for _ in range(7)]
    it2 = BatchIterator(x, None, 3, seed=5)
    for _ in range(4):
        it2.next()
    state = it2.state_dict()
    it3 = BatchIterator(x, None, 3, seed=0)
    it3.load_state_dict(state)
    assert [it3.next()[0].flatten().tolist() for _ in range(3)] == seq[4:]
    assert all(len(b) == 3 for b in seq)  # last partial batch dropped
    assert len(set(sum(seq[:3], []))) == 9  # an epoch visits distinct images
    with pytest.raises(ValueError, match="larger than the dataset"):
        BatchIterator(x, None, 11, seed=0)
