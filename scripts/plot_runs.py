#!/usr/bin/env python3
"""Plot learning curves of run dirs and print their final metrics as a Markdown table.

    python scripts/plot_runs.py outputs/sweeps/readme_pad1000 --out docs/img/padded_mnist_pad1000.png \
        --title "padded MNIST, 1,000 padding steps (T = 1028)"
"""
import argparse
from pathlib import Path

from mftrnn.report import find_runs, plot_curves, summary_table

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("roots", nargs="+", type=Path, help="run dirs or folders holding them (e.g. a sweep dir)")
p.add_argument("--out", type=Path, required=True, help="PNG to write")
p.add_argument("--metric", default="val/acc")
p.add_argument("--title", default=None)
a = p.parse_args()
runs = find_runs(a.roots)
if not runs:
    p.error(f"no run dirs (with metrics.jsonl) under {', '.join(map(str, a.roots))}")
print(f"wrote {plot_curves(runs, a.out, a.metric, a.title)}")
print(summary_table(runs))
