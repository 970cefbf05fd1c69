#!/usr/bin/env bash
# docs/theory.md's per-init table (theory vs networks for pytorch, standard, chrono, meanfield at
# T = 100, 1000, 5000), in one device call; resumable, so a second call finishes what the first left:
#   source scripts/device_setup.sh && bash scripts/gpu/init_table.sh "$OUT"
# Then, here: cp <files_at>/init_table.json docs/data/ && python scripts/init_table.py --doc
set -uo pipefail
out=${1:?output dir}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"
json=/tmp/init_table.json
[ -f "$json" ] || cp docs/data/init_table.json "$json" 2>/dev/null || true
timeout "${LIMIT:-540}" python3 scripts/init_table.py --device cuda --data "$MFTRNN_DATA" --json "$json" \
    --width 4096 --seeds 3 --seeds-large 1 --population 4000 2>&1 | grep -v Warning
cp "$json" "$out/init_table.json"
