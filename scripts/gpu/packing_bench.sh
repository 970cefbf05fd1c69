#!/usr/bin/env bash
# docs/performance.md, "Packed sweeps", the block-diagonal layout: runs/hour of packed training against one run at a time on an
# H200 (`mftrnn bench --packed`, the baseline measured side by side in each round), and a packed sweep
# spread over two GPUs, checked against the runs of docs/results.md.
# On the GPU machine (nvidia-h200-x2), from the repo root:
#   source scripts/device_setup.sh && bash scripts/gpu/packing_bench.sh "$OUT"
# One GPU per cell: LSTM on GPU 0, GRU on GPU 1, side by side. Leaves $OUT/bench.tgz and $OUT/sweep.tgz.
set -u
OUT=${1:?output dir}
W=/tmp/packing; mkdir -p $W/bench
export MFTRNN_CACHE=/tmp/mftrnn-cache
bench() {  # cell gpu
  for spec in "1000 1,4,8 100 50 2" "5000 4,8 30 15 1"; do
    set -- $1 $2 $spec
    CUDA_VISIBLE_DEVICES=$2 timeout 250 python3 -m mftrnn bench --cell "$1" --pad "$3" --packed "$4" --mechanism blockdiag \
      --steps "$5" --warmup "$6" --rounds "$7" --out "$W/bench/packed_$1_T$((28 + $3)).json" \
      > "$W/bench/packed_$1_T$((28 + $3)).txt" 2>&1
  done
}
(cd /tmp && bench lstm 0) &
(cd /tmp && bench gru 1) &
wait
(cd $W && tar czf "$OUT/bench.tgz" bench)
# a real packed sweep over both GPUs: 4 runs in 2 packs, one pack per GPU
(cd /tmp && timeout 150 python3 -m mftrnn train -m hydra/launcher=packed hydra.launcher.mechanism=blockdiag hydra.launcher.pack=2 task.pad=1000 cell=lstm \
  init=critical,chrono seed=0 optim.lr=0.001,0.0011 train.steps=400 train.eval_every=200 train.progress=false \
  wandb.mode=disabled hydra.sweep.dir=$W/sweep > "$W/sweep.txt" 2>&1)
(cd $W && tar czf "$OUT/sweep.tgz" --exclude='*.pt' sweep sweep.txt)
grep -h -v "^\[" $W/bench/*.txt | grep -v Warning | tail -40; tail -8 $W/sweep.txt
