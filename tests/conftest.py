"""Shared fixtures: real data from ../shared/data (or $MFTRNN_DATA), configs composed as the CLI does."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MFTRNN_DATA", str((REPO.parent / "shared" / "data").resolve()))
DATA = Path(os.environ["MFTRNN_DATA"])
MFTRNN = Path(sys.executable).parent / "mftrnn"  # the installed console script

# A run small enough for the CPU: hidden 16, short padding, a few hundred examples, the theory of the write
# (init=critical's drive, docs/theory.md §10.8) on 4 pairs and 500 units.
TINY_RUN = ["model.hidden=16", "data.limit=256", "train.batch_size=32", "train.steps=12",
        "train.log_every=4", "train.eval_every=8", "train.ckpt_every=4", "train.eval_batch_size=128",
        "train.progress=false", "device=cpu", "wandb.mode=disabled", "init.drive.pairs=4", "init.drive.population=500"]
TINY = TINY_RUN + ["task.pad=10"]  # padded MNIST (the default task), 38 steps


def compose_train(overrides: list[str] = ()):
    """The composed `mftrnn train` config (a DictConfig), as Hydra builds it for the command line."""
    import mftrnn.train  # noqa: F401  registers the schemas and the run_tag resolver

    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300):
    """Run the installed `mftrnn` command; returns the CompletedProcess (text output)."""
    full_env = {**os.environ, "MFTRNN_DATA": str(DATA), "HYDRA_FULL_ERROR": "", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR")
    return subprocess.run([str(MFTRNN), *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)


@pytest.fixture
def one_thread():
    """Small float64 linear algebra is fastest single-threaded on 2 shared cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def data_root() -> Path:
    assert (DATA / "MNIST" / "raw").is_dir(), f"test data not found: set MFTRNN_DATA (looked in {DATA})"
    return DATA
