"""Named `mftrnn train` runs of one plan, packed (as hydra/launcher=packed packs them), one worker per GPU.

On the GPU machine, after `source scripts/device_setup.sh`:
    timeout 560 python3 scripts/gpu/init_probe.py PLAN OUT_DIR
A killed call loses nothing: SIGTERM checkpoints every run of a pack, and the same command resumes
(finished runs are answered without training). Each run's metrics.jsonl, summary.json and train.log
go into OUT_DIR/PLAN.tgz, its last weights (for `mftrnn diagnose ckpt=...`) into OUT_DIR/<run>.pt.
The plans are the comparisons of docs/theory.md §10.6 and docs/results.md, with every init setting
written out as it ran (`critical` runs are the Haar family, `init.isometry=gain`, and all runs before
`nu1000` had the gates' input scale 0.1, `init.drive.gates=0.1`, the defaults when they ran): padded
MNIST, rows, hidden 256, batch 128, Adam 1e-3, clip 1 (`mftrnn train`'s defaults);
`phase1000`: pad 1000, 4,000 steps: chrono and critical (seed 1) beside phase-limited critical
variants (seed 0); `gru_phase`: more writes and a second seed of the phase-limited GRU at pad 1000,
and pad 5000, 1,000 steps, seed 1 of chrono and critical beside the phase-limited GRU; `gru_phase2`:
the write 60 (second seed) and 90 at pad 1000, 60 and 30 (second seed) at pad 5000; `lstm_gated5000`:
the LSTM's Haar critical init with input- and state-dependent gates at pad 5000; `nu1000`: the gates'
input scale swept at pad 1000 beside chrono and the earlier critical defaults (docs/theory.md §10.7);
`nu5000` and `nu1000_long`: the then default (init.drive.gates=10 written out), two seeds, at pad 5000
(1,000 steps) and pad 1000 (4,000 steps); `drive_pad10000`: critical, chrono and chrono with critical's
drive at pad 10000 (500 steps, two seeds); `drive_unrolled`, `drive_permuted`, `drive_cifar10`,
`drive_noise`, `drive_repeated2`: the same three arms and chrono with nu = 10 on the tasks whose long
stretch carries input (300 steps, two seeds). Plans of more than MAX_WEIGHTS runs keep no weights.
A CPU rehearsal:
PROBE_EXTRA="device=cpu model.hidden=16 data.limit=512 train.steps=20 train.eval_every=10".
"""
from __future__ import annotations

import os
import sys
import tarfile
from pathlib import Path

import torch

COMMON = ["task=padded_mnist", "train.progress=false", "wandb.mode=disabled", "train.ckpt_every=500"]
MAX_WEIGHTS = 6  # plans of more runs keep only their metrics: about eight files come back from a call
EXTRA = os.environ.get("PROBE_EXTRA", "").split()


P1000 = ["task.pad=1000", "train.steps=4000", "train.eval_every=200"]
P5000 = ["task.pad=5000", "train.steps=1000", "train.eval_every=250"]
# the critical families as they ran before the gates' input scale was driven (init.drive.gates=0.1), and bare
GAIN_FAMILY = ["init=critical", "init.isometry=gain"]
PHASE_FAMILY = ["init=critical", "init.isometry=phase"]
HAAR = [*GAIN_FAMILY, "init.drive.gates=0.1"]
# the arms of the drive comparisons (conf/arm/ as overrides) and the tasks whose long stretch carries input
DRIVE_ARMS = {"critical": ["init=critical"], "chrono": ["init=chrono"],
              "chrono_driven": ["init=chrono", "init.drive.theory=true"]}
CHRONO_NU10 = ["init=chrono", "init.drive.gates=10", "init.drive.candidate=1"]
DRIVE_TASKS = {"unrolled": ["task=unrolled_mnist"], "permuted": ["task=unrolled_mnist", "task.permute=true"],
               "cifar10": ["task=cifar10"], "noise": ["task.pad=1000", "task.pad_value=noise"],
               "repeated2": ["task=repeated_pixel", "task.repeats=2"]}
