#!/usr/bin/env python3
"""Regenerate docs/theory.md's comparison table: the untied mean-field theory (closed forms and the
sampled population) against simulated untied and tied networks, in the two-sequence scenario (inputs i.i.d. N(0, R = 1), n_in = 200, independent
for t <= 20 and identical after). Rewrites the section between the theory-table markers.

    python scripts/theory_table.py [--width 1000] [--seeds 2] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch

from mftrnn.cells import GATES
from mftrnn.theory.hyper import Gate, Hyper
from mftrnn.theory.inputs import scenario
from mftrnn.theory.simulate import simulate_trajectory
from mftrnn.theory.trajectories import two_sequences

DOC = Path(__file__).resolve().parents[1] / "docs" / "theory.md"
STEPS, SPLIT, T_READ = 50, 20, 50


def gates(cell: str, **over) -> Hyper:
    """sigma = nu = 1, mu = rho = 0 for every gate, then the overrides {gate: {param: value}}."""
    out = {k: Gate(mu=0.0, rho=0.0, sigma=1.0, nu=1.0) for k in GATES[cell]}
    for k, params in over.items():
        for p, v in params.items():
            setattr(out[k], p, float(v))
    return Hyper(cell, out)


CASES = [
    ("GRU (nn.GRU), all sigma = nu = 1, mu = 0", gates("gru")),
    ("GRU paper form, all sigma = nu = 1, mu = 0", gates("gru_reset_before")),
    ("GRU, slow update gate mu_z = 3", gates("gru", z={"mu": 3})),
    ("GRU, mu_z = 2, rho_z = 1, sigma_n = 2", gates("gru", z={"mu": 2, "rho": 1}, n={"sigma": 2})),
    ("LSTM, all sigma = nu = 1, mu_f = 1", gates("lstm", f={"mu": 1})),
    ("LSTM, mu_f = 3, rho_f = 1, sigma_g = 1.2", gates("lstm", f={"mu": 3, "rho": 1}, g={"sigma": 1.2})),
]


def theory(hp: Hyper, method: str) -> tuple[float, float]:
    """Q_h and 1 - C/Q at T_READ of the untied theory (closed forms or the 200,000-unit population)."""
    tr = two_sequences(hp, scenario(STEPS, SPLIT, 1.0), "untied", method)
    return float(tr.q_h_a[T_READ]), float(tr.one_minus_c[T_READ])


def simulated(hp: Hyper, tied: bool, width: int, seeds: int, device: str) -> tuple[list[float], list[float]]:
    qs, omcs = [], []
    for s in range(seeds):
        r = simulate_trajectory(hp, width, STEPS, SPLIT, 1.0, tied=tied, seed=s, device=device)
        qs.append(float(r.q_h_a[T_READ]))
        omcs.append(float(r.d_h[T_READ] / np.sqrt(r.q_h_a[T_READ] * r.q_h_b[T_READ])))
    return qs, omcs


def fmt(vals) -> str:
    return ", ".join(f"{v:.3g}" for v in vals)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    t0 = time.time()
    rows = [f"| case | Q_h(t={T_READ}): theory (closed / population) / untied nets / tied nets | "
            f"1 - C/Q (t={T_READ}): theory (closed / population) / untied / tied |", "| --- | --- | --- |"]
    for name, hp in CASES:
        (q_c, omc_c), (q_p, omc_p) = theory(hp, "closed"), theory(hp, "population")
        q_u, omc_u = simulated(hp, False, a.width, a.seeds, a.device)
        q_t, omc_t = simulated(hp, True, a.width, a.seeds, a.device)
        rows.append(f"| {name} | {q_c:.3g} / {q_p:.3g} / {fmt(q_u)} / {fmt(q_t)} | {omc_c:.3g} / {omc_p:.3g} / "
                    f"{fmt(omc_u)} / {fmt(omc_t)} |")
        print(rows[-1], flush=True)
    note = (f"\nWidth {a.width}, seeds 0..{a.seeds - 1} (one value per seed), R = 1, n_in = 200, split = {SPLIT}, "
            f"float64, device {a.device}; {time.time() - t0:.0f} s. Command: `python scripts/theory_table.py "
            f"--width {a.width} --seeds {a.seeds}`.\n")
    table = "\n".join(rows) + "\n" + note
    text = DOC.read_text()
    new = re.sub(r"(<!-- theory-table:start -->\n).*?(<!-- theory-table:end -->)", lambda m: m.group(1) + table + m.group(2),
                 text, flags=re.S)
    DOC.write_text(new)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
