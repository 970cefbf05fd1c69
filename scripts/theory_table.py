#!/usr/bin/env python3
"""Regenerate docs/theory.md's comparison table: untied mean-field theory against simulated untied
and tied networks, in the two-sequence scenario (inputs i.i.d. N(0, R = 1), n_in = 200, independent
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

from mftrnn.schema import GateHP
from mftrnn.theory import closed, population
from mftrnn.theory.closed import Gate, Hyper
from mftrnn.theory.simulate import simulate_trajectory

DOC = Path(__file__).resolve().parents[1] / "docs" / "theory.md"
STEPS, SPLIT, T_READ = 50, 20, 50


def gates(cell: str, **over) -> dict[str, GateHP]:
    """sigma = nu = 1, mu = rho = 0 for every gate, then the overrides {gate: {param: value}}."""
    names = closed.GATES[cell]
    out = {k: GateHP(mu=0.0, rho=0.0, sigma=1.0, nu=1.0) for k in names}
    for k, params in over.items():
        for p, v in params.items():
            setattr(out[k], p, float(v))
    return out


CASES = [
    ("GRU (nn.GRU), all sigma = nu = 1, mu = 0", "gru", gates("gru")),
    ("GRU paper form, all sigma = nu = 1, mu = 0", "gru_reset_before", gates("gru_reset_before")),
    ("GRU, slow update gate mu_z = 3", "gru", gates("gru", z={"mu": 3})),
    ("GRU, mu_z = 2, rho_z = 1, sigma_n = 2", "gru", gates("gru", z={"mu": 2, "rho": 1}, n={"sigma": 2})),
    ("LSTM, all sigma = nu = 1, mu_f = 1", "lstm", gates("lstm", f={"mu": 1})),
    ("LSTM, mu_f = 3, rho_f = 1, sigma_g = 1.2", "lstm", gates("lstm", f={"mu": 3, "rho": 1}, g={"sigma": 1.2})),
]


def theory(cell: str, g: dict[str, GateHP]) -> tuple[float, float, str]:
    hp = Hyper(cell, {k: Gate(mu=v.mu, rho=v.rho, sigma=v.sigma, nu=v.nu) for k, v in g.items()})
    if cell != "lstm" and all(v.rho == 0 for v in g.values()):
        tr = closed.trajectory(hp, STEPS, SPLIT, 1.0)
        q = np.sqrt(tr["q_h_a"] * tr["q_h_b"])
        return float(tr["q_h_a"][T_READ]), float(1 - tr["c_h"][T_READ] / q[T_READ]), "closed"
    tr = population.trajectory(hp, STEPS, SPLIT, 1.0, population=200_000)
    q = np.sqrt(tr["q_h_a"] * tr["q_h_b"])
    return float(tr["q_h_a"][T_READ]), float(tr["d_h"][T_READ] / q[T_READ]), "population"


def simulated(cell, g, tied, width, seeds, device) -> tuple[list[float], list[float]]:
    qs, omcs = [], []
    for s in range(seeds):
        r = simulate_trajectory(cell, g, "gaussian", width, STEPS, SPLIT, 1.0, tied=tied, seed=s, device=device)
        qs.append(float(r.q_h_a[T_READ]))
        omcs.append(float(1 - r.c_h[T_READ] / np.sqrt(r.q_h_a[T_READ] * r.q_h_b[T_READ])))
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
    rows = [f"| case | Q_h(t={T_READ}): theory / untied nets / tied nets | 1 - C/Q (t={T_READ}): theory / untied / tied | theory method |",
            "| --- | --- | --- | --- |"]
    for name, cell, g in CASES:
        q_th, omc_th, method = theory(cell, g)
        q_u, omc_u = simulated(cell, g, False, a.width, a.seeds, a.device)
        q_t, omc_t = simulated(cell, g, True, a.width, a.seeds, a.device)
        rows.append(f"| {name} | {q_th:.3g} / {fmt(q_u)} / {fmt(q_t)} | {omc_th:.3g} / {fmt(omc_u)} / {fmt(omc_t)} | {method} |")
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
