"""`mftrnn bench theory`: how fast the theory is on this machine, and how accurate its fast method.

Speed (wall-clock, best or median of repeats, in this process after a warm-up call):

* `mftrnn theory cell=lstm` and `cell=gru` with every default: the app's work after start-up
  (config, theory, plots, theory.json; in this process, after a first call), and the whole
  command in a fresh process, start-up included;
* one evaluation for a solver (fixed point, m_1, xi_C, xi_Q at one hyperparameter point), per cell,
  without and with a bias spread, and a batch of 1,000 random points;
* a 101 x 101 xi_C grid per cell;
* one point for the description of each init (pytorch, standard, chrono; padded MNIST, T = 1028).

Accuracy (`--accuracy`): the LSTM's closed forms (per-unit quadrature with the cell-state closure)
against the exact sampled population of 200,000 units, on the CLI's defaults and random cases.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mftrnn.cells import GATES, KEEP
from mftrnn.theory.hyper import Gate, Hyper


def _timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up: imports, caches
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def cli_seconds(cell: str, repeats: int) -> list[float]:
    """`mftrnn theory cell=...` with defaults, in this process (compose + run_theory + files)."""
    import tempfile

    from hydra import compose, initialize_config_module

    from mftrnn.theory.app import run_theory

    def once() -> None:
        with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
            cfg = compose(config_name="theory", overrides=[f"cell={cell}", "device=cpu"])
        with tempfile.TemporaryDirectory() as tmp:
            run_theory(cfg, Path(tmp))

    return _timed(once, repeats)


def command_seconds(cell: str, repeats: int) -> list[float]:
    """The whole command, start-up included: `python -m mftrnn theory cell=...` in a fresh process."""
    import subprocess
    import sys
    import tempfile

    out = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mftrnn", "theory", f"cell={cell}", "device=cpu",
                            f"hydra.run.dir={tmp}"], check=True, capture_output=True)
            out.append(time.perf_counter() - t0)
    return out


def solver_seconds(cell: str, repeats: int) -> dict[str, float]:
    from mftrnn.theory.stationary import stationary

    plain = Hyper(cell, {k: Gate() for k in GATES[cell]})
    spread = plain.with_gate(KEEP[cell], mu=3.0, rho=1.0)
    rng = np.random.default_rng(0)
    batch = Hyper(cell, {k: Gate(mu=rng.uniform(-2, 6, 1000), sigma=rng.uniform(0, 2, 1000),
                                 nu=rng.uniform(0, 2, 1000)) for k in GATES[cell]})
    return {"point_ms": 1e3 * statistics.median(_timed(lambda: stationary(plain, 1.0), repeats)),
            "point_spread_ms": 1e3 * statistics.median(_timed(lambda: stationary(spread, 1.0), repeats)),
            "batch_1000_s": min(_timed(lambda: stationary(batch, 1.0), max(1, repeats // 4)))}


def init_seconds(repeats: int) -> dict[str, float]:
    """One point (fixed point, m_1, xi_C, xi_Q) for every init's description (hidden 256, padded MNIST
    rows, T = 1028, R = 0.1), in ms: their bias laws set the quadrature's node count."""
    from mftrnn.schema import CellKind, ChronoInitConfig, InitConfig, InitScheme
    from mftrnn.theory.hyper import hyper_from_config
    from mftrnn.theory.stationary import stationary

    inits = {"pytorch": InitConfig(scheme=InitScheme.pytorch), "standard": InitConfig(scheme=InitScheme.standard),
             "chrono": ChronoInitConfig()}
    out = {}
    for name, init in inits.items():
        for cell in ("lstm", "gru"):
            hp = hyper_from_config(CellKind(cell), init, 256, 28, 1028)
            out[f"{name}/{cell}"] = 1e3 * statistics.median(_timed(lambda: stationary(hp, 0.1), repeats))
    return out


def grid_seconds(cell: str, repeats: int) -> float:
    from mftrnn.theory.grid import axis_values, compute_grid

    hp = Hyper(cell, {k: Gate() for k in GATES[cell]})
    keep = KEEP[cell]
    x = axis_values([f"init.gates.{keep}.mu", -2, 8, 101], "x", cell)
    y = axis_values([f"init.gates.{keep}.sigma", 0, 2, 101], "y", cell)
    return min(_timed(lambda: compute_grid(hp, 1.0, x, y), repeats))


