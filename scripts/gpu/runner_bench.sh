#!/usr/bin/env bash
# The GPU measurements of docs/performance.md and the README's picture, in one device call:
#   source scripts/device_setup.sh && bash scripts/gpu/runner_bench.sh "$OUT"
# (run from the repository root on the GPU machine; results land in $OUT).
set -uo pipefail
out=${1:?output dir}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
cd /tmp
# 1. Runner vs bare cuDNN loop (padded MNIST shapes: T = 828, B = 128, H = 256).
python3 -m mftrnn bench --steps 500 --rounds 3 --out "$out/bench.json" 2>&1 | tee "$out/bench.txt"
# 2. The README's picture: padded MNIST with 1,000 steps of zero padding (T = 1028).
python3 -m mftrnn train -m experiment_name=readme_pad1000 task=padded_mnist task.pad=1000 \
    cell=lstm,gru init=standard,chrono train.steps=1500 train.eval_every=250 train.progress=false \
    hydra.sweep.dir=/tmp/sweeps/readme_pad1000 2>&1 | grep -E "done:|diverged|error" | tee "$out/sweep.txt"
tar czf "$out/readme_pad1000.tgz" --exclude='*.pt' --exclude='wandb' -C /tmp/sweeps readme_pad1000
# 3. A sequence over cuDNN's 65,535-step limit (repeated-pixel MNIST, k = 90: T = 70,560), chunked.
python3 -m mftrnn train task=repeated_pixel task.repeats=90 train.batch_size=8 train.steps=4 \
    train.log_every=2 data.limit=16 train.eval_batch_size=16 train.progress=false wandb.mode=disabled \
    hydra.run.dir=/tmp/long 2>&1 | tail -3 | tee "$out/long.txt"
python3 -c "import json; s = json.load(open('/tmp/long/summary.json')); print('long run:', s['seq_len'], 'steps/seq,', s['steps'], 'steps, diverged', s['diverged'])" | tee -a "$out/long.txt"
