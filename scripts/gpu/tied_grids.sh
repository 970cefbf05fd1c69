#!/usr/bin/env bash
# The memory-horizon grids and the task-input figure of docs/theory.md §7.6-7.7, in one device call:
#   source scripts/device_setup.sh && bash scripts/gpu/tied_grids.sh "$OUT"
set -uo pipefail
out=${1:?output dir}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
cd /tmp
T="theory.spectrum.density=false theory.spectrum.product=false device=cuda"
for cell in gru lstm; do
  g=$([ $cell = gru ] && echo z || echo f)
  python3 -m mftrnn theory cell=$cell theory.weights=tied theory.steps=220 "theory.grid.x=[init.gates.$g.mu,0,6,41]" \
      "theory.grid.y=[init.gates.$g.rho,0,2,21]" theory.grid.T=100 theory.grid.horizon=true theory.grid.chunk_gb=40 $T \
      hydra.run.dir=/tmp/grid_$cell 2>&1 | grep -E "horizon grid|rror"
done
# The timing grid (also run on 2 CPU cores: docs/theory.md §7.6).
python3 -m mftrnn theory cell=gru theory.weights=tied theory.steps=120 "theory.grid.x=[init.gates.z.mu,0,5,21]" \
    "theory.grid.y=[init.gates.z.rho,0,2,16]" theory.grid.horizon=true $T hydra.run.dir=/tmp/grid_timing 2>&1 | grep -E "horizon grid|rror"
python3 -m mftrnn theory cell=lstm init.gates.f.mu=4 init.gates.f.rho=1 theory.weights=tied theory/input=task \
    task.pad=200 theory.simulate=true theory.width=2000 theory.seeds=3 $T hydra.run.dir=/tmp/task_lstm \
    2>&1 | grep -E "inputs|horizon|rror"
for d in grid_gru grid_lstm grid_timing task_lstm; do
  mkdir -p "$out/$d"; cp /tmp/$d/*.png /tmp/$d/theory.json /tmp/$d/grid.npz "$out/$d/" 2>/dev/null
done
cd "$out" && tar czf grids.tgz --remove-files device.txt grid_gru grid_lstm grid_timing task_lstm