def accuracy(cases: int, population: int, seed: int = 0) -> list[dict]:
    """The LSTM's closed forms against the population (exact untied): Q_h*, lambda_C and the
    two-sequence scenario's Q_h and 1 - C/Q at t = 30 and 50 (split 20)."""
    from mftrnn.theory import population as pop
    from mftrnn.theory.inputs import scenario
    from mftrnn.theory.stationary import stationary
    from mftrnn.theory.trajectories import two_sequences

    rng = np.random.default_rng(seed)
    named = [("defaults (all sigma = nu = 1, mu = rho = 0)", Hyper("lstm", {k: Gate() for k in GATES["lstm"]}))]
    for i in range(cases):
        g = {k: Gate(mu=rng.uniform(-1, 1), sigma=rng.uniform(0.3, 1.5), nu=rng.uniform(0.3, 1.5)) for k in "ifgo"}
        g["f"] = Gate(mu=rng.uniform(-1, 5), rho=float(rng.choice([0.0, rng.uniform(0, 1.5)])),
                      sigma=rng.uniform(0, 1.5), nu=rng.uniform(0, 1.5))
        named.append((f"random {i + 1}: f mu {g['f'].mu:.2f} rho {g['f'].rho:.2f} sigma {g['f'].sigma:.2f}",
                      Hyper("lstm", g)))
    out = []
    inp = scenario(60, 20, 1.0)
    for name, hp in named:
        st = stationary(hp, 1.0)
        pfp = pop.fixed_point(hp, 1.0, population)
        lam = pop.tangent_growth(hp, 1.0, population)
        tc = two_sequences(hp, inp, "untied", "closed")
        tp = two_sequences(hp, inp, "untied", "population", population, seed)
        rec = {"case": name, "Q_h": [float(st.q_h), pfp["q_h"]], "lambda_C": [float(st.lambda_c), lam]}
        for t in (30, 50):
            rec[f"Q_h_{t}"] = [float(tc.q_h_a[t]), float(tp.q_h_a[t])]
            rec[f"one_minus_c_{t}"] = [float(tc.one_minus_c[t]), float(tp.one_minus_c[t])]
        out.append(rec)
        print("  " + name + ": " + ", ".join(f"{k} {v[0]:.4g} / {v[1]:.4g} ({v[0] / v[1] - 1:+.2%})"
                                              for k, v in rec.items() if k != "case"), flush=True)
    return out


def write_closure_table(path: Path, recs: list[dict], population: int, command: str) -> None:
    """Rewrite the section between the closure-table markers of `path` with the accuracy records."""
    import re

    keys = [("Q_h", "Q_h*"), ("lambda_C", "lambda_C"), ("Q_h_50", "Q_h(50)"), ("one_minus_c_30", "1 - C/Q (30)"),
            ("one_minus_c_50", "1 - C/Q (50)")]
    rows = ["| case | " + " | ".join(f"{label}: closed / population" for _, label in keys) + " |",
            "| --- |" + " --- |" * len(keys)]
    worst = {k: 0.0 for k, _ in keys}
    for r in recs:
        cells = []
        for k, _ in keys:
            c, p = r[k]
            if max(abs(c), abs(p)) < 1e-12:  # both at float64's rounding floor: no comparison
                cells.append(f"{c:.1e} / {p:.1e} (rounding)")
                continue
            err = c / p - 1 if p else float("nan")
            worst[k] = max(worst[k], abs(err))
            cells.append(f"{c:.4g} / {p:.4g} ({err:+.1%})")
        rows.append(f"| {r['case']} | " + " | ".join(cells) + " |")
    note = (f"\nPopulation: {population:,} units (its own noise: about 0.2 % on Q_h). Scenario: R = 1, two sequences "
            f"independent up to t = 20. Readings below 1e-12 are at float64's rounding floor and not compared. "
            f"Largest deviation: " + ", ".join(f"{label} {worst[k]:.1%}" for k, label in keys)
            + f". Command: `{command} --doc docs/theory.md`.\n")
    text = path.read_text()
    if "<!-- closure-table:start -->" not in text:
        raise SystemExit(f"{path} has no closure-table markers")
    path.write_text(re.sub(r"(<!-- closure-table:start -->\n).*?(<!-- closure-table:end -->)",
                           lambda m: m.group(1) + "\n".join(rows) + "\n" + note + m.group(2), text, flags=re.S))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="mftrnn bench theory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--accuracy", action="store_true", help="also the LSTM closure against the 200,000-unit population")
    p.add_argument("--cases", type=int, default=8, help="random cases of --accuracy")
    p.add_argument("--population", type=int, default=200_000)
    p.add_argument("--out", type=Path, default=Path("outputs/bench/theory.json"))
    p.add_argument("--doc", type=Path, help="with --accuracy: rewrite this file's closure-table section "
                                            "(docs/theory.md)")
    a = p.parse_args(argv)
    if a.repeats < 1:
        p.error("--repeats must be >= 1")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    res: dict = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
                 "command": "mftrnn bench theory " + " ".join(argv or []), "cells": {}}
    print(f"bench theory: {res['machine']}, {a.repeats} repeats", flush=True)
    print(f"{'cell':<18} {'theory / command':>16} {'point':>9} {'point, rho>0':>13} {'1000 points':>12} {'101x101 grid':>13}")
    for cell in ("lstm", "gru", "gru_reset_before"):
        r = solver_seconds(cell, a.repeats)
        r["grid_101_s"] = grid_seconds(cell, max(1, a.repeats // 2))
        if cell != "gru_reset_before":
            r["cli_s"] = statistics.median(cli_seconds(cell, max(1, a.repeats // 2)))
            r["command_s"] = statistics.median(command_seconds(cell, max(1, a.repeats // 2)))
        res["cells"][cell] = r
        cli = f"{r['cli_s']:.2f} / {r['command_s']:.2f} s" if "cli_s" in r else "-"
        print(f"{cell:<18} {cli:>16} {r['point_ms']:7.1f} ms {r['point_spread_ms']:10.1f} ms {r['batch_1000_s']:10.2f} s "
              f"{r['grid_101_s']:11.2f} s", flush=True)
    res["init_point_ms"] = init_seconds(a.repeats)
    print("one point per init (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in res["init_point_ms"].items()), flush=True)
    if a.accuracy:
        print(f"LSTM closure vs the {a.population:,}-unit population (closed / population):")
        res["accuracy"] = accuracy(a.cases, a.population)
        if a.doc:
            write_closure_table(a.doc, res["accuracy"], a.population, res["command"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"written to {a.out}")
