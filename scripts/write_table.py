#!/usr/bin/env python3
"""The theory of the write against real networks: docs/theory.md §10.8's table.

For each case `cell:init[+override...]:pad`, networks built and initialized as `mftrnn train` builds them
(seeds 0..S-1, float64, CPU) run pairs of test examples with different labels (the pairs `mftrnn diagnose`
uses); beside them the theory of the write (mftrnn.theory.write, eq. (T38)) on the same pairs for the same
init: 1 - C/Q of the two final states (D_T) and at the end of the informative steps, mean over the pairs.
The networks' numbers are the mean and standard deviation over seeds.

    python scripts/write_table.py --json docs/data/write_table.json --seeds 4 \\
        lstm:critical+init.drive.gates=0.1:1000 lstm:critical:1000 lstm:chrono:1000 ...
    python scripts/write_table.py --json docs/data/write_table.json --markdown   # print the table only
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module


def run_case(case: str, seeds: int, pairs: int, hidden: int, population: int) -> dict:
    from mftrnn.data import load_splits
    from mftrnn.diagnose import one_minus_c, pair_distances, pairs_of_examples
    from mftrnn.inits import initialize, task_shape, write_inputs
    from mftrnn.models import RNNClassifier
    from mftrnn.schema import InitScheme, register_configs, to_objects
    from mftrnn.tasks import build_task
    from mftrnn.theory.critical import CriticalSolution
    from mftrnn.theory.hyper import hyper_from_config
    from mftrnn.theory.write import separation

    register_configs()
    cell, init, pad = case.split(":")
    scheme, *extra = init.split("+")
    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        cfg = compose(config_name="diagnose", overrides=[f"cell={cell}", f"init={scheme}", *extra, f"task.pad={pad}",
                                                          f"model.hidden={hidden}", "device=cpu"])
    conf = to_objects(cfg)
    task = build_task(conf.task)
    splits = load_splits(task.dataset, conf.data)
    task.fit(splits)
    found = pairs_of_examples(task, splits.test_x, splits.test_y, pairs, 0)
    found.x = found.x.double()
    shape = task_shape(task, splits, conf.init)
    t0 = time.perf_counter()
    net_end, net_split, info = [], [], None
    for seed in range(seeds):
        torch.manual_seed(seed)
        model = RNNClassifier(conf.cell.kind, task.input_size, conf.model)
        info = initialize(model, conf.init, shape)
        d = pair_distances(model.rnn.double(), found)
        net_end.append(float(one_minus_c(d, -1).mean()))
        net_split.append(float(one_minus_c(d, task.content_steps).mean()))
    if conf.init.scheme is InitScheme.critical:
        hp = CriticalSolution.from_dict(info["solution"]).hyper()
    else:
        hp = hyper_from_config(conf.cell.kind, conf.init, hidden, task.input_size, task.seq_len,
                               drive=(info["drive"]["gates"], info["drive"]["candidate"]))
    inputs = write_inputs(found.x, task, conf.init.drive.window)
    sep = separation(hp, inputs, population, 0)
    return {"case": case, "cell": cell, "init": init, "pad": int(pad), "hidden": hidden, "seeds": seeds,
            "pairs": inputs.pairs, "drive": info["drive"],
            "net_end": float(np.mean(net_end)), "net_end_sd": float(np.std(net_end)),
            "net_split": float(np.mean(net_split)), "net_split_sd": float(np.std(net_split)),
            "theory_end": float(sep["one_minus_c_end"]), "theory_split": float(sep["one_minus_c_split"]),
            "seconds": time.perf_counter() - t0}


def markdown(rows: list[dict]) -> str:
    out = ["| cell | init | pad | gates' input scale | 1 − C/Q after the image: network / theory | "
           "1 − C/Q at T: network / theory | theory − network at T |",
           "| --- | --- | ---: | --- | --- | --- | ---: |"]
    for r in rows:
        if not np.isfinite(r["net_end"]):  # the networks' states underflowed to zero across the padding
            continue
        dr = r["drive"]
        nu = f"{dr['gates']:g}" + (" (theory)" if dr["source"].startswith("theory") else "") if dr["gates"] is not None \
            else f"{dr['gates_measured']:.2g} (own)"
        out.append(f"| {r['cell']} | {r['init'].replace('+', ' ')} | {r['pad']} | {nu} | "
                   f"{r['net_split']:.3f} ± {r['net_split_sd']:.3f} / "
                   f"{r['theory_split']:.3f} | {r['net_end']:.3f} ± {r['net_end_sd']:.3f} / {r['theory_end']:.3f} | "
                   f"{r['theory_end'] - r['net_end']:+.3f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help="cell:init[+override...]:pad")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--population", type=int, default=2000)
    ap.add_argument("--markdown", action="store_true", help="only print the table of --json")
    args = ap.parse_args()
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    if not args.markdown:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        for case in args.cases:
            row = run_case(case, args.seeds, args.pairs, args.hidden, args.population)
            rows = [r for r in rows if r["case"] != case] + [row]
            print(f"{case}: network {row['net_end']:.3f} ± {row['net_end_sd']:.3f}, theory {row['theory_end']:.3f} "
                  f"({row['seconds']:.0f} s)", flush=True)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
