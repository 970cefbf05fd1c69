#!/usr/bin/env python3
"""Time 101 x 101 closed-form grids (docs/theory.md §5): keep-gate bias mean x its recurrent scale.

    python scripts/grid_timing.py
"""
import time

from mftrnn.theory.closed import GATES, Gate, Hyper
from mftrnn.theory.grid import axis_values, compute_grid

for cell in ("lstm", "gru", "gru_reset_before"):
    keep = "f" if cell == "lstm" else "z"
    hp = Hyper(cell, {k: Gate() for k in GATES[cell]})
    x = axis_values([f"init.gates.{keep}.mu", -2, 8, 101], "x", cell)
    y = axis_values([f"init.gates.{keep}.sigma", 0, 2, 101], "y", cell)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        compute_grid(hp, 1.0, x, y)
        times.append(time.perf_counter() - t0)
    print(f"{cell:<18} 101x101: best {min(times):.2f} s, median {sorted(times)[1]:.2f} s (3 runs)")
