#!/usr/bin/env python3
"""Real networks at initialization (and after training) beside the theories: docs/theory.md §10.4's tables.

Runs `mftrnn diagnose` (the library entry, as the command does) for each case and collects the
network's mean log10 gain across the padding, its spread, the distance of two digits' final states
(relative to the split's, and to the state's size at the split), the horizon, and the untied and
tied theories' predictions. Cases are `cell:init:pad[:ckpt]`; init may carry overrides after '+'
(critical+init.criterion=untied).

    python scripts/diagnose_table.py --json docs/data/diagnose_init.json \\
        lstm:critical:1000 lstm:standard:1000 lstm:pytorch:1000 lstm:critical+init.criterion=untied:1000 ...
    python scripts/diagnose_table.py --json docs/data/diagnose_init.json --markdown   # print the table only
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_module


def diagnose(cell: str, init: str, pad: int, ckpt: str | None, hidden: int, device: str) -> dict:
    from mftrnn.diagnose_app import run_diagnose

    scheme, *extra = init.split("+")
    overrides = [f"cell={cell}", f"init={scheme}", *extra, f"task.pad={pad}", f"model.hidden={hidden}",
                 f"device={device}"] + ([f"ckpt='{ckpt}'"] if ckpt else [])  # quoted: run dirs hold '=' and ','.
    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        cfg = compose(config_name="diagnose", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        res = run_diagnose(cfg, Path(tmp))
    net, th = res["network"], res.get("theory", {})
    pick = lambda name, key: (th.get(name) or {}).get(key)  # noqa: E731
    return {"cell": cell, "init": init, "pad": pad, "ckpt": ckpt, "hidden": hidden,
            "net_log10_gain": net["log10_gain"]["mean"], "net_log10_gain_std": net["log10_gain"]["std"],
            "net_distance_ratio": net["distance_ratio_end"], "net_distance_over_Q": net["distance_end_over_Q_at_split"],
            "net_one_minus_c": net["one_minus_c_end"]["mean"], "net_horizon": net["horizon"],
            "steps_after_split": net["steps"] - net["split"], "net_radius": net.get("zero_state_radius"),
            "tied_log10_gain": pick("tied", "log10_gain"), "tied_horizon": pick("tied", "horizon"),
            "untied_log10_gain": pick("untied", "log10_gain"), "untied_m1_log10_gain": th.get("untied_log10_gain_m1"),
            "untied_horizon": pick("untied", "horizon"), "seconds": res["seconds"]}


def markdown(rows: list[dict]) -> str:
    f = lambda v, fmt="{:+.2f}": "—" if v is None else fmt.format(v)  # noqa: E731
    # float64 underflow of the network's backward pass
    net_gain = lambda r: "< −300 (underflow)" if r["net_log10_gain"] <= -300 else \
        f"{r['net_log10_gain']:+.2f} ± {r['net_log10_gain_std']:.2f}"  # noqa: E731
    # * : the distance fell below 1e-11 of the split's, under the tied solver's jitter: possibly a bound
    tied_gain = lambda v: "—" if v is None else (f"{v:+.2f}*" if v < -5.5 else f"{v:+.2f}")  # noqa: E731
    hz = lambda v, n: f"> {n}" if v is None else f"{v:.0f}"  # noqa: E731
    out = ["| cell | init | pad | weights | network log10 gain (± spread) | tied theory | untied theory | "
           "d_T / d_split | d_T / Q_split | horizon: network / tied / untied | radius at 0 |",
           "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        weights = Path(r["ckpt"]).stem.replace("model_", "after ") + " steps" if r["ckpt"] else "init"
        untied = r["untied_log10_gain"] if r["untied_log10_gain"] is not None else r["untied_m1_log10_gain"]
        n = r["steps_after_split"]
        tied_h = "—" if r["tied_log10_gain"] is None and r["tied_horizon"] is None else hz(r["tied_horizon"], n)
        out.append(f"| {r['cell']} | {r['init'].replace('+', ' ')} | {r['pad']} | {weights} | "
                   f"{net_gain(r)} | {tied_gain(r['tied_log10_gain'])} | "
                   f"{f(untied)} | {f(r['net_distance_ratio'], '{:.2g}')} | {f(r['net_distance_over_Q'], '{:.2g}')} | "
                   f"{hz(r['net_horizon'], n)} / {tied_h} / {hz(r['untied_horizon'], n)} | "
                   f"{f(r.get('net_radius'), '{:.4f}')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", help="cell:init:pad[:ckpt]")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--markdown", action="store_true", help="only print the table of --json")
    args = ap.parse_args()
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    if not args.markdown:
        for case in args.cases:
            cell, init, pad, *ckpt = case.split(":", 3)
            t0 = time.perf_counter()
            row = diagnose(cell, init, int(pad), ckpt[0] if ckpt else None, args.hidden, args.device)
            rows = [r for r in rows if (r["cell"], r["init"], r["pad"], r["ckpt"]) != (cell, init, int(pad), row["ckpt"])]
            rows.append(row)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(rows, indent=1))
            print(f"{case}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(markdown(rows))


if __name__ == "__main__":
    main()
