#!/usr/bin/env python3
"""GPU time a set of packed sweeps would take on one GPU, projected from their runs' own wall times.

    python scripts/sweep_cost.py docs/data/reproduce/quick/sweeps [--exclude-rerun]

For each sweep (a folder under ROOT) the runs are grouped as `hydra/launcher=packed` groups them: by
cell and sequence length (the shapes that decide a pack; one task per sweep here), at most BEST_PACK
runs per pack (mftrnn/packed_train.py) of the layout that trained them (`--mechanism`, default
blockdiag: the committed quick-scale sweeps were trained with it). A pack's time is the median `wall_time_s` (summary.json) of
its group's runs, which a packed run records for its whole pack; the sweep's time is the sum over its
packs, as one GPU trains them one after the other. Start-up, data loading, theory and diagnose are
not included. A projection from measured pack times, not a measured wall time. `--exclude-rerun`
leaves out of the medians runs that were trained again outside their sweep (smaller packs), named
by `--rerun-key`, a config key they record and the others do not (default init.isometry).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from mftrnn.packed_train import BEST_PACK
from mftrnn.schema import flatten


def sweep_cost(sweep: Path, rerun_key: str | None, mechanism: str = "blockdiag") -> tuple[float, list[str]]:
    """(projected seconds on one GPU, one line per pack group) of one sweep folder."""
    groups: dict[tuple[str, int], list[tuple[float, bool]]] = defaultdict(list)
    for f in sweep.rglob("summary.json"):
        s = json.loads(f.read_text())
        if "wall_time_s" not in s:
            continue
        rerun = rerun_key is not None and rerun_key in flatten(s.get("config", {}))
        groups[(s["cell"], int(s["seq_len"]))].append((float(s["wall_time_s"]), rerun))
    total, rows = 0.0, []
    for (cell, T), runs in sorted(groups.items()):
        packs = math.ceil(len(runs) / BEST_PACK[mechanism][cell])
        walls = [w for w, rerun in runs if not rerun] or [w for w, _ in runs]
        t = packs * statistics.median(walls)
        total += t
        rows.append(f"{cell} T={T}: {len(runs)} runs, {packs} pack(s) x {statistics.median(walls):.0f} s")
    return total, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="a folder of sweep folders")
    ap.add_argument("--exclude-rerun", action="store_true")
    ap.add_argument("--rerun-key", default="init.isometry")
    ap.add_argument("--mechanism", default="blockdiag", choices=list(BEST_PACK),
                    help="the packing layout the sweeps were trained with (its pack sizes)")
    a = ap.parse_args()
    grand = 0.0
    for sweep in sorted(p for p in a.root.iterdir() if p.is_dir()):
        t, rows = sweep_cost(sweep, a.rerun_key if a.exclude_rerun else None, a.mechanism)
        grand += t
        print(f"{sweep.name}: {t:.0f} s  ({'; '.join(rows)})")
    print(f"all sweeps: {grand:.0f} s = {grand / 60:.1f} min of packed training on one GPU (start-up excluded)")


if __name__ == "__main__":
    main()
