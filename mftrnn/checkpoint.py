"""Checkpoints: written atomically, holding everything a resumed run needs to continue exactly."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CKPT_NAME = "ckpt_last.pt"


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to `path` without ever leaving a half-written file: write a temp file, fsync,
    then rename over the old one (os.replace is atomic on POSIX)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path: Path) -> dict:
    # weights_only=False: the checkpoint holds RNG states (numpy arrays, tuples) written by mftrnn.
    return torch.load(path, map_location="cpu", weights_only=False)
