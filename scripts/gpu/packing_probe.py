"""Runs per hour of block-diagonal packing (mftrnn/packed.py) against one run at a time, on one GPU.

For each cell, T and pack size K: K padded-MNIST-shaped runs (28 inputs, hidden 256, batch 128,
Adam with per-run learning rates, per-run clipping) trained as one PackedRNN, timed over `--steps`
optimizer steps after a warm-up; runs/hour relative to K = 1 is the number that matters. FP32 and
TF32 (torch.backends.cuda.matmul / cudnn allow_tf32) are measured separately. Synthetic inputs: the
data pipeline is the same for packed and single runs and is not what is measured.

    source scripts/device_setup.sh && python3 scripts/gpu/packing_probe.py "$OUT/packing.json"
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mftrnn.models import RNNClassifier
from mftrnn.packed import PackedAdam, PackedRNN, clip_per_run
from mftrnn.schema import CellKind, ModelConfig


def measure(cell: str, seq_len: int, k: int, steps: int, warmup: int, tf32: bool, hidden: int, batch: int) -> float:
    """Optimizer steps per second of a pack of k runs."""
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    models = [RNNClassifier(CellKind(cell), 28, ModelConfig(hidden=hidden)) for _ in range(k)]
    packed = PackedRNN(models).cuda()
    opt = PackedAdam(packed, [1e-3] * k)
    x = torch.randn(seq_len, batch, 28 * k, device="cuda")
    y = torch.randint(0, 10, (k, batch), device="cuda")
    for i in range(warmup + steps):
        if i == warmup:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = packed(x)
        F.cross_entropy(logits.reshape(k * batch, -1), y.reshape(-1), reduction="sum").div(batch).backward()
        clip_per_run(packed, [1.0] * k)
        opt.step()
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--packs", default="1,2,4,8")
    ap.add_argument("--lengths", default="1028,5028")
    ap.add_argument("--cells", default="lstm,gru")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=128)
    a = ap.parse_args()
    rows = []
    for cell in a.cells.split(","):
        for seq_len in map(int, a.lengths.split(",")):
            for tf32 in (False, True):
                base = None
                for k in map(int, a.packs.split(",")):
                    steps = max(5, a.steps * 1028 // seq_len)
                    sps = measure(cell, seq_len, k, steps, a.warmup, tf32, a.hidden, a.batch)
                    base = base or sps / k  # runs x steps/s of K = 1
                    row = {"cell": cell, "T": seq_len, "tf32": tf32, "K": k, "steps_per_s": sps,
                           "run_steps_per_s": k * sps, "runs_per_hour_ratio": k * sps / base,
                           "device": torch.cuda.get_device_name()}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    a.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
