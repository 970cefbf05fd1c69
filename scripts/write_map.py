#!/usr/bin/env python3
"""The theory of the write as a function of the drive and the keep bias: docs/theory.md §10.8's map.

D_T (eq. (T38)) of the critical family at zero padding over a grid of the gates' input scale nu and the keep
bias b (LSTM: b_f = b, b_i = -b; GRU: b_z = b), at each candidate input scale given, on pairs of training
digits (the pairs `mftrnn train` reads), in one batched population; the keep bias the solver picks for the
task's T is marked. Writes a PNG and a JSON.

    python scripts/write_map.py --cell lstm --pad 1000 --out docs/img/write_map_lstm.png --json docs/data/write_map_lstm.json
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru"])
    ap.add_argument("--pad", type=int, default=1000)
    ap.add_argument("--nus", default="0.1,1,2,3,5,10,20,50,200")
    ap.add_argument("--biases", default="2,3,4,5,6,7,8")
    ap.add_argument("--candidates", default="0.3,1,3", help="the candidate's input scales, one panel each")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--population", type=int, default=2000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mftrnn.data import load_splits
    from mftrnn.inits import WRITE_RELAX, write_inputs_of
    from mftrnn.schema import DataConfig, PaddedMnistConfig
    from mftrnn.tasks import build_task
    from mftrnn.theory.critical import CriticalSpec, keep_for_gain, resolve_isometry, solve_family
    from mftrnn.theory.hyper import Gate, Hyper
    from mftrnn.theory.write import separation

    task = build_task(PaddedMnistConfig(pad=args.pad))
    splits = load_splits(task.dataset, DataConfig(root=os.environ.get("MFTRNN_DATA", "data")))
    task.fit(splits)
    inputs = write_inputs_of(task, splits, args.pairs, window=256)
    nus = [float(v) for v in args.nus.split(",")]
    biases = [float(v) for v in args.biases.split(",")]
    isometry = resolve_isometry(args.cell, "auto", "tied", True)
    result = {"cell": args.cell, "pad": args.pad, "nus": nus, "biases": biases, "pairs": inputs.pairs,
              "population": args.population, "isometry": isometry, "panels": {}}
    cands = [float(v) for v in args.candidates.split(",")]
    fig, axes = plt.subplots(1, len(cands), figsize=(4.2 * len(cands), 3.6), dpi=120, squeeze=False)
    for ax, cand in zip(axes[0], cands):
        spec = CriticalSpec(args.cell, task.seq_len, task.content_steps, 0.0, gate_nu=1.0, candidate_nu=cand,
                            isometry=isometry)
        base, phase = solve_family(spec, 1.0)  # under zero padding the candidate's scale is the same for every b
        nu_g, b_g = np.meshgrid(nus, biases)  # (B, N)
        gates = {}
        for k, g in base.gates.items():
            mu = np.full(nu_g.shape, float(g.mu))
            if k in ("f", "z"):
                mu = b_g
            if k == "i":
                mu = -b_g
            nu = nu_g if k not in ("g", "n") else np.full(nu_g.shape, cand)
            gates[k] = Gate(mu=mu, rho=0.0, sigma=float(g.sigma), nu=nu)
        d = separation(Hyper(args.cell, gates, True, phase=phase), inputs, args.population)["one_minus_c_end"]
        result["panels"][str(cand)] = np.asarray(d).tolist()
        im = ax.pcolormesh(np.log10(nus), biases, d, shading="nearest", cmap="viridis", vmin=0, vmax=0.8)
        f = 1 - min(30 / task.seq_len, 0.5) if isometry == "phase" else keep_for_gain(task.seq_len, -0.5)
        ax.axhline(np.log(f / (1 - f)), color="w", ls="--", lw=1)
        ax.set_xlabel("log10 gates' input scale nu")
        ax.set_ylabel("keep bias")
        ax.set_title(f"candidate's input scale {cand:g}", fontsize=9)
        fig.colorbar(im, ax=ax, label="D_T = 1 - C/Q of two digits at T")
    fig.suptitle(f"{args.cell}, padded MNIST, T = {task.seq_len}: the theory of the write (dashed: the solved keep)",
                 fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} and {args.json} (relax {WRITE_RELAX} steps, {inputs.pairs} pairs)")


if __name__ == "__main__":
    main()
