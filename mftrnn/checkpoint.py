"""Checkpoints: written atomically, the previous one kept beside the last, read back with a fallback.

A run dir holds ckpt_last.pt (the newest) and ckpt_prev.pt (the one before). A new checkpoint is
written to a temporary file first; only once it is complete on disk does the last one become the
previous one and the new one the last. A crash, a kill or a full disk at any moment leaves at least
one intact checkpoint, and `load_latest` resumes from the newest one that can be read.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

from mftrnn.errors import MftrnnError

CKPT_NAME = "ckpt_last.pt"
PREV_NAME = "ckpt_prev.pt"


class CheckpointError(MftrnnError):
    """A checkpoint could not be written, or none of a run dir's checkpoints can be read."""


def save_atomic(obj: Any, path: Path, keep_previous: bool = True) -> None:
    """torch.save to `path` without ever leaving a half-written file: write a temp file, fsync, then
    (keep_previous) move the old file to ckpt_prev.pt and rename the new one over it (os.replace is
    atomic on POSIX). If writing fails (a full disk), the temp file is removed, the older checkpoints
    are untouched, and a CheckpointError names the file and the cause."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.replace(path, path.with_name(PREV_NAME))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        kept = [p.name for p in (path, path.with_name(PREV_NAME)) if p.exists()]
        raise CheckpointError(f"could not write the checkpoint {path} ({exc.strerror or exc}); "
                              f"{'kept: ' + ', '.join(kept) if kept else 'no older checkpoint'} - "
                              f"free space or fix the run dir, then run the same command again") from None


def load(path: Path) -> dict:
    # weights_only=False: the checkpoint holds RNG states (numpy arrays, tuples) written by mftrnn.
    return torch.load(path, map_location="cpu", weights_only=False)


def load_latest(run_dir: Path) -> tuple[Optional[dict], Optional[Path], list[str]]:
    """The newest checkpoint of `run_dir` that can be read: (state, its path, one line per damaged file
    skipped). (None, None, []) when the run dir has none. If checkpoints exist but none can be read,
    a CheckpointError names them and the fix."""
    damaged = []
    candidates = [p for p in (run_dir / CKPT_NAME, run_dir / PREV_NAME) if p.exists()]
    for path in candidates:
        try:
            state = load(path)
            if not isinstance(state, dict) or "step" not in state or "model" not in state:
                raise ValueError("not an mftrnn training checkpoint")
            return state, path, damaged
        except Exception as exc:  # a truncated zip, a pickle error, a foreign file: all mean "unreadable"
            damaged.append(f"{path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    if candidates:
        names = " and ".join(str(p) for p in candidates)
        raise CheckpointError(f"no intact checkpoint to resume from: {names} cannot be read; "
                              f"start over with train.resume=never (or delete them)")
    return None, None, damaged