PHASE = [*PHASE_FAMILY, "init.drive.gates=0.1"]
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
    # input-driven gates (init.drive.gates) at pad 1000, 1,400 (LSTM) and 1,200 (GRU) steps, seed 0 unless named
    "nu1000": {
        **{f"lstm_{name}": ["task.pad=1000", "train.steps=1400", "train.eval_every=200", "cell=lstm", *over]
           for name, over in {
               "chrono": ["init=chrono", "seed=0"],
               "critical": [*HAAR, "seed=0"],
               "gated": [*GAIN_FAMILY, "init.gate_sigma=1", "init.drive.gates=1", "seed=0"],
               "nu2": [*GAIN_FAMILY, "init.drive.gates=2", "seed=0"],
               "nu3": [*GAIN_FAMILY, "init.drive.gates=3", "seed=0"],
               "nu5": [*GAIN_FAMILY, "init.drive.gates=5", "seed=0"],
               "nu5_seed1": [*GAIN_FAMILY, "init.drive.gates=5", "seed=1"],
               "nu10": [*GAIN_FAMILY, "init.drive.gates=10", "seed=0"],
               "nu10_seed1": [*GAIN_FAMILY, "init.drive.gates=10", "seed=1"],
               "nu5_sigma1": [*GAIN_FAMILY, "init.drive.gates=5", "init.gate_sigma=1", "seed=0"],
               "nu5_cnu3": [*GAIN_FAMILY, "init.drive.gates=5", "init.drive.candidate=3", "seed=0"],
               "nu5_g06": [*GAIN_FAMILY, "init.drive.gates=5", "init.log10_gain=-0.6", "seed=0"],
               "nu5_g04": [*GAIN_FAMILY, "init.drive.gates=5", "init.log10_gain=-0.4", "seed=0"],
               "nu5_phase_w8": [*PHASE_FAMILY, "init.write=8", "init.drive.gates=5", "seed=0"],
               "nu5_phase_w16": [*PHASE_FAMILY, "init.write=16", "init.drive.gates=5", "seed=0"],
               "nu5_phase_w30": [*PHASE_FAMILY, "init.write=30", "init.drive.gates=5", "seed=0"],
           }.items()},
        **{f"gru_{name}": ["task.pad=1000", "train.steps=1200", "train.eval_every=200", "cell=gru", *over]
           for name, over in {
               "chrono": ["init=chrono", "seed=0"],
               "critical": [*PHASE, "init.write=30", "seed=0"],
               "nu3": [*PHASE_FAMILY, "init.write=30", "init.drive.gates=3", "seed=0"],
               "nu5": [*PHASE_FAMILY, "init.write=30", "init.drive.gates=5", "seed=0"],
               "nu5_seed1": [*PHASE_FAMILY, "init.write=30", "init.drive.gates=5", "seed=1"],
               "nu10": [*PHASE_FAMILY, "init.write=30", "init.drive.gates=10", "seed=0"],
               "nu10_seed1": [*PHASE_FAMILY, "init.write=30", "init.drive.gates=10", "seed=1"],
               "nu20": [*PHASE_FAMILY, "init.write=30", "init.drive.gates=20", "seed=0"],
               "nu5_sigma1": [*PHASE_FAMILY, "init.write=30", "init.drive.gates=5", "init.gate_sigma=1", "seed=0"],
               "nu5_cnu3": [*PHASE_FAMILY, "init.write=30", "init.drive.gates=5", "init.drive.candidate=3", "seed=0"],
               "nu10_w45": [*PHASE_FAMILY, "init.write=45", "init.drive.gates=10", "seed=0"],
               "nu10_w15": [*PHASE_FAMILY, "init.write=15", "init.drive.gates=10", "seed=0"],
           }.items()},
    },
    # input-driven gates (init.drive.gates=10), two seeds: pad 5000 for 1,000 steps, pad 1000 for 4,000
    "nu5000": {f"{cell}_nu10_seed{seed}_pad5000": [*P5000, f"cell={cell}", "init=critical", "init.drive.gates=10",
                                                   f"seed={seed}"] for cell in ("lstm", "gru") for seed in (0, 1)},
    "nu1000_long": {f"{cell}_nu10_seed{seed}_pad1000": [*P1000, f"cell={cell}", "init=critical", "init.drive.gates=10",
                                                        f"seed={seed}"] for cell in ("lstm", "gru") for seed in (0, 1)},
    "lstm_gated5000": {"lstm_gated_seed0_pad5000": [*P5000, "cell=lstm", *GAIN_FAMILY, "init.gate_sigma=1",
                                                     "init.drive.gates=1", "seed=0"]},
    # where the solved memory could matter once both inits are driven (docs/results.md, "What this says"):
    # critical against chrono with the same drive (the theory's, init.drive.theory=true), and chrono as
    # published, at the longest padding; then the tasks whose long stretch carries input, where the theory
    # keeps the gates quiet and chrono also gets the drive that helps under zero padding (nu = 10)
    "drive_pad10000": {f"{cell}_{arm}_seed{seed}_pad10000": ["task.pad=10000", "train.steps=500", "train.eval_every=250",
                                                           f"cell={cell}", *over, f"seed={seed}"]
                       for cell in ("lstm", "gru") for seed in (0, 1) for arm, over in DRIVE_ARMS.items()},
    **{f"drive_{name}": {f"{cell}_{arm}_seed{seed}": [*task, "train.steps=300", "train.eval_every=100", f"cell={cell}",
                                                      *over, f"seed={seed}"]
                         for cell in ("lstm", "gru") for seed in (0, 1)
                         for arm, over in {**DRIVE_ARMS, "chrono_nu10": CHRONO_NU10}.items()}
       for name, task in DRIVE_TASKS.items()},
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
            common = [o for o in COMMON if not (o.startswith("task=") and any(v.startswith("task=") for v in over))]
            cfg = compose(config_name="train", overrides=[*common, *over, *EXTRA])
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
        for job in jobs if len(jobs) <= MAX_WEIGHTS else ():  # the trained weights alone (no optimizer state)
            if (job.run_dir / "ckpt_last.pt").exists():
                state = torch.load(job.run_dir / "ckpt_last.pt", map_location="cpu", weights_only=False)
                torch.save({"model": state["model"], "step": state["step"]}, out / f"{job.label}.pt")


if __name__ == "__main__":
    main()
