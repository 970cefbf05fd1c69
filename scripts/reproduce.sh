#!/usr/bin/env bash
# Every experiment of the paper (REPRODUCTION.md) as Hydra multirun sweeps, then their figures and tables.
#   make reproduce          # bash scripts/reproduce.sh quick   (one GPU, packed sweeps; figures to docs/figures)
#   make reproduce-smoke    # bash scripts/reproduce.sh smoke   (CPU, toy size, a few minutes; in CI)
#   bash scripts/reproduce.sh full
# Environment: REPRODUCE_ROOT (sweeps and reports; default outputs/reproduce/<scale>), REPRODUCE_FIGURES
# (where the figures go; default <root>/figures), MFTRNN (the command; default mftrnn), REPRODUCE_PACKING
# (hydra.launcher.mechanism: auto, the default, is scan on a GPU; blockdiag trained the committed quick run).
# Re-running resumes: finished steps are skipped (markers under <root>/.done: delete it to run every
# step again), interrupted sweeps continue, their finished runs skipped and the others resumed from
# their checkpoints.
set -euo pipefail
SCALE=${1:-quick}
case $SCALE in smoke|quick|full) ;; *) echo "usage: $0 smoke|quick|full" >&2; exit 2;; esac
ROOT=${REPRODUCE_ROOT:-outputs/reproduce/$SCALE}
FIG=${REPRODUCE_FIGURES:-$ROOT/figures}
M=${MFTRNN:-mftrnn}
PACKING=${REPRODUCE_PACKING:-auto}
mkdir -p "$ROOT" "$FIG"
t0=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - t0 )) s)"; }
# `finished NAME` is true (and says so) when step NAME completed in an earlier run of this script;
# `mark NAME` records that it did. A re-run after a time limit then repeats nothing that was done.
finished() { [ -f "$ROOT/.done/$1" ] && echo "== $1: finished before, skipped"; }
mark() { mkdir -p "$ROOT/.done" && touch "$ROOT/.done/$1"; }

# (a) trainability against length, (b) heat maps, (c) learning curves, (f) the drive ablation: packed sweeps
for e in trainability heatmap_lstm heatmap_gru curves_mnist curves_cifar10 curves_repeated_pixel drive_ablation; do
  finished "sweep-$e" && continue
  step "sweep $e"
  $M train experiment=$e scale=$SCALE hydra/launcher=packed hydra.launcher.mechanism=$PACKING \
    hydra.sweep.dir="$ROOT/sweeps/$e"
  mark "sweep-$e"
done

# (d) theory against networks: Q and C trajectories and the Jacobian spectrum beside simulated networks
# (critical and standard), and `mftrnn diagnose` of the critical runs before and after training
case $SCALE in smoke) TH="theory.steps=40 theory.split=10 theory.width=64 theory.seeds=1 theory.population=500 theory.spectrum.population=500 theory.spectrum.points=20 theory.spectrum.product_points=10"
                     PAD=20; DEV="device=cpu model.hidden=16";;
               quick) TH=""; PAD=1000; DEV="";; full) TH=""; PAD=3000; DEV="";; esac
for cell in lstm gru; do
  for init in critical standard; do
    finished "theory-$cell-$init" && continue
    step "theory $cell $init"
    $M theory cell=$cell init=$init theory.weights=tied theory.simulate=true theory.spectrum.product=true $TH ${DEV%% *} \
      hydra.run.dir="$ROOT/theory/$cell-$init"
    for f in "$ROOT/theory/$cell-$init"/*.png; do cp "$f" "$FIG/theory_${cell}_${init}_$(basename "$f")"; done
    mark "theory-$cell-$init"
  done
  finished "diagnose-$cell" && continue
  run=$(find "$ROOT/sweeps/trainability" -path "*/$cell-critical/*task.pad=$PAD*" -name ckpt_last.pt | head -1)
  step "diagnose $cell critical pad $PAD"
  $M diagnose cell=$cell init=critical task.pad=$PAD $DEV hydra.run.dir="$ROOT/diagnose/$cell-init"
  cp "$ROOT/diagnose/$cell-init/diagnose.png" "$FIG/diagnose_${cell}_critical_init.png"
  if [ -n "$run" ]; then
    $M diagnose cell=$cell init=critical task.pad=$PAD $DEV ckpt="'$run'" hydra.run.dir="$ROOT/diagnose/$cell-trained"
    cp "$ROOT/diagnose/$cell-trained/diagnose.png" "$FIG/diagnose_${cell}_critical_trained.png"
  fi
  mark "diagnose-$cell"
done

# reports: figures (a), (b), (c), the generalization table (e) and the drive ablation (f)
step "reports"
$M report "$ROOT/sweeps/trainability" --out "$FIG" --name trainability
$M report "$ROOT/sweeps/heatmap_lstm" --out "$FIG" --name heatmap_lstm
$M report "$ROOT/sweeps/heatmap_gru" --out "$FIG" --name heatmap_gru
for t in mnist cifar10 repeated_pixel; do
  $M report "$ROOT/sweeps/curves_$t" --out "$FIG" --name "curves_$t"
done
$M report "$ROOT"/sweeps/curves_* --out "$FIG" --name generalization
$M report "$ROOT/sweeps/drive_ablation" --out "$FIG" --name drive_ablation
step "done: figures and tables in $FIG"
