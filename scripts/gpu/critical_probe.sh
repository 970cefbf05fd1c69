#!/usr/bin/env bash
# Learning curves of candidate tied-critical initializations on padded MNIST (pad 1000, rows,
# hidden 256, batch 128, Adam 1e-3, clip 1, one seed): the measurements that chose the critical
# solver's free parameters (docs/theory.md §10). One device call, one queue of runs per GPU:
#   source scripts/device_setup.sh && bash scripts/gpu/critical_probe.sh "$OUT"
# Each run appends its validation curve and test accuracy to $OUT/critical_probe.jsonl.
# The measured results: docs/data/results/critical_probe.jsonl (docs/theory.md §10.2).
#
# Every candidate sits at tied spectral radius 1 at the zero state (docs/theory.md eq. (T34)):
# LSTM f + i o sigma_g = 1 with i = 1 - f (b_i = -b_f), o = sigmoid(3), sigma_g = 1/o;
# GRU z + (1 - z) r sigma_n = 1 with r = sigmoid(3), sigma_n = 1/r. They differ in the keep
# gate's bias (kappa = T (1 - f): 6.79 -> 1.15, 4.6 -> 10, 2.3 -> 93 at T = 1028) and in whether
# the gates see the state and the input (gate sigma 0, nu 0.1) or not (sigma 1, nu 1).
set -uo pipefail
out=${1:?output dir}
steps=${STEPS:-1200}
nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader | tee "$out/device.txt"
common="task=padded_mnist task.pad=${PAD:-1000} train.steps=$steps train.eval_every=200 train.ckpt_every=100000 \
train.progress=false wandb.mode=disabled device=cuda init=meanfield init.recurrent=orthogonal"
lstm() {  # keep bias, gate sigma, gate nu
  echo "cell=lstm init.gates.f.mu=$1 init.gates.i.mu=-$1 init.gates.o.mu=3 init.gates.g.sigma=1.0498 \
init.gates.g.nu=1 init.gates.i.sigma=$2 init.gates.f.sigma=$2 init.gates.o.sigma=$2 init.gates.i.nu=$3 \
init.gates.f.nu=$3 init.gates.o.nu=$3"
}
gru() {
  echo "cell=gru init.gates.z.mu=$1 init.gates.r.mu=3 init.gates.n.sigma=1.0498 init.gates.n.nu=1 \
init.gates.z.sigma=$2 init.gates.r.sigma=$2 init.gates.z.nu=$3 init.gates.r.nu=$3"
}
one() {  # gpu, name, overrides...
  local gpu=$1 name=$2; shift 2
  local t0=$(date +%s)
  # from /tmp: in the repository root, the source tree would shadow the installed mftrnn (and its conf)
  (cd /tmp && CUDA_VISIBLE_DEVICES=$gpu python3 -m mftrnn train $common "$@" hydra.run.dir=/tmp/probe/$name \
      > /tmp/probe_$name.log 2>&1) || tail -3 /tmp/probe_$name.log
  python3 - "$name" "$(( $(date +%s) - t0 ))" "$*" >> "$out/critical_probe.jsonl" <<'PY'
import json, sys
name, secs, args = sys.argv[1], float(sys.argv[2]), sys.argv[3]
d = f"/tmp/probe/{name}"
try:
    rows = [json.loads(l) for l in open(f"{d}/metrics.jsonl")]
    val = {r["step"]: round(r["val/acc"], 4) for r in rows if "val/acc" in r}
    s = json.load(open(f"{d}/summary.json"))
except OSError as exc:
    val, s = {}, {"error": str(exc)}
print(json.dumps({"run": name, "seconds": secs, "overrides": args, "val": val,
                  "test_acc": s.get("test_acc"), "summary": s}))
PY
  echo "$name ${secs:-} $(tail -1 "$out/critical_probe.jsonl" | cut -c1-160)"
}
ngpu=$(nvidia-smi -L | wc -l)
queue0=("lstm_k1 $(lstm 6.79 0 0.1)" "lstm_k1_gated $(lstm 6.79 1 1)" "lstm_k10 $(lstm 4.6 0 0.1)" "lstm_k93 $(lstm 2.3 0 0.1)")
queue1=("gru_k1 $(gru 6.79 0 0.1)" "gru_k1_gated $(gru 6.79 1 1)" "gru_k10 $(gru 4.6 0 0.1)" "gru_k93 $(gru 2.3 0 0.1)")
work() {  # gpu, runs...
  local gpu=$1; shift
  for r in "$@"; do one "$gpu" $r; done
}
if [ "$ngpu" -ge 2 ]; then
  work 0 "${queue0[@]}" & work 1 "${queue1[@]}" & wait
else
  work 0 "${queue0[@]}" "${queue1[@]}"
fi
