#!/usr/bin/env bash
# The GPU measurements of docs/theory.md §7 (tied weights), in one device call:
#   source scripts/device_setup.sh && bash scripts/gpu/tied_theory.sh "$OUT"
# (run from the repository root on the GPU machine; results land in $OUT).
set -uo pipefail
out=${1:?output dir}
repo=$(pwd)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
# 1. The validation table (rewrites docs/theory.md between the tied-table markers).
python3 scripts/tied_table.py --width 4000 --seeds 4 --cases 10 --population 50000 2>&1 | tail -3
cp docs/theory.md "$out/theory.md"; cp docs/data/tied_table.json "$out/tied_table.json"
cd /tmp
T="theory.spectrum.density=false theory.spectrum.product=false device=cuda"
# 2. Memory-horizon grids, untied and tied theory (31 x 21 points, 220 steps, 2,000 units per point).
python3 -m mftrnn theory cell=gru theory.weights=tied theory.steps=220 "theory.grid.x=[init.gates.z.mu,0,6,31]" \
    "theory.grid.y=[init.gates.z.rho,0,2,21]" theory.grid.T=100 theory.grid.horizon=true theory.grid.chunk_gb=40 $T \
    hydra.run.dir=/tmp/grid_gru 2>&1 | grep -E "grid|error"
python3 -m mftrnn theory cell=lstm theory.weights=tied theory.steps=220 "theory.grid.x=[init.gates.f.mu,0,6,31]" \
    "theory.grid.y=[init.gates.f.rho,0,2,21]" theory.grid.T=100 theory.grid.horizon=true theory.grid.chunk_gb=40 $T \
    hydra.run.dir=/tmp/grid_lstm 2>&1 | grep -E "grid|error"
# 3. The CPU timing's grid (11 x 9, 80 steps, 1,000 units) on the GPU, for the speed ratio.
python3 -m mftrnn theory cell=gru theory.weights=tied theory.steps=80 "theory.grid.x=[init.gates.z.mu,-1,4,11]" \
    "theory.grid.y=[init.gates.z.rho,0,2,9]" theory.grid.population=1000 theory.grid.horizon=true $T hydra.run.dir=/tmp/grid_small \
    2>&1 | grep -E "grid|error"
# 4. Real task inputs: two MNIST test digits with 200 steps of zero padding, theory vs tied networks.
python3 -m mftrnn theory cell=lstm init.gates.f.mu=4 init.gates.f.rho=1 theory.weights=tied theory/input=task \
    task.pad=200 theory.simulate=true theory.width=2000 theory.seeds=3 $T hydra.run.dir=/tmp/task_lstm \
    2>&1 | grep -E "inputs|horizon|error"
for d in grid_gru grid_lstm grid_small task_lstm; do
  mkdir -p "$out/$d"; cp /tmp/$d/*.png /tmp/$d/theory.json "$out/$d/" 2>/dev/null
done
cd "$out" && tar czf tied_theory.tgz --remove-files device.txt theory.md tied_table.json grid_gru grid_lstm grid_small task_lstm
