"""Real MNIST and CIFAR-10 load, split and verify; missing or corrupt data fail clearly."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from mftrnn.data import CONTENT_SHA256, content_sha256, load_splits
from mftrnn.errors import DataError
from mftrnn.schema import DataConfig, Dataset


def test_mnist_splits(data_root):
    s = load_splits(Dataset.mnist, DataConfig(root=str(data_root), val_size=5000))
    assert s.train_x.shape == (55000, 28, 28) and s.val_x.shape == (5000, 28, 28) and s.test_x.shape == (10000, 28, 28)
    assert s.train_x.dtype.is_floating_point is False and s.train_y.max() == 9
    limited = load_splits(Dataset.mnist, DataConfig(root=str(data_root), limit=100))
    assert len(limited.train_x) == len(limited.val_x) == len(limited.test_x) == 100
    assert (limited.val_x == s.val_x[:100]).all()  # validation comes from the end of train, not test


def test_cifar_rebuild_passes_the_content_check(data_root):
    """The shared CIFAR-10 fails torchvision's MD5s (its `filenames` differ) but its pixels and
    labels are the originals: the content checksum accepts it."""
    s = load_splits(Dataset.cifar10, DataConfig(root=str(data_root), val_size=5000))
    assert s.train_x.shape == (45000, 32, 32, 3) and s.test_x.shape == (10000, 32, 32, 3)
    assert np.bincount(s.test_y.numpy()).tolist() == [1000] * 10


def test_missing_data_names_path_env_and_fix(tmp_path):
    with pytest.raises(DataError) as e:
        load_splits(Dataset.mnist, DataConfig(root=str(tmp_path / "nowhere")))
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "MFTRNN_DATA" in msg and "data.download=true" in msg


def test_corrupt_mnist_is_detected(data_root, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(data_root / "MNIST" / "raw", raw)
    f = raw / "t10k-images-idx3-ubyte"
    data = bytearray(f.read_bytes())
    data[5000] ^= 0xFF  # one pixel changed
    f.write_bytes(bytes(data))
    with pytest.raises(DataError, match="content checksum"):
        load_splits(Dataset.mnist, DataConfig(root=str(tmp_path)))


def test_truncated_cifar_is_detected(data_root, tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    shutil.copytree(data_root / "cifar-10-batches-py", base)
    f = base / "data_batch_3"
    f.write_bytes(f.read_bytes()[: 1 << 20])
    with pytest.raises(DataError, match="CIFAR-10"):
        load_splits(Dataset.cifar10, DataConfig(root=str(tmp_path)))


def test_content_checksum_covers_labels():
    x, y = np.zeros((2, 2), np.uint8), np.array([1, 2])
    assert content_sha256(x, y) != content_sha256(x, y[::-1])
    assert len(CONTENT_SHA256) == 4
