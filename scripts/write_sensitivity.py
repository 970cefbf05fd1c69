#!/usr/bin/env python3
"""How far do the first Adam steps move the gain across the padding, as a function of the write?

docs/theory.md §10.6: the phase-limited GRU trains with the write W = T(1 − f) = 30 and 60 at pad 1000
but stays at chance with 90 and 120, though `mftrnn diagnose` finds all of them as designed at
initialization. The linearization at the zero state says why the write could matter once training
starts: the gain across the padding is about 0.434 · W · (ρ − 1)/(1 − f) decades for a spectral radius
ρ, so a change δ of the recurrent block's scale moves it by about 0.434 · W · δ decades; Adam's first
steps have a fixed size (the learning rate per entry) whatever W is. This script measures it: the real
network as `mftrnn train` builds it (seed 0, hidden 256, padded MNIST), trained on the CPU by Adam
(lr 1e-3 unless --lr, warm-up as optim.warmup_steps with --warmup, gradient clip 1, batch 128, real
batches; not the same order as the
trainer's), and after 0, 1, 2, 5 and 10 steps the mean
log10 gain across the padding (`mftrnn diagnose`'s measure, 8 pairs of test digits) and the spectral
radius at the zero state.

    python scripts/write_sensitivity.py --cell gru --writes 30,60,90,120 --pad 1000 --json docs/data/write_sensitivity.json
    python scripts/write_sensitivity.py --cell gru --writes 90 --pad 1000 --steps 10,50,100,150 --warmup 100
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module


def measure_run(cell: str, write: float, pad: int, checkpoints: list[int], hidden: int, extra: list[str],
                lr: float = 1e-3, warmup: int = 0) -> dict:
    from mftrnn.data import load_splits
    from mftrnn.diagnose import jacobian_gains, pairs_of_examples, zero_state_radius
    from mftrnn.diagnose_app import build_model
    from mftrnn.schema import OptimConfig, OptimName, to_objects
    from mftrnn.tasks import build_task

    overrides = [f"cell={cell}", "init=critical", f"init.write={write}", f"task.pad={pad}",
                 f"model.hidden={hidden}", "device=cpu", *extra]
    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        conf = to_objects(compose(config_name="diagnose", overrides=overrides))
    task = build_task(conf.task)
    splits = load_splits(task.dataset, conf.data)
    task.fit(splits)
    model, info = build_model(conf, task, splits)
    pairs = pairs_of_examples(task, splits.test_x, splits.test_y, conf.pairs, conf.seed)
    x_pairs = pairs.x.to(torch.float64)
    start = task.content_steps

    def probe(step: int) -> dict:
        rnn = copy.deepcopy(model.rnn).double().requires_grad_(False)  # float64, as diagnose measures
        g = jacobian_gains(rnn, x_pairs, start, probes=conf.probes, seed=conf.seed)
        return {"step": step, "log10_gain": float(g.mean()), "log10_gain_std": float(g.std()),
                "radius_at_zero": float(zero_state_radius(rnn))}

    opt = torch.optim.Adam(model.parameters(), lr=lr)
    rate = OptimConfig(name=OptimName.adam, lr=lr, warmup_steps=warmup).lr_at  # mftrnn train's warm-up
    gen = torch.Generator().manual_seed(0)
    rows, done = [probe(0)], 0
    for target in checkpoints:
        while done < target:
            idx = torch.randint(0, splits.train_x.shape[0], (128,), generator=gen)
            x = task.sequences(splits.train_x[idx], gen)  # (T, B, n_in)
            loss = F.cross_entropy(model(x), splits.train_y[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.param_groups[0]["lr"] = rate(done + 1)
            opt.step()
            done += 1
        rows.append(probe(done))
        print(f"{cell} W={write} lr={lr:g} warm-up {warmup}: step {done}: gain {rows[-1]['log10_gain']:+.2f} "
              f"± {rows[-1]['log10_gain_std']:.2f}, radius {rows[-1]['radius_at_zero']:.5f}", flush=True)
    return {"cell": cell, "write": write, "pad": pad, "hidden": hidden, "lr": lr, "warmup_steps": warmup,
            "overrides": overrides,
            "phase": (info or {}).get("phase"), "steps": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cell", default="gru")
    ap.add_argument("--writes", default="30,60,90,120")
    ap.add_argument("--pad", type=int, default=1000)
    ap.add_argument("--steps", default="1,2,5,10", help="the Adam steps after which to measure")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (mftrnn train's default)")
    ap.add_argument("--warmup", type=int, default=0, help="linear warm-up steps (optim.warmup_steps)")
    ap.add_argument("--json", default=None)
    ap.add_argument("extra", nargs="*", help="more overrides (e.g. init.isometry=gain)")
    args = ap.parse_args()
    out = []
    for w in [float(v) for v in args.writes.split(",")]:
        t0 = time.perf_counter()
        out.append(measure_run(args.cell, w, args.pad, [int(s) for s in args.steps.split(",")], args.hidden, args.extra,
                               args.lr, args.warmup))
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print("| write W | " + " | ".join(f"gain after {r['step']}" for r in out[0]["steps"]) + " |")
    print("| ---: | " + " | ".join("---:" for _ in out[0]["steps"]) + " |")
    for run in out:
        print(f"| {run['write']:g} | " + " | ".join(f"{r['log10_gain']:+.2f}" for r in run["steps"]) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
