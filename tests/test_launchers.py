"""Sweeps on every GPU of a host (hydra/launcher=gpus) and on SLURM (hydra/launcher=slurm).

The GPU assignment is tested on the CPU with the GPU count faked (CUDA_VISIBLE_DEVICES lists GPUs
that are not there, or torch.cuda.device_count is replaced); the runs themselves then use device=cpu.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from conftest import TINY, run_cli
from mftrnn import gpus
from mftrnn.errors import ConfigError


# ----------------------------------------------------------------------------------------- unit
def test_visible_gpus_reads_cuda_visible_devices_or_counts(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2,3")
    assert gpus.visible_gpus() == ["0", "2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8a1b,GPU-77ff")  # UUIDs pass through
    assert gpus.gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,0")  # like CUDA: the list ends at a negative id
    assert gpus.visible_gpus() == ["1"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr("torch.cuda.device_count", lambda: 4)
    assert gpus.visible_gpus() == ["0", "1", "2", "3"]
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    with pytest.raises(ConfigError, match="drop hydra/launcher=gpus"):
        gpus.gpu_count()


def test_slots_are_exclusive_and_a_released_slot_is_reused(tmp_path):
    """flock is per open file: even in one process, a second lease of a held slot fails."""
    s0, fd0 = gpus.lease_slot(2, tmp_path)
    s1, fd1 = gpus.lease_slot(2, tmp_path)
    assert (s0, s1) == (0, 1)
    got = []
    waiter = threading.Thread(target=lambda: got.append(gpus.lease_slot(2, tmp_path, poll_s=0.02)))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got  # both slots held: it waits
    os.close(fd1)
    waiter.join(5)
    assert got and got[0][0] == 1
    os.close(fd0), os.close(got[0][1])


PIN = """
import json, os, sys, torch
from pathlib import Path
from mftrnn import gpus
torch.cuda.device_count = lambda: int(sys.argv[3])   # the faked GPU count
ids = gpus.visible_gpus()
lease = gpus.pin(int(sys.argv[2]), Path(sys.argv[1]), ids)
again = gpus.pin(int(sys.argv[2]), Path(sys.argv[1]), [])  # a worker's later jobs keep their lease
print(json.dumps({"slot": lease.slot, "gpu": lease.gpu, "env": os.environ["CUDA_VISIBLE_DEVICES"],
                  "same": again == lease, "ids": ids}))
