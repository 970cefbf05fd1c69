#!/usr/bin/env bash
# docs/performance.md, "Packed sweeps": runs/hour of the scan layout (hydra.launcher.mechanism=scan, the
# default) in the real runner against one run at a time on one H200, with `mftrnn bench --packed`.
# On the GPU machine, from the repository root, in two calls (each under the 10-minute limit):
#   source scripts/device_setup.sh && bash scripts/gpu/scan_bench.sh 1028 "$OUT"
#   export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 MFTRNN_DATA=/tmp/data PYTHONSAFEPATH=1 && bash scripts/gpu/scan_bench.sh 5028 "$OUT"
# Each bench writes its JSON and console into OUT as soon as it ends. 1028 starts with a real packed
# sweep through the launcher (2 runs, evaluation and checkpoints included), so that an error shows at once;
# 5028 with two runs that learn (pad 200), trained alone and packed, to compare their accuracies.
set -uo pipefail
T=${1:?1028 or 5028}
OUT=${2:?output dir}
export MFTRNN_CACHE=/tmp/mftrnn-cache
cd /tmp
bench() {  # cell pad packs steps warmup limit_s
  local name="scan_$1_T$((28 + $2))"
  timeout "$6" python3 -m mftrnn bench --cell "$1" --pad "$2" --packed "$3" --steps "$4" --warmup "$5" --rounds 1 \
    --out "$OUT/$name.json" > "$OUT/$name.txt" 2>&1
  echo "== $name (exit $?)"; grep -v -i warn "$OUT/$name.txt" | tail -6
}
if [ "$T" = 1028 ]; then
  timeout 120 python3 -m mftrnn train -m hydra/launcher=packed seed=0,1 task.pad=1000 train.steps=100 \
    train.eval_every=50 train.progress=false wandb.mode=disabled hydra.sweep.dir=/tmp/scan_sweep > "$OUT/sweep.txt" 2>&1
  echo "== sweep (exit $?)"; grep -E "packed with|done:|rror" "$OUT/sweep.txt" | tail -6
  bench lstm 1000 8,16 100 50 200
  bench gru 1000 8,16 100 50 200
else
  # the same runs alone and packed (GRU, chrono, pad 200, two seeds): a packed run learns as it does alone
  A=(train -m task.pad=200 cell=gru init=chrono seed=0,1 train.steps=300 train.eval_every=300 train.progress=false
     wandb.mode=disabled)
  timeout 60 python3 -m mftrnn "${A[@]}" hydra.sweep.dir=/tmp/check_alone > "$OUT/check_alone.txt" 2>&1
  timeout 60 python3 -m mftrnn "${A[@]}" hydra/launcher=packed hydra.sweep.dir=/tmp/check_packed > "$OUT/check_packed.txt" 2>&1
  echo "== alone / packed"; grep -h "done:" "$OUT/check_alone.txt" "$OUT/check_packed.txt"
  bench lstm 5000 8 30 15 170
  bench gru 5000 8 30 15 170
fi
