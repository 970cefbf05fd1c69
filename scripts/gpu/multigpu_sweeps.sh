#!/usr/bin/env bash
# The multi-GPU measurement of docs/performance.md, in one device call on a 2-GPU machine:
#   source scripts/device_setup.sh && bash scripts/gpu/multigpu_sweeps.sh "$OUT"
# The same sweep of 4 padded-MNIST runs (STEPS steps each, default 400) four times: the default
# (basic) launcher on one GPU, hydra/launcher=gpus restricted to one GPU, hydra/launcher=gpus on both,
# and the same with every worker using all CPU threads (OMP_NUM_THREADS = cores instead of a share).
# QUICK=1 runs only the two launcher sweeps (docs/performance.md: STEPS=1000 QUICK=1). nvidia-smi
# samples every GPU twice a second throughout; everything lands in $OUT/multigpu_sweeps.tgz (walls.txt: each
# sweep's wall time; <sweep>.jobs.txt: each run's placement and times; smi.csv: the samples).
set -uo pipefail
out=${1:?output dir}
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
    > "$out/smi.csv" &
smi=$!
cd /tmp
STEPS=${STEPS:-400}
RUN=(task=padded_mnist task.pad=1000 cell=lstm init=chrono train.steps=$STEPS train.eval_every=$STEPS
     train.progress=false seed=0,1,2,3)
sweep() {  # name, extra args...
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  echo "$name start $(date -u +%Y/%m/%d\ %H:%M:%S.%3N)" >> "$out/walls.txt"
  python3 -m mftrnn train -m "${RUN[@]}" hydra.sweep.dir="/tmp/sweeps/$name" "$@" 2>&1 \
      | grep -E "slot|done:|error|Error" | tee "$out/$name.log"
  local t1; t1=$(date +%s.%N)
  echo "$name end $(date -u +%Y/%m/%d\ %H:%M:%S.%3N) wall_s $(python3 -c "print(round($t1 - $t0, 1))")" >> "$out/walls.txt"
  find "/tmp/sweeps/$name" -name summary.json | sort | while read -r f; do
    python3 -c "
import json, os, sys
d = os.path.dirname(sys.argv[1]); s = json.load(open(sys.argv[1]))
p = json.load(open(d + '/placement.json')) if os.path.exists(d + '/placement.json') else {}
print(d.split('/')[-1], s['steps'], 'train_s', round(s['wall_time_s'], 1), 'test_acc', s['test_acc'],
      'gpu', p.get('gpu'), 'pid', p.get('pid'), 'threads', p.get('cpu_threads'), 'started', p.get('started'),
      'finished', os.path.getmtime(sys.argv[1]))" "$f"
  done > "$out/$name.jobs.txt"
}
if [ "${QUICK:-0}" = 1 ]; then  # the second measurement: longer runs, the two launcher sweeps only
  CUDA_VISIBLE_DEVICES=0 sweep gpus_1gpu_steps$STEPS hydra/launcher=gpus
  sweep gpus_2gpu_steps$STEPS hydra/launcher=gpus
else
  CUDA_VISIBLE_DEVICES=0 sweep basic_1gpu
  CUDA_VISIBLE_DEVICES=0 sweep gpus_1gpu hydra/launcher=gpus
  sweep gpus_2gpu hydra/launcher=gpus
  OMP_NUM_THREADS=$(nproc) sweep gpus_2gpu_allthreads hydra/launcher=gpus
fi
kill $smi
cat "$out/walls.txt"
cd "$out" && tar czf multigpu_sweeps.tgz --remove-files ./*.txt ./*.log smi.csv
