"""Block-diagonal packing: K runs trained as one module end exactly as each trained alone (CPU, float64)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import compose_train
from mftrnn.inits import TaskShape, initialize
from mftrnn.models import RNNClassifier
from mftrnn.packed import PackedAdam, PackedRNN, clip_per_run, pack_inputs
from mftrnn.schema import CellKind, ModelConfig, to_objects

T, B, N_IN, H = 12, 8, 5, 6


def model(cell: str, init: str, seed: int, layers: int) -> RNNClassifier:
    conf = to_objects(compose_train([f"cell={cell}", f"init={init}"]))
    torch.manual_seed(seed)
    m = RNNClassifier(CellKind(cell), N_IN, ModelConfig(hidden=H, layers=layers)).double()
    initialize(m, conf.init, TaskShape(seq_len=T, content_steps=4, R_op=0.0))
    return m


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_a_pack_trains_each_run_as_if_alone(cell, layers):
    inits, seeds, lrs, clips = ["standard", "chrono", "critical"], [0, 1, 2], [1e-3, 3e-3, 1e-2], [1.0, 0.05, 10.0]
    alone = [model(cell, i, s, layers) for i, s in zip(inits, seeds)]
    packed = PackedRNN([model(cell, i, s, layers) for i, s in zip(inits, seeds)]).double()
    for r, m in enumerate(alone):  # packing then unpacking is the identity
        assert all(torch.equal(v, m.state_dict()[k]) for k, v in packed.unpack(r).items())
    opts = [torch.optim.Adam(m.parameters(), lr=lr) for m, lr in zip(alone, lrs)]
    popt = PackedAdam(packed, lrs)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        xs = [torch.randn(T, B, N_IN, generator=gen, dtype=torch.float64) for _ in alone]  # each run its own batch
        ys = [torch.randint(0, 10, (B,), generator=gen) for _ in alone]
        for m, opt, x, y, clip in zip(alone, opts, xs, ys, clips):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), clip)
            opt.step()
        popt.zero_grad()
        logits = packed(pack_inputs(xs))  # (K, B, 10)
        sum(F.cross_entropy(logits[r], y) for r, y in enumerate(ys)).backward()
        clip_per_run(packed, clips)
        popt.step()
    for r, m in enumerate(alone):
        got = packed.unpack(r)
        for key, want in m.state_dict().items():
            assert torch.allclose(got[key], want, rtol=0, atol=1e-10), (r, key)
    for name in packed.rnn_names:  # off the blocks nothing moved
        assert torch.all(getattr(packed.rnn, name)[~getattr(packed, f"mask_{name}")] == 0)


def test_packing_refuses_different_shapes():
    with pytest.raises(ValueError, match="share"):
        PackedRNN([model("lstm", "standard", 0, 1), model("lstm", "standard", 0, 2)])
