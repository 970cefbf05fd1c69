"""Can a whole packed training step (cuDNN LSTM/GRU forward and backward, Adam) be captured in a CUDA
graph, and how much faster does it replay than the eager step? (docs/performance.md, Packed sweeps)

Synthetic inputs at T = 1028, hidden 256, batch 128; torch.optim.Adam(capturable=True) for the graph,
the same Adam for the eager step; deterministic algorithms off for both (a probe, not the runner).

    source scripts/device_setup.sh && python3 scripts/gpu/cudagraph_probe.py > "$OUT/cudagraph.txt"
"""
from __future__ import annotations

import traceback

import torch
import torch.nn.functional as F

from mftrnn.bench import steps_per_s
from mftrnn.models import RNNClassifier
from mftrnn.packed import PackedRNN
from mftrnn.schema import CellKind, ModelConfig

T, B, N_IN, H = 1028, 128, 28, 256
PACKS = [int(a) for a in __import__("sys").argv[1:]] or [1, 4]


def build(cell: str, k: int, capturable: bool):
    torch.manual_seed(0)
    model = PackedRNN([RNNClassifier(CellKind(cell), N_IN, ModelConfig(hidden=H)) for _ in range(k)]).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=capturable)
    x = torch.rand(T, B, N_IN * k, device="cuda")
    y = torch.randint(0, 10, (k, B), device="cuda")
    return model, opt, x, y


def one_step(model, opt, x, y, k):
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(k * B, -1), y.reshape(-1))
    loss.backward()
    opt.step()
    return loss


def eager(cell: str, k: int) -> float:
    model, opt, x, y = build(cell, k, capturable=False)

    def step():
        opt.zero_grad(set_to_none=True)
        one_step(model, opt, x, y, k)
    for _ in range(3):
        step()
    return steps_per_s(step, 30)


def graphed(cell: str, k: int) -> float:
    model, opt, x, y = build(cell, k, capturable=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            one_step(model, opt, x, y, k)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        one_step(model, opt, x, y, k)
    return steps_per_s(graph.replay, 30)


def main() -> None:
    torch.backends.cudnn.deterministic = False
    torch.use_deterministic_algorithms(False)
    print(f"torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}", flush=True)
    for cell in ("lstm", "gru"):
        for k in PACKS:
            e = eager(cell, k)
            try:
                g = graphed(cell, k)
                print(f"{cell} K={k}: eager {e:.2f} steps/s, CUDA graph {g:.2f} steps/s ({g / e:.2f}x)", flush=True)
            except Exception as exc:  # noqa: BLE001 - the probe reports whatever stops the capture
                print(f"{cell} K={k}: eager {e:.2f} steps/s, CUDA graph failed: {type(exc).__name__}: {exc}", flush=True)
                traceback.print_exc()
                return


if __name__ == "__main__":
    main()
