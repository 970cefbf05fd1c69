"""Datasets: real MNIST and CIFAR-10 through torchvision, checked, split and kept as uint8 tensors.

Images stay uint8 (MNIST (N, 28, 28), CIFAR-10 (N, 32, 32, 3)) and move to the training device
once; tasks (mftrnn/tasks.py) turn batches of them into float sequences there.

Integrity. torchvision checks MNIST by file presence only and CIFAR-10 by the MD5 of each batch
file. A faithful rebuild of CIFAR-10 (same pixels, labels and order, different `filenames` entries)
fails that MD5 check although its content is the original. mftrnn therefore checks what training
reads: a SHA-256 over the decoded pixels and labels of each split (:data:`CONTENT_SHA256`). Original
files and faithful rebuilds pass; anything truncated, altered or reordered fails with a DataError.
`python scripts/data_checksums.py ROOT` prints these sums for any copy.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10, MNIST

from mftrnn.errors import DataError
from mftrnn.schema import DataConfig, Dataset

log = logging.getLogger(__name__)

# SHA-256 of (pixels as uint8 bytes in torchvision's layout) + (labels as int64 bytes), per split.
# Computed from ../shared/data (MNIST: the original files, whose MD5s match torchvision's;
# CIFAR-10: the rebuild whose pixels and labels were verified against the originals, see its README).
CONTENT_SHA256 = {
    (Dataset.mnist, True): "d18cfd466eb143ac1097fde604dba9eec4116885869d04cc648b510949f9e88c",
    (Dataset.mnist, False): "a0863a96c44e5666edbb30c4071ee79ca0514c621e6349c5967fc78e7305c891",
    (Dataset.cifar10, True): "67e12c2a5906880a4fe5595fe6d768185ad7ca587f35d3a7ece3c3b8b85035d2",
    (Dataset.cifar10, False): "e54a434ec35094516eacbaac0f2f9550358d985e9d1f71b47d41d333c15ba304",
}
NAMES = {Dataset.mnist: "MNIST", Dataset.cifar10: "CIFAR-10"}
EXPECTED_FILES = {
    Dataset.mnist: "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte",
    Dataset.cifar10: "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
}


@dataclass
class Splits:
    """uint8 images and int64 labels of the train / validation / test splits."""

    train_x: torch.Tensor  # (N_train, 28, 28) or (N_train, 32, 32, 3), uint8
    train_y: torch.Tensor  # (N_train,), int64
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    def to(self, device: torch.device) -> "Splits":
        return Splits(*(t.to(device) for t in (self.train_x, self.train_y, self.val_x, self.val_y,
                                                self.test_x, self.test_y)))


def content_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    """SHA-256 of the pixels (uint8) followed by the labels (int64): what training actually reads."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def resolve_root(root: str) -> Path:
    return Path(os.path.expanduser(root)).resolve()


def _fix_hint(dataset: Dataset, root: Path) -> str:
    return (f"{NAMES[dataset]} not found or corrupt under {root} (expected {EXPECTED_FILES[dataset]}). "
            f"The data root comes from data.root, default: $MFTRNN_DATA if set, else ./data. "
            f"Fix: point MFTRNN_DATA (or data.root=...) at a folder that holds the files, "
            f"or add data.download=true to download them from the internet.")


def _read_raw(dataset: Dataset, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read one split through torchvision: (images uint8, labels int64) as numpy arrays."""
    try:
        if dataset is Dataset.mnist:
            ds = MNIST(str(root), train=train, download=download)
            return ds.data.numpy(), ds.targets.numpy().astype(np.int64)
        ds = _ContentCheckedCIFAR10(str(root), train=train, download=download)
        return ds.data, np.asarray(ds.targets, dtype=np.int64)
    except DataError:
        raise
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as exc:  # missing, truncated, unreadable
        raise DataError(_fix_hint(dataset, root) + f" [{type(exc).__name__}: {str(exc).splitlines()[0]}]") from None


class _ContentCheckedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 whose integrity check accepts the original batch files (their MD5s)
    and, failing that, defers to mftrnn's content checksum, verified after loading (never skipped)."""

    def _check_integrity(self) -> bool:
        base = Path(self.root) / self.base_folder
        return all((base / name).is_file() for name, _ in self.train_list + self.test_list)


def load_splits(dataset: Dataset, cfg: DataConfig) -> Splits:
    """Load, verify and split a dataset.

    Validation: the last `cfg.val_size` examples of the official training set (never the test set).
    `cfg.limit` keeps the first N examples of each split.
    """
    root = resolve_root(cfg.root)
    name = NAMES[dataset]
    arrays = {}
    for train in (True, False):
        images, labels = _read_raw(dataset, root, train, cfg.download)
        digest = content_sha256(images, labels)
        if digest != CONTENT_SHA256[(dataset, train)]:
            split = "train" if train else "test"
            raise DataError(f"{name} {split} split under {root} fails its content checksum "
                            f"(sha256 {digest[:12]}..., expected {CONTENT_SHA256[(dataset, train)][:12]}...): "
                            f"the files are corrupt or not the original dataset. " + _fix_hint(dataset, root))
        arrays[train] = (torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))
    log.info("%s under %s: %d train + %d test examples, content checksums verified", name, root,
             len(arrays[True][0]), len(arrays[False][0]))
    (xtr, ytr), (xte, yte) = arrays[True], arrays[False]
    if cfg.val_size >= len(xtr):
        raise DataError(f"data.val_size={cfg.val_size} leaves no training data ({name} has {len(xtr)})")
    n = len(xtr) - cfg.val_size
    splits = Splits(xtr[:n], ytr[:n], xtr[n:], ytr[n:], xte, yte)
    if cfg.limit is not None:
        k = cfg.limit
        splits = Splits(*(t[:k] for t in (splits.train_x, splits.train_y, splits.val_x, splits.val_y,
                                          splits.test_x, splits.test_y)))
    return splits
