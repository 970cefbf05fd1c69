"""Named `mftrnn train` runs of one plan, packed (as hydra/launcher=packed packs them), one worker per GPU.

On the GPU machine, after `source scripts/device_setup.sh`:
    timeout 560 python3 scripts/gpu/init_probe.py PLAN OUT_DIR
A killed call loses nothing: SIGTERM checkpoints every run of a pack, and the same command resumes
(finished runs are answered without training). Each run's metrics.jsonl, summary.json and train.log
go into OUT_DIR/PLAN.tgz, its last weights (for `mftrnn diagnose ckpt=...`) into OUT_DIR/<run>.pt.
The plans are the comparisons of docs/theory.md §10.6 and docs/results.md, with every init setting
written out as it ran (`critical` runs are the Haar family, `init.isometry=gain`, the default when
they ran): padded MNIST, rows, hidden 256, batch 128, Adam 1e-3, clip 1 (`mftrnn train`'s defaults);
`phase1000`: pad 1000, 4,000 steps: chrono and critical (seed 1) beside phase-limited critical
variants (seed 0); `gru_phase`: more writes and a second seed of the phase-limited GRU at pad 1000,
and pad 5000, 1,000 steps, seed 1 of chrono and critical beside the phase-limited GRU; `gru_phase2`:
the write 60 (second seed) and 90 at pad 1000, 60 and 30 (second seed) at pad 5000; `lstm_gated5000`:
the LSTM's Haar critical init with input- and state-dependent gates at pad 5000. A CPU rehearsal:
PROBE_EXTRA="device=cpu model.hidden=16 data.limit=512 train.steps=20 train.eval_every=10".
"""
from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

import torch

COMMON = ["task=padded_mnist", "train.progress=false", "wandb.mode=disabled", "train.ckpt_every=500"]
EXTRA = os.environ.get("PROBE_EXTRA", "").split()


P1000 = ["task.pad=1000", "train.steps=4000", "train.eval_every=200"]
P5000 = ["task.pad=5000", "train.steps=1000", "train.eval_every=250"]
PHASE = ["init=critical", "init.isometry=phase"]
HAAR = ["init=critical", "init.isometry=gain"]
PLANS = {
    "phase1000": {f"{cell}_{name}": [*P1000, f"cell={cell}", *over] for cell in ("lstm", "gru") for name, over in {
        "chrono_seed1": ["init=chrono", "seed=1"],
        "critical_seed1": [*HAAR, "seed=1"],
        "phase_w8_seed0": [*PHASE, "init.write=8", "seed=0"],
        "phase_w30_seed0": [*PHASE, "init.write=30", "seed=0"],
    }.items()},
    "gru_phase": {
        **{f"gru_{name}_pad1000": [*P1000, "cell=gru", *over] for name, over in {
            "phase_w30_seed1": [*PHASE, "init.write=30", "seed=1"],
            "phase_w60_seed0": [*PHASE, "init.write=60", "seed=0"],
            "phase_w120_seed0": [*PHASE, "init.write=120", "seed=0"],
        }.items()},
        **{f"{cell}_{name}_pad5000": [*P5000, f"cell={cell}", *over] for cell, name, over in (
            ("gru", "phase_w30_seed0", [*PHASE, "init.write=30", "seed=0"]),
            ("gru", "chrono_seed1", ["init=chrono", "seed=1"]),
            ("gru", "critical_seed1", [*HAAR, "seed=1"]),
            ("lstm", "chrono_seed1", ["init=chrono", "seed=1"]),
            ("lstm", "critical_seed1", [*HAAR, "seed=1"]))},
    },
    "gru_phase2": {
        **{f"gru_{name}_pad1000": [*P1000, "cell=gru", *over] for name, over in {
            "phase_w60_seed1": [*PHASE, "init.write=60", "seed=1"],
            "phase_w90_seed0": [*PHASE, "init.write=90", "seed=0"],
        }.items()},
        **{f"gru_{name}_pad5000": [*P5000, "cell=gru", *over] for name, over in {
            "phase_w60_seed0": [*PHASE, "init.write=60", "seed=0"],
            "phase_w30_seed1": [*PHASE, "init.write=30", "seed=1"],
        }.items()},
    },
    "lstm_gated5000": {"lstm_gated_seed0_pad5000": [*P5000, "cell=lstm", *HAAR, "init.gate_sigma=1",
                                                     "init.gate_nu=1", "seed=0"]},
}


def main() -> None:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from mftrnn.packed_train import Job, run_packs

    plan_name, out = sys.argv[1], Path(sys.argv[2])
    plan = PLANS[plan_name]
    root = Path(os.environ.get("PROBE_ROOT", "/tmp/probe")) / plan_name
    jobs = []
    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        for name, over in plan.items():
            cfg = compose(config_name="train", overrides=[*COMMON, *over, *EXTRA])
            OmegaConf.resolve(cfg)
            run_dir = root / name
            run_dir.mkdir(parents=True, exist_ok=True)
            jobs.append(Job(cfg, run_dir, run_dir / "train.log", label=name))
    workers = max(torch.cuda.device_count(), 1)
    try:
        outcomes = run_packs(jobs, None, workers)
        for job, res in zip(jobs, outcomes):
            acc = (res.summary or {}).get("test_acc")
            print(f"{job.label}: {res.kind or 'done'} test_acc={acc} {res.message}", flush=True)
    finally:
        out.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out / f"{plan_name}.tgz", "w:gz") as tar:
            for job in jobs:
                for f in ("metrics.jsonl", "summary.json", "train.log"):
                    if (job.run_dir / f).exists():
                        tar.add(job.run_dir / f, arcname=f"{job.label}/{f}")
        for job in jobs:  # the trained weights alone (no optimizer state): small enough to come back
            if (job.run_dir / "ckpt_last.pt").exists():
                state = torch.load(job.run_dir / "ckpt_last.pt", map_location="cpu", weights_only=False)
                torch.save({"model": state["model"], "step": state["step"]}, out / f"{job.label}.pt")


if __name__ == "__main__":
    main()
