"""`mftrnn report`: every figure and table of a sweep (or several), rebuilt from its run dirs.

    mftrnn report outputs/sweeps/trainability              # writes outputs/sweeps/trainability/report/
    mftrnn report outputs/sweeps/a outputs/sweeps/b --out docs/figures --name curves_unrolled

Reads metrics.jsonl, summary.json and .hydra/ of every run dir under the given folders (W&B is not
needed) and writes, into --out: <name>_curves.png (train and validation accuracy against steps),
<name>_length.png (final test accuracy against sequence length, when the sweep varies the padding),
<name>_map.png (the trainability heat map with the theory's contours, when two init=meanfield gate
hyperparameters vary, or --map X Y), <name>.md (the generalization table and what was drawn) and
<name>.json. The curves show test accuracy too where the runs evaluated it along the way
(train.eval_test=true, as the learning-curve presets do). Runs are labelled by the config keys that differ between them; seeds are averaged, with
a band (min .. max). The figures are described in docs/usage.md (Reports).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from mftrnn.errors import ConfigError, MftrnnError

GATE_KEY = re.compile(r"^init\.gates\.\w+\.(mu|rho|sigma|nu)$")


def build_report(roots: list[Path], out: Path, name: str = "report", title: str = "", map_keys=None,
                 threshold: float = 0.5, tied: bool = True, population: int = 500) -> dict:
    """Write the report's figures and tables for the runs under `roots`; returns what was written."""
    from mftrnn import report

    runs = report.load_runs(roots)
    if not runs:
        raise ConfigError(f"no run dirs (with metrics.jsonl) under {', '.join(map(str, roots))}")
    keys = report.differing(runs)
    done = [r for r in runs if r.summary]
    setting = title or _setting(runs)
    out.mkdir(parents=True, exist_ok=True)
    written = {"runs": len(runs), "finished": len(done), "differing": keys, "figures": {}}
    # test accuracy against steps where the runs logged it at every evaluation (train.eval_test=true)
    test_curves = any(r.config.get("train.eval_test") for r in runs)
    metrics = ("train/acc", "val/acc") + (("test/acc",) if test_curves else ())
    curves = report.plot_learning(runs, out / f"{name}_curves.png", metrics, title=f"learning curves: {setting}")
    written["figures"]["curves"] = curves.name
    if len({r.summary.get("seq_len") for r in done}) > 1:
        length = report.plot_accuracy_vs_length(done, out / f"{name}_length.png",
                                                title=f"test accuracy against length: {setting}")
        written["figures"]["length"] = length.name
    gate_keys = [k for k in keys if GATE_KEY.match(k)]  # differing() leaves linked keys out: no axis
    if map_keys is None and len(gate_keys) == 2:
        map_keys = gate_keys
    if map_keys:
        missing = [k for k in map_keys if k not in keys]
        if missing:
            raise ConfigError(f"--map {' '.join(map_keys)}: {', '.join(missing)} does not vary between the runs "
                              f"(varying: {', '.join(keys) or 'nothing'})")
        res = report.trainability_map(done, map_keys[0], map_keys[1], out / f"{name}_map.png", threshold=threshold,
                                      tied=tied, population=population, title=f"trainability: {setting}")
        written["figures"]["map"] = f"{name}_map.png"
        written["map"] = res
    table = report.generalization_table(runs)
    written["table"] = table
    lines = [f"# {name}: {setting}", "", f"{len(runs)} runs ({len(done)} finished) under "
             + ", ".join(f"`{r}`" for r in roots) + "; they differ in: " + (", ".join(keys) or "nothing") + ".", ""]
    for kind, fname in written["figures"].items():
        lines += [f"![{kind}]({fname})", ""]
    if "map" in written:
        m = written["map"]
        lines += [f"Trainability heat map at T = {m['T']} (trainable: {m['metric']} >= {m['threshold']}): the untied "
                  f"criterion c · xi_C >= T fits best with c = {m['c']:.3g}, which puts "
                  f"{100 * m['fraction_correct_untied']:.0f} % of the grid's points on their correct side"
                  + (f"; the tied theory's memory horizon = T puts {100 * m['fraction_correct_tied']:.0f} %."
                     if "fraction_correct_tied" in m else "."), ""]
    lines += ["Final accuracy by group (mean ± std over seeds):", "", table, "",
              "Rebuilt with: `mftrnn report " + " ".join(map(str, roots)) + f" --out {out} --name {name}`", ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    (out / f"{name}.json").write_text(json.dumps(written, indent=2, default=str) + "\n")
    return written


def _setting(runs) -> str:
    """What the runs share, in words: task, length, hidden size, batch, steps."""
    c = runs[0].config
    same = lambda k: len({r.config.get(k) for r in runs}) == 1  # noqa: E731
    parts = []
    if same("task.name"):
        parts.append(str(c.get("task.name")).replace("_", " "))
    if same("task.pad") and c.get("task.pad") is not None:
        parts.append(f"pad {c.get('task.pad')}")
    if same("cell.kind"):
        parts.append(str(c.get("cell.kind")).upper())
    parts.append(f"hidden {c.get('model.hidden')}" if same("model.hidden") else "")
    if same("train.steps"):
        parts.append(f"{c.get('train.steps')} steps")
    return ", ".join(p for p in parts if p)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="mftrnn report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="+", type=Path, help="sweep dirs, run dirs, or folders holding them")
    p.add_argument("--out", type=Path, default=None, help="where to write (default: <first root>/report)")
    p.add_argument("--name", default="report", help="file name stem of everything written")
    p.add_argument("--title", default="", help="the setting, for the figures' titles (default: from the runs)")
    p.add_argument("--map", nargs=2, metavar=("X_KEY", "Y_KEY"), default=None,
                   help="heat map axes (default: the two init.gates.* keys the runs vary, if exactly two; "
                        "a key that follows another, as i.mu = -f.mu, moves with its axis)")
    p.add_argument("--threshold", type=float, default=0.5, help="test accuracy that counts as trainable (map)")
    p.add_argument("--no-tied", action="store_true", help="skip the tied theory's contour on the map")
    p.add_argument("--population", type=int, default=500, help="units per grid point of the tied theory")
    a = p.parse_args(argv)
    for root in a.roots:
        if not root.exists():
            p.error(f"{root} does not exist")
    out = a.out or (a.roots[0] / "report")
    try:
        res = build_report(a.roots, out, a.name, a.title, a.map, a.threshold, not a.no_tied, a.population)
    except MftrnnError as exc:
        print(f"mftrnn report: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    print(f"{res['runs']} runs ({res['finished']} finished); differing in: {', '.join(res['differing']) or 'nothing'}")
    for kind, fname in res["figures"].items():
        print(f"  {kind}: {out / fname}")
    print(res["table"])
    print(f"wrote {out / (a.name + '.md')}")


if __name__ == "__main__":
    main()
