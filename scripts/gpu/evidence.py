"""The GPU evidence of docs/results.md: `mftrnn train` runs of one plan, one queue per GPU.

On the GPU machine, after `source scripts/device_setup.sh`:
    python3 scripts/gpu/evidence.py PLAN OUT_DIR [--seed S] [--inits critical] [--set init.log10_gain=-0.42 --tag _g042]
PLAN: pad1000 (critical and chrono, LSTM and GRU, 4,000 steps), standard1000 (standard, 4,000 steps),
pad5000 (critical and chrono, 1,000 steps), trained1000 (critical, 1,000 steps: the weights after 200 and
1,000 for diagnose). Padded MNIST, rows, hidden 256, batch 128, Adam 1e-3,
clip 1 (the defaults of `mftrnn train`). Critical runs stop at 200 and 1,000 steps on the way (the run
resumes exactly from its checkpoint), so that the model weights at those steps are kept for
`mftrnn diagnose ckpt=...`. Each finished run leaves OUT_DIR/<plan>.tgz with its metrics.jsonl,
summary.json, train.log and the kept weights (model state only); a run that overruns is stopped by
its own timeout, and what it wrote so far is kept.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import torch

COMMON = ["task=padded_mnist", "train.progress=false", "wandb.mode=disabled", "train.ckpt_every=100000"]
# EVIDENCE_EXTRA: more overrides, for a CPU rehearsal (plan smoke): "device=cpu model.hidden=16 data.limit=512"
EXTRA = os.environ.get("EVIDENCE_EXTRA", "device=cuda").split()
PLANS = {
    "pad1000": {"pad": 1000, "steps": 4000, "eval_every": 200, "inits": ["critical", "chrono"]},
    "standard1000": {"pad": 1000, "steps": 4000, "eval_every": 200, "inits": ["standard"]},
    "pad5000": {"pad": 5000, "steps": 1000, "eval_every": 250, "inits": ["critical", "chrono"]},
    "trained1000": {"pad": 1000, "steps": 1000, "eval_every": 200, "inits": ["critical"]},
    "smoke": {"pad": 10, "steps": 1010, "eval_every": 500, "inits": ["critical"]},
}
KEEP_AT = (200, 1000)


def run(name: str, gpu: int, overrides: list[str], steps: int, keep: bool, root: Path, log, deadline: float) -> None:
    run_dir = root / name
    segments = [s for s in KEEP_AT if s < steps] + [steps] if keep else [steps]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # a caller's choice of GPUs is kept: index into it
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible.split(",")[gpu] if visible else str(gpu)}
    for seg in segments:
        left = deadline - time.time()
        if left < 30:
            log(f"{name}: no time left before {seg} steps")
            return
        cmd = [sys.executable, "-m", "mftrnn", "train", *COMMON, *EXTRA, *overrides, f"train.steps={seg}",
               f"hydra.run.dir={run_dir}"]
        t0 = time.time()
        with open(root / f"{name}.log", "a") as f:
            rc = subprocess.call(cmd, cwd="/tmp", env=env, stdout=f, stderr=subprocess.STDOUT, timeout=left)
        log(f"{name}: {seg} steps rc {rc} in {time.time() - t0:.0f} s")
        if keep and seg in KEEP_AT and (run_dir / "ckpt_last.pt").exists():
            state = torch.load(run_dir / "ckpt_last.pt", map_location="cpu", weights_only=False)
            torch.save({"model": state["model"], "step": state["step"]}, run_dir / f"model_{seg}.pt")
        if rc != 0:
            return


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("plan", choices=sorted(PLANS))
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=540, help="seconds for the whole plan")
    ap.add_argument("--inits", nargs="+", help="only these inits of the plan")
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="more overrides for every run")
    ap.add_argument("--tag", default="", help="appended to run and archive names, e.g. _g042")
    args = ap.parse_args()
    plan, deadline = PLANS[args.plan], time.time() + args.budget
    root = Path(os.environ.get("EVIDENCE_ROOT", "/tmp/evidence")) / args.plan
    root.mkdir(parents=True, exist_ok=True)
    gpus = max(torch.cuda.device_count(), 1)
    lines = []

    def log(msg: str) -> None:
        lines.append(msg)
        print(msg, flush=True)

    jobs = []
    for init in args.inits or plan["inits"]:
        for cell in ("lstm", "gru"):
            name = f"{cell}_{init}_pad{plan['pad']}_seed{args.seed}{args.tag}"
            ov = [f"cell={cell}", f"init={init}", f"task.pad={plan['pad']}", f"train.eval_every={plan['eval_every']}",
                  f"seed={args.seed}", *args.set]
            jobs.append((name, ov, init == "critical"))
    queues = [jobs[i::gpus] for i in range(gpus)]  # LSTM on one GPU, GRU on the other

    def work(gpu: int, queue) -> None:
        for name, ov, keep in queue:
            run(name, gpu, ov, plan["steps"], keep, root, log, deadline)

    threads = [threading.Thread(target=work, args=(g, q)) for g, q in enumerate(queues)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    args.out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.out / f"{args.plan}_seed{args.seed}{args.tag}.tgz", "w:gz") as tar:
        for run_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for f in ("metrics.jsonl", "summary.json", "train.log", "model_200.pt", "model_1000.pt"):
                if (run_dir / f).exists():
                    tar.add(run_dir / f, arcname=f"{run_dir.name}/{f}")
        for f in root.glob("*.log"):
            tar.add(f, arcname=f"logs/{f.name}")
    (args.out / f"{args.plan}_seed{args.seed}{args.tag}.txt").write_text("\n".join(lines) + "\n")
    shutil.rmtree(root / "wandb", ignore_errors=True)


if __name__ == "__main__":
    main()