"""


@pytest.mark.parametrize("slots,n_gpus,held,slot,gpu", [(4, 4, 2, 2, "2"), (4, 2, 3, 3, "1"), (2, 8, 0, 0, "0")])
def test_a_worker_pins_itself_to_the_gpu_of_its_slot(tmp_path, slots, n_gpus, held, slot, gpu):
    """`held` slots are taken by other live workers: the new worker gets the next one, and the GPU
    ids[slot % len(ids)] (round-robin when there are more slots than GPUs)."""
    fds = [gpus.lease_slot(slots, tmp_path)[1] for _ in range(held)]
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    out = subprocess.run([sys.executable, "-c", PIN, str(tmp_path), str(slots), str(n_gpus)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got == {"slot": slot, "gpu": gpu, "env": gpu, "same": True, "ids": [str(i) for i in range(n_gpus)]}
    for fd in fds:
        os.close(fd)


# ---------------------------------------------------------------------------------- config
def _hydra_cfg(overrides: list[str]):
    import mftrnn.train  # noqa: F401  registers the schemas and resolvers

    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def test_gpus_launcher_starts_one_worker_per_visible_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    cfg = _hydra_cfg(["hydra/launcher=gpus"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 3 and cfg.hydra.launcher.batch_size == "1"  # a str in joblib's schema
    assert _hydra_cfg(["hydra/launcher=gpus", "hydra.launcher.n_jobs=6"]).hydra.launcher.n_jobs == 6


def test_slurm_launcher_config_makes_a_valid_sbatch_script(tmp_path):
    """No SLURM here: the composed config goes through submitit's own parameter names and sbatch
    writer, as hydra-submitit-launcher passes it on before it calls sbatch."""
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    from submitit.slurm import slurm

    cfg = _hydra_cfg(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=90"])
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher.pop("_target_").endswith("SlurmLauncher")
    assert launcher.pop("max_num_timeout") >= 1 and launcher.pop("submitit_folder").endswith(".submitit/%j")
    base, eq = set(OmegaConf.structured(BaseQueueConf).keys()), slurm.SlurmExecutor._equivalence_dict()
    params = {eq[k] if k in eq else k: v for k, v in launcher.items()}
    assert set(launcher) - base <= slurm.SlurmExecutor._valid_parameters()  # the slurm-only keys exist
    params["mem"] = f"{params['mem']}GB"
    script = slurm._make_sbatch_string(command="python -m submitit.core._submit x", folder=tmp_path, map_count=100,
                                       **params)
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --time=90",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32GB", "#SBATCH --array=0-99%64"):
        assert line in script, line


# ------------------------------------------------------------------------------ end to end
def _placements(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.rglob(gpus.PLACEMENT_NAME))]


@pytest.mark.slow  # ~25 s: a real joblib sweep; slot logic and pinning are covered by the fast tests above
def test_gpu_sweep_pins_each_worker_and_reruns_resume(tmp_path, data_root):
    """4 runs on 2 (faked) GPUs through the real joblib launcher: each worker process holds one slot
    and one GPU for its life, concurrent workers never share one, and the run dirs are the basic
    launcher's. A rerun of the same sweep finds every run complete."""
    args = ["-m", "hydra/launcher=gpus", *TINY, "seed=0,1,2,3", f"hydra.sweep.dir={tmp_path}"]
    res = run_cli("train", *args, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert res.returncode == 0, res.stderr
    runs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("summary.json"))
    common = "data.limit=256,model.hidden=16,task.pad=10,train.batch_size=32"
    assert runs == [f"padded_mnist/lstm-standard/{common}/seed={s}" for s in range(4)]
    placed = _placements(tmp_path)
    assert sorted(p["job"] for p in placed) == [0, 1, 2, 3]
    slot_of = {}
    for p in placed:
        assert p["gpu"] == str(p["slot"]) and p["slots"] == 2
        assert slot_of.setdefault(p["pid"], p["slot"]) == p["slot"]  # a worker keeps its slot
    assert len(set(slot_of.values())) == len(slot_of)  # two workers never hold one slot
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")}
    again = run_cli("train", *args, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert again.returncode == 0 and (again.stdout + again.stderr).count("already complete") == 4
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")} == before


def test_a_failing_job_does_not_stop_the_rest_of_the_sweep(tmp_path, data_root):
    """An MftrnnError in one job (here: divergence with fail_on_divergence) is one line; the other job
    still finishes, and the sweep exits non-zero."""
    res = run_cli("train", "-m", "hydra/launcher=gpus", *TINY, "optim=sgd", "optim.clip=null",
                  "optim.lr=1e38,0.01", "train.fail_on_divergence=true", f"hydra.sweep.dir={tmp_path}",
                  env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert res.returncode != 0
    assert "mftrnn train: error: loss became non-finite" in res.stderr
    done = [json.loads(p.read_text()) for p in tmp_path.rglob("summary.json")]
    assert any(d["diverged"] is False and d["steps"] == 12 for d in done)


@pytest.mark.slow  # ~12 s; the sbatch lines are checked by the fast test above
def test_submitit_runs_the_sweep(tmp_path, data_root):
    """The same task function under submitit (its local executor: SLURM's code path without SLURM)."""
    res = run_cli("train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", *TINY,
                  "seed=0,1", f"hydra.sweep.dir={tmp_path}")
    assert res.returncode == 0, res.stderr
    assert len(list(tmp_path.rglob("summary.json"))) == 2
