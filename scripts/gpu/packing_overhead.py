"""Where a packed training step spends its time beyond a run alone's (docs/performance.md, Packed sweeps).

Times one optimizer step at T = 1028 (hidden 256, batch 128, synthetic inputs) for a run alone
(nn.LSTM/GRU, Linear head, clip_grad_norm_, torch.optim.Adam) and for a pack of K = 1 with each of the
packed step's parts switched on in turn, deterministic on and off; then a profile of the full packed step.

    source scripts/device_setup.sh && python3 scripts/gpu/packing_overhead.py > "$OUT/overhead.txt"
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from mftrnn.bench import steps_per_s
from mftrnn.models import RNNClassifier
from mftrnn.packed import PackedAdam, PackedRNN, clip_per_run, guard_params
from mftrnn.schema import CellKind, ModelConfig
from mftrnn.seeding import set_determinism

T, B, H, N_IN = 1028, 128, 256, 28


def timed(step) -> float:
    return steps_per_s(step, 40, warmup=5)


def main() -> None:
    for cell in ("lstm", "gru"):
        for det in (True, False):
            set_determinism(det)
            x = torch.rand(T, B, N_IN, device="cuda")
            y = torch.randint(0, 10, (B,), device="cuda")
            m = RNNClassifier(CellKind(cell), N_IN, ModelConfig(hidden=H)).cuda()
            opt = torch.optim.Adam(m.parameters(), 1e-3)

            def alone():
                loss = F.cross_entropy(m(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                opt.step()

            pk = PackedRNN([RNNClassifier(CellKind(cell), N_IN, ModelConfig(hidden=H))]).cuda()
            popt = PackedAdam(pk, [1e-3])
            topt = torch.optim.Adam(pk.parameters(), 1e-3)
            clips = torch.ones(1, dtype=torch.float64, device="cuda")
            ok = torch.ones(1, dtype=torch.bool, device="cuda")

            def packed(guard=True, clip=True, mine=True, finite=True):
                def step():
                    logits = pk(x)  # (1, B, C)
                    if finite:
                        fin = torch.isfinite(logits).flatten(1).all(1)
                        logits = torch.where(fin.view(1, 1, 1), logits, 0.0)
                    loss = F.cross_entropy(logits.reshape(B, -1), y, reduction="none").view(1, B).mean(1).sum()
                    (popt if mine else topt).zero_grad(set_to_none=True)
                    loss.backward()
                    if clip:
                        clip_per_run(pk, clips, ok=ok)
                    (popt if mine else topt).step()
                    if guard:
                        guard_params(pk)
                return step

            rows = {"alone": timed(alone), "packed K=1 (all)": timed(packed()),
                    "packed, no guard": timed(packed(guard=False)), "packed, no clip": timed(packed(clip=False)),
                    "packed, torch Adam": timed(packed(mine=False)),
                    "packed, bare (torch Adam, no clip/guard/finite)": timed(packed(False, False, False, False))}
            print(f"{cell} deterministic={det}: " + "; ".join(f"{k} {v:.1f}/s" for k, v in rows.items()), flush=True)
            if det:
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                    for _ in range(5):
                        packed()()
                    torch.cuda.synchronize()
                print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12), flush=True)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12), flush=True)


if __name__ == "__main__":
    main()
