#!/usr/bin/env python3
"""The theory of every initialization against real networks: docs/theory.md's per-init table.

For each init (pytorch, standard, chrono, meanfield with its defaults), cell (LSTM, GRU) and total
length T (padded MNIST, rows: 28 image steps, T - 28 zero steps), two MNIST test digits (a 7 and
a 2) run through:

* the untied theory (per-unit closed forms) and the tied theory (population), from the init's
  mean-field description (mftrnn.theory.hyper, eq. (T30));
* networks built by the init code itself (mftrnn.inits, as `mftrnn train` does), of hidden 256 and
  of a large width, float64.

Reported: m_1 at the padding's stationary state (one-step mean squared singular value of the state
Jacobian; theory: eq. (T23), networks: autograd) and the memory horizon (eq. (T29): steps after the
last differing step until the distance of the two states falls below 1 % of its value there).
Resumable: results go to a JSON file record by record and finished records are skipped.

    python scripts/init_table.py --device cuda --json docs/data/init_table.json      # compute
    python scripts/init_table.py --doc --json docs/data/init_table.json              # rewrite the table
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from mftrnn.schema import (CellKind, ChronoInitConfig, DataConfig, GruGates, InitConfig, InitScheme,
                           LstmGates, MeanFieldInitConfig, PaddedMnistConfig)
from mftrnn.theory.closed import memory_horizon
from mftrnn.theory.hyper import hyper_from_config
from mftrnn.theory.inputs import task_examples
from mftrnn.theory.simulate import jacobian_spectra, simulate_trajectory
from mftrnn.theory.stationary import stationary
from mftrnn.theory.trajectories import two_sequences

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "theory.md"
EPS = 0.01


def inits(cell: str) -> dict:
    gates = (LstmGates if cell == "lstm" else GruGates)()
    return {"pytorch": InitConfig(scheme=InitScheme.pytorch), "standard": InitConfig(scheme=InitScheme.standard),
            "chrono": ChronoInitConfig(), "meanfield": MeanFieldInitConfig(gates=gates)}


def horizon(distance: np.ndarray, split: int) -> float | None:
    h = float(memory_horizon(distance, split, EPS))
    return None if np.isnan(h) else h


def one(scheme: str, cell: str, T: int, a) -> dict:
    init = inits(cell)[scheme]
    task = PaddedMnistConfig(pad=T - 28)
    inp = task_examples(task, DataConfig(root=a.data), [0, 1], seed=0)
    hp = hyper_from_config(CellKind(cell), init, 256, 28, T)
    rec: dict = {"init": scheme, "cell": cell, "T": T, "split": inp.split}
    t0 = time.perf_counter()
    st = stationary(hp, 0.0)
    rec["theory"] = {"m1": float(st.m1), "lambda_C": float(st.lambda_c), "Q_h": float(st.q_h)}
    for theory in ("untied", "tied"):
        tr = two_sequences(hp, inp, theory, "closed", a.population, 0, a.device)
        rec["theory"][f"horizon_{theory}"] = horizon(tr.d_h, inp.split)
        rec["theory"][f"ratio_{theory}"] = float(tr.d_h[-1] / tr.d_h[inp.split])
    rec["seconds_theory"] = time.perf_counter() - t0
    for label, width, seeds in (("small", 256, a.seeds), ("large", a.width, a.seeds_large)):
        t0 = time.perf_counter()
        runs = [simulate_trajectory(hp, width, T, inp.split, 0.0, tied=True, seed=s, device=a.device, inputs=inp.x,
                                    init=init, seq_len=T) for s in range(seeds)]
        d = np.mean([r.d_h for r in runs], axis=0)
        spec = jacobian_spectra(hp, width, 0.0, burn_in=50, product_steps=1, input_size=28, tied=True, seed=0,
                                device=a.device, init=init, seq_len=T)
        rec[label] = {"width": width, "seeds": seeds, "m1": spec.m1, "horizon": horizon(d, inp.split),
                      "ratio": float(d[-1] / d[inp.split]),
                      "horizon_per_seed": [horizon(r.d_h, inp.split) for r in runs],
                      "seconds": time.perf_counter() - t0}
    return rec


def fmt_h(h, T_after: int) -> str:
    return f"> {T_after}" if h is None else f"{h:.0f}"


def write_doc(path: Path, data: dict) -> None:
    recs = sorted(data["records"], key=lambda r: (["pytorch", "standard", "chrono", "meanfield"].index(r["init"]),
                                                 r["cell"], r["T"]))
    rows = ["| init | cell | T | m_1: theory / nets 256 / nets large | memory horizon (steps): untied theory / "
            "tied theory / nets 256 / nets large | distance at T / at the split: tied theory / nets large |",
            "| --- | --- | ---: | --- | --- | --- |"]
    for r in recs:
        after = r["T"] - r["split"]
        th, s, lg = r["theory"], r["small"], r["large"]
        rows.append(f"| {r['init']} | {r['cell'].upper()} | {r['T']} | {th['m1']:.3f} / {s['m1']:.3f} / {lg['m1']:.3f} | "
                    f"{fmt_h(th['horizon_untied'], after)} / {fmt_h(th['horizon_tied'], after)} / "
                    f"{fmt_h(s['horizon'], after)} / {fmt_h(lg['horizon'], after)} | "
                    f"{th['ratio_tied']:.1e} / {lg['ratio']:.1e} |")
    meta = data["meta"]
    note = (f"\nTwo MNIST test digits (labels 7, 2), rows (28 inputs), zero padding to T; the split is the last "
            f"row where they differ. Networks: the init code itself, float64, tied weights; hidden 256 "
            f"({meta['seeds']} seeds) and {meta['width']} ({meta['seeds_large']} seeds), horizon from the seeds' "
            f"mean distance. Theories: hidden 256's description (eq. (T30)); untied theory: the per-unit closed forms "
            f"(the LSTM's with its cell-state closure, §2.6); tied theory {meta['population']} units. "
            f"m_1 at the padding's stationary state (input R = 0). Device: {meta['device']}; "
            f"{meta['seconds']:.0f} s. Command: `{meta['command']}`.\n")
    table = "\n".join(rows) + "\n" + note
    text = path.read_text()
    if "<!-- init-table:start -->" not in text:
        raise SystemExit(f"{path} has no init-table markers")
    path.write_text(re.sub(r"(<!-- init-table:start -->\n).*?(<!-- init-table:end -->)",
                           lambda m: m.group(1) + table + m.group(2), text, flags=re.S))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "data" / "init_table.json")
    ap.add_argument("--doc", action="store_true", help="only rewrite docs/theory.md's table from --json")
    ap.add_argument("--T", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--inits", nargs="+", default=["pytorch", "standard", "chrono", "meanfield"])
    ap.add_argument("--cells", nargs="+", default=["lstm", "gru"])
    ap.add_argument("--width", type=int, default=4096, help="the large networks' width")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the hidden-256 networks")
    ap.add_argument("--seeds-large", type=int, default=1)
    ap.add_argument("--population", type=int, default=4000, help="units of the tied theory")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    data = json.loads(a.json.read_text()) if a.json.exists() else {"records": []}
    if a.doc:
        return write_doc(DOC, data)
    done = {(r["init"], r["cell"], r["T"]) for r in data["records"]}
    t0 = time.perf_counter()
    for T in a.T:
        for cell in a.cells:
            for scheme in a.inits:
                if (scheme, cell, T) in done:
                    continue
                rec = one(scheme, cell, T, a)
                data["records"].append(rec)
                data["meta"] = {"width": a.width, "seeds": a.seeds, "seeds_large": a.seeds_large,
                                "population": a.population, "device": torch.cuda.get_device_name()
                                if a.device.startswith("cuda") else a.device,
                                "seconds": data.get("meta", {}).get("seconds", 0) + time.perf_counter() - t0,
                                "command": f"python scripts/init_table.py --width {a.width} --seeds {a.seeds} "
                                           f"--seeds-large {a.seeds_large} --population {a.population}"}
                t0 = time.perf_counter()
                a.json.parent.mkdir(parents=True, exist_ok=True)
                a.json.write_text(json.dumps(data, indent=1) + "\n")
                th, lg = rec["theory"], rec["large"]
                print(f"{scheme:>9} {cell} T={T}: m1 {th['m1']:.3f}/{rec['small']['m1']:.3f}/{lg['m1']:.3f}, horizon "
                      f"{th['horizon_untied']}/{th['horizon_tied']}/{rec['small']['horizon']}/{lg['horizon']} "
                      f"({rec['seconds_theory']:.0f} s theory, {lg['seconds']:.0f} s large nets)", flush=True)


if __name__ == "__main__":
    main()
