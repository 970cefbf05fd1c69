"""Does a batched loop over time (mftrnn/scan.py), replayed as one CUDA graph per training step, give
more runs/hour than block-diagonal cuDNN packing? (docs/performance.md, Packed sweeps)

For each cell and pack size K it times, in one process: one run alone in cuDNN (nn.LSTM / nn.GRU and
its head, the baseline), the block-diagonal pack of K (mftrnn.packed.PackedRNN,
hydra.launcher.mechanism=blockdiag), and the scan of K runs: eager, captured whole in a CUDA graph (forward, backward, Adam with
capturable=True), and graphed with the step's pointwise part fused by torch.compile. Synthetic
inputs, T = 1028 (padded MNIST at pad 1000), hidden 256, batch 128, TF32 for cuDNN and for the scan's
matmuls alike, deterministic algorithms off (a probe, not the runner).
Runs/hour relative to one run alone is K × (steps/s of the pack) / (steps/s alone). It also prints how
far the scan's final state is from cuDNN's for the same weights and inputs (TF32 on both sides).

    source scripts/device_setup.sh && python3 scripts/gpu/scan_probe.py 1 4 8 16 | tee "$OUT/scan.txt"

A CPU rehearsal (no graphs, tiny sizes): PROBE_CPU=1 python3 scripts/gpu/scan_probe.py 1 2
"""
from __future__ import annotations

import os
import sys
import traceback

import torch
import torch.nn.functional as F
from torch import nn

from mftrnn.bench import steps_per_s
from mftrnn.models import RNNClassifier
from mftrnn.packed import PackedRNN
from mftrnn.scan import gru_pointwise, lstm_pointwise, scan, stack_layers
from mftrnn.schema import CellKind, ModelConfig

CPU = os.environ.get("PROBE_CPU") == "1"
T, B, N_IN, H, CLASSES = (12, 8, 28, 16, 10) if CPU else (1028, 128, 28, 256, 10)
DEV = torch.device("cpu" if CPU else "cuda")
PACKS = [int(a) for a in sys.argv[1:]] or [1, 4, 8, 16]
TIMED = 3 if CPU else 20


class ScanPack(nn.Module):
    """K RNNClassifier runs as stacked weights: (K, G·H, n_in), (K, G·H, H), biases, heads (K, C, H)."""

    def __init__(self, cell: str, models: list[RNNClassifier], pointwise=None) -> None:
        super().__init__()
        self.cell, self.pointwise = cell, pointwise
        self.weights = nn.ParameterList([nn.Parameter(w) for w in stack_layers([m.rnn for m in models])])
        self.head_w = nn.Parameter(torch.stack([m.head.weight.detach() for m in models]))
        self.head_b = nn.Parameter(torch.stack([m.head.bias.detach() for m in models]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x (K, T, B, n_in) -> logits (K, B, C)
        h = scan(self.cell, x, tuple(self.weights), self.pointwise)
        return torch.baddbmm(self.head_b.unsqueeze(1), h, self.head_w.transpose(1, 2))


def models(cell: str, k: int) -> list[RNNClassifier]:
    torch.manual_seed(0)
    return [RNNClassifier(CellKind(cell), N_IN, ModelConfig(hidden=H)) for _ in range(k)]


def timed(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int, graph: bool) -> float:
    """steps/s of a whole training step (forward, loss, backward, Adam) of `model` on x, y."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=graph)

    def step() -> None:
        logits = model(x)
        F.cross_entropy(logits.reshape(k * B, -1), y.reshape(-1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # the graph keeps the same gradient buffers

    if not graph:
        return steps_per_s(step, TIMED, warmup=3, device=DEV)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    return steps_per_s(g.replay, TIMED, warmup=2)


def fused(cell: str):
    """The cell's pointwise step compiled by torch.compile (one fused kernel forward, one backward)."""
    return torch.compile(lstm_pointwise if cell == "lstm" else gru_pointwise, dynamic=False, fullgraph=True)


def agreement(cell: str, pointwise=None) -> float:
    """max |h_T(scan) − h_T(cuDNN)| over a batch, one run, T = 1028, the same weights."""
    m = models(cell, 1)[0].to(DEV)
    x = torch.rand(T, B, N_IN, device=DEV)
    with torch.no_grad():
        _, state = m.rnn(x)
        ref = (state[0] if cell == "lstm" else state)[0]
        got = scan(cell, x.unsqueeze(0), stack_layers([m.rnn]), pointwise)[0]
    return float((got - ref).abs().max())


def main() -> None:
    torch.backends.cudnn.deterministic = False
    torch.use_deterministic_algorithms(False)
    torch.backends.cuda.matmul.allow_tf32 = True  # what cuDNN's RNNs use by default (allow_tf32)
    torch.backends.cudnn.allow_tf32 = True
    name = "CPU rehearsal" if CPU else torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}, {name}; "
          f"T = {T}, batch {B}, hidden {H}", flush=True)
    for cell in ("lstm", "gru"):
        print(f"{cell}: max |h_T scan - h_T cuDNN| = {agreement(cell):.2e}", flush=True)
        try:
            pw = fused(cell)
            print(f"{cell}: compiled pointwise, max |h_T scan - h_T cuDNN| = {agreement(cell, pw):.2e}", flush=True)
        except Exception as exc:  # noqa: BLE001
            pw = None
            print(f"{cell}: torch.compile failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        y1 = torch.randint(0, CLASSES, (1, B), device=DEV)
        alone = timed(models(cell, 1)[0].to(DEV), torch.rand(T, B, N_IN, device=DEV),
                      y1, 1, graph=False)
        print(f"{cell} alone (cuDNN, eager): {alone:.2f} steps/s", flush=True)
        for k in PACKS:
            y = torch.randint(0, CLASSES, (k, B), device=DEV)
            row = []
            try:
                blk = timed(PackedRNN(models(cell, k)).to(DEV), torch.rand(T, B, N_IN * k, device=DEV),
                            y, k, graph=False)
                row.append(f"block-diagonal {blk:.2f} ({k * blk / alone:.2f}x)")
                xs = torch.rand(k, T, B, N_IN, device=DEV)
                eager = timed(ScanPack(cell, models(cell, k)).to(DEV), xs, y, k, graph=False)
                row.append(f"scan eager {eager:.2f} ({k * eager / alone:.2f}x)")
                if not CPU:
                    graphed = timed(ScanPack(cell, models(cell, k)).to(DEV), xs, y, k, graph=True)
                    row.append(f"scan graph {graphed:.2f} ({k * graphed / alone:.2f}x)")
                    if pw is not None:
                        fast = timed(ScanPack(cell, models(cell, k), pw).to(DEV), xs, y, k, graph=True)
                        row.append(f"scan fused+graph {fast:.2f} ({k * fast / alone:.2f}x)")
            except Exception as exc:  # noqa: BLE001 - the probe reports what stopped it and goes on
                row.append(f"stopped: {type(exc).__name__}: {str(exc)[:200]}")
                traceback.print_exc()
            peak = 0.0 if CPU else torch.cuda.max_memory_allocated() / 2**30
            print(f"{cell} K={k}: " + "; ".join(row) + f"  [{peak:.1f} GiB peak]", flush=True)
            if not CPU:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
