#!/usr/bin/env bash
# The trained gain under a norm bound on the candidate's recurrent block (docs/theory.md §10.5): critical
# LSTM and GRU on padded MNIST, one packed sweep over the bounds given, weights kept after 200 and 1,000
# steps for `mftrnn diagnose ckpt=...` (scripts/diagnose_table.py). On the GPU machine:
#   source scripts/device_setup.sh && bash scripts/gpu/trained_gain_cap.sh "$OUT" 5000 1.5,2.0
# Leaves $OUT/trained_gain_cap.tgz: each run's metrics.jsonl, summary.json, train.log, model_200.pt and
# model_1000.pt (model state only), named <cell>_cap<bound>.
set -u
OUT=${1:?output dir}; PAD=${2:-5000}; CAPS=${3:-1.5,2.0}
ROOT=/tmp/trained_gain_cap
cd /tmp
for steps in 200 1000; do
  limit=$(( steps == 200 ? 200 : 360 ))
  timeout $limit python3 -m mftrnn train -m task=padded_mnist task.pad="$PAD" cell=lstm,gru init=critical \
    optim.candidate_norm_cap="$CAPS" train.steps=$steps train.eval_every=250 train.ckpt_every=100000 \
    train.progress=false wandb.mode=disabled hydra/launcher=packed hydra.sweep.dir="$ROOT" \
    > "$OUT/sweep_$steps.log" 2>&1
  echo "steps $steps: rc $?"
  python3 - "$ROOT" "$steps" <<'EOF'
import sys, torch
from pathlib import Path
root, steps = Path(sys.argv[1]), sys.argv[2]
for ckpt in sorted(root.rglob("ckpt_last.pt")):
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    torch.save({"model": state["model"], "step": state["step"]}, ckpt.parent / f"model_{steps}.pt")
    print(ckpt.parent.relative_to(root), "step", state["step"])
EOF
done
cd "$ROOT" && find . \( -name metrics.jsonl -o -name summary.json -o -name train.log -o -name "model_*.pt" \
  -o -name config.yaml \) | tar czf "$OUT/trained_gain_cap.tgz" -T -
grep -h '"val_acc"\|"test_acc"' -r "$ROOT" --include=summary.json | head
