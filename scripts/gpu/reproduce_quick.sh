#!/usr/bin/env bash
# make reproduce (scale=quick) on a GPU machine whose calls are capped (600 s each): run it call after
# call while the machine stays warm (its /tmp survives); each call resumes where the last one stopped
# (finished steps and runs are skipped, a run cut by the time limit resumes from the checkpoint written
# at SIGTERM). CIFAR-10 first, in four calls that carry .carry_cifar (scripts/device_prepare.sh
# --cifar-part N, then `bash scripts/device_cifar.sh` on the device), then:
#   source scripts/device_setup.sh && bash scripts/gpu/reproduce_quick.sh "$OUT" 540
# (a later call, the machine still warm: export PYTHONPATH=/tmp/site MFTRNN_DATA=/tmp/data PYTHONSAFEPATH=1 first)
# Leaves $OUT/reproduce.txt (progress) and, once everything is done, $OUT/figures.tgz (the figures and
# tables for docs/figures) and $OUT/runs.tgz (every run's metrics.jsonl, summary.json and .hydra, and
# the JSON of the theory and diagnose steps).
set -u
OUT=${1:?output dir}; LIMIT=${2:-540}
ROOT=/tmp/reproduce
export REPRODUCE_ROOT=$ROOT REPRODUCE_FIGURES=$ROOT/figures MFTRNN_CACHE=/tmp/mftrnn-cache MFTRNN="python3 -m mftrnn"
timeout "$LIMIT" bash scripts/reproduce.sh quick > "$OUT/reproduce.txt" 2>&1
rc=$?
grep -E "^== |error" "$OUT/reproduce.txt" | tail -30
if grep -q "^== done" "$OUT/reproduce.txt"; then
  tar czf "$OUT/figures.tgz" -C "$ROOT" figures
  (cd "$ROOT" && find sweeps theory diagnose -name metrics.jsonl -o -name summary.json -o -path "*/.hydra/*" \
     -o -name theory.json -o -name diagnose.json | tar czf "$OUT/runs.tgz" -T -)
  echo "all done"
else
  echo "not finished (rc $rc): call again while the machine is warm"
fi
