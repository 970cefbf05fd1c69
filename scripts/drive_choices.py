#!/usr/bin/env python3
"""The drive the theory of the write chooses for each task and cell: docs/theory.md §10.8's table.

Runs the critical solver as `mftrnn train init=critical` does (mftrnn.inits.task_shape, solve_critical; the
cache is bypassed) and collects the chosen gates' input scale, the rule's levels, the predicted separation
D_T (eq. (T38)) at the choice, the drives without a critical family, and the solve time.

    python scripts/drive_choices.py --json docs/data/drive_choices.json "task.pad=1000" "task.pad=5000" \\
        "task=unrolled_mnist" "task=cifar10" "task.pad_value=noise" ...
    python scripts/drive_choices.py --json docs/data/drive_choices.json --markdown
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hydra import compose, initialize_config_module


def choose(task: str, cell: str) -> dict:
    from mftrnn.data import load_splits
    from mftrnn.inits import solve_critical, task_shape
    from mftrnn.schema import register_configs, to_objects
    from mftrnn.tasks import build_task

    register_configs()
    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        cfg = compose(config_name="critical", overrides=[f"cell={cell}", *task.split(), "init.cache=false"])
    conf = to_objects(cfg)
    t0 = time.perf_counter()
    t = build_task(conf.task)
    splits = load_splits(t.dataset, conf.data)
    t.fit(splits)
    sol, _ = solve_critical(cell, conf.init, task_shape(t, splits, conf.init))
    d, why = sol.drive, sol.drive["reason"]
    return {"task": task, "cell": cell, "steps": sol.spec.steps, "R_op": sol.spec.R_op, "gates": d["gates"],
            "D_lo": why["D_lo"], "D_hi": why["D_hi"], "nu_hi": why["nu_hi"],
            "D_at_choice": sol.predictions["write"]["one_minus_c_end"], "why": why["why"],
            "no_family_from": min((float(k) for k in why.get("no_family", {})), default=None),
            "frozen_from": min(why.get("keep_gate_frozen", []), default=None),
            "keep_bias": sol.gates["f" if cell == "lstm" else "z"]["mu"],
            "candidate_sigma": sol.gates["g" if cell == "lstm" else "n"]["sigma"],
            "curve": d["curve"], "inputs": d["inputs"], "seconds": time.perf_counter() - t0}


def markdown(rows: list[dict]) -> str:
    out = ["| task | cell | T | R_op | D_T: quietest / largest admissible (at ν) | chosen ν | D_T there | "
           "keep gate frozen (T42) from ν | no critical family from ν | keep bias, candidate σ at the choice | "
           "solve (2 CPU cores) |",
           "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        nf = "—" if r["no_family_from"] is None else f"{r['no_family_from']:g}"
        fr = "—" if r.get("frozen_from") is None else f"{r['frozen_from']:g}"
        out.append(f"| {r['task']} | {r['cell']} | {r['steps']} | {r['R_op']:.3g} | {r['D_lo']:.3f} / {r['D_hi']:.3f} "
                   f"({r['nu_hi']:g}) | **{r['gates']:g}** | {r['D_at_choice']:.3f} | {fr} | {nf} | "
                   f"{r['keep_bias']:.2f}, {r['candidate_sigma']:.3f} | {r['seconds']:.0f} s |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", nargs="*", help="task overrides, e.g. 'task=cifar10' or 'task.pad=5000'")
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--markdown", action="store_true", help="only print the table of --json")
    args = ap.parse_args()
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    if not args.markdown:
        for task in args.tasks:
            for cell in args.cells.split(","):
                row = choose(task, cell)
                rows = [r for r in rows if (r["task"], r["cell"]) != (task, cell)] + [row]
                print(f"{task} {cell}: nu = {row['gates']:g} ({row['seconds']:.0f} s)", flush=True)
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
