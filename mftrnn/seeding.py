"""Seeds, determinism and device choice: done once, before CUDA starts."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from mftrnn.errors import ConfigError
from mftrnn.schema import Device


def set_determinism(deterministic: bool) -> None:
    """cuDNN/cuBLAS deterministic settings (docs/usage.md, `deterministic`).

    CUBLAS_WORKSPACE_CONFIG must be in the environment before cuBLAS initializes, i.e. before the
    first CUDA kernel, so this runs before any tensor touches the GPU.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(deterministic)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def pick_device(choice: Device) -> torch.device:
    if choice is Device.cpu:
        return torch.device("cpu")
    if choice is Device.cuda:
        if not torch.cuda.is_available():
            raise ConfigError("device=cuda, but no CUDA device is visible; use device=auto or device=cpu")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def rng_state() -> dict:
    """Every global RNG state, for checkpoints."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
