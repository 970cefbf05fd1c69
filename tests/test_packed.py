"""Packing, both layouts (block-diagonal cuDNN module, batched scan): K runs trained as one module end
exactly as each trained alone (CPU, float64)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import compose_train
from mftrnn.inits import TaskShape, initialize
from mftrnn.cells import CANDIDATE
from mftrnn.models import GATES, RNNClassifier, cap_candidate_norm
from mftrnn.packed import LAYOUTS, PackedAdam, PackedRNN, cap_candidate_per_run, clip_per_run, runs_that_fit
from mftrnn.schema import CellKind, ModelConfig, to_objects

T, B, N_IN, H = 12, 8, 5, 6


def model(cell: str, init: str, seed: int, layers: int) -> RNNClassifier:
    given = ["init.drive.gates=10"] if init == "critical" else []  # no task inputs here to choose it from
    conf = to_objects(compose_train([f"cell={cell}", f"init={init}", *given]))
    torch.manual_seed(seed)
    m = RNNClassifier(CellKind(cell), N_IN, ModelConfig(hidden=H, layers=layers)).double()
    initialize(m, conf.init, TaskShape(seq_len=T, content_steps=4, R_op=0.0))
    return m


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_a_pack_trains_each_run_as_if_alone(layout, cell, layers):
    inits, seeds, lrs, clips = ["standard", "chrono", "critical"], [0, 1, 2], [1e-3, 3e-3, 1e-2], [1.0, 0.05, 10.0]
    alone = [model(cell, i, s, layers) for i, s in zip(inits, seeds)]
    packed = LAYOUTS[layout]([model(cell, i, s, layers) for i, s in zip(inits, seeds)]).double()
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
        logits = packed(packed.pack_inputs(xs))  # (K, B, 10)
        sum(F.cross_entropy(logits[r], y) for r, y in enumerate(ys)).backward()
        clip_per_run(packed, clips)
        popt.step()
    for r, m in enumerate(alone):
        got = packed.unpack(r)
        for key, want in m.state_dict().items():
            assert torch.allclose(got[key], want, rtol=0, atol=1e-10), (r, key)
    if isinstance(packed, PackedRNN):
        for name in packed.rnn_names:  # off the blocks nothing moved
            assert torch.all(getattr(packed.rnn, name)[~getattr(packed, f"mask_{name}")] == 0)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_packing_refuses_different_shapes(layout):
    with pytest.raises(ValueError, match="share"):
        LAYOUTS[layout]([model("lstm", "standard", 0, 1), model("lstm", "standard", 0, 2)])


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_candidate_norm_cap_per_run_equals_the_cap_of_a_run_alone(layout, cell):
    """optim.candidate_norm_cap: each run's candidate block (every layer) is bounded by its own cap, as
    `cap_candidate_norm` bounds a run alone; a run without a cap, or frozen, is left as it is."""
    models = [model(cell, "standard", s, 2) for s in range(3)]
    with torch.no_grad():
        for m in models:
            for p in m.rnn.parameters():
                p.mul_(5.0)  # candidate blocks well above every cap below
    packed = LAYOUTS[layout]([model(cell, "standard", s, 2) for s in range(3)]).double()
    for r, m in enumerate(models):
        packed.load_run(r, m.state_dict())
    caps = [0.5, None, 0.8]
    frozen = torch.tensor([False, False, True])
    cap_candidate_per_run(packed, torch.tensor([c if c is not None else math.inf for c in caps], dtype=torch.float64),
                          frozen=frozen)
    j = GATES[CellKind(cell)].index(CANDIDATE[cell])
    for r, (m, cap) in enumerate(zip(models, caps)):
        before = {k: v.clone() for k, v in m.state_dict().items()}
        if cap is not None and not frozen[r]:
            cap_candidate_norm(m.rnn, cap)
        got = packed.unpack(r)
        assert all(torch.allclose(got[k], v, rtol=1e-10, atol=1e-12) for k, v in m.state_dict().items()), r
        for layer in range(2):
            key = f"rnn.weight_hh_l{layer}"
            norm = torch.linalg.matrix_norm(got[key][j * H:(j + 1) * H], ord=2).item()
            if cap is not None and not frozen[r]:
                assert norm == pytest.approx(cap, rel=1e-9)
                other = [g for g in range(len(GATES[CellKind(cell)])) if g != j][0]  # other gates untouched
                assert torch.equal(got[key][other * H:(other + 1) * H], before[key][other * H:(other + 1) * H])
            else:
                assert torch.equal(got[key], before[key]) and norm > 1.0


def test_runs_that_fit_follow_the_memory_each_run_needs():
    gib = 2**30
    # a scan run at T = 1028 (batch 128, hidden 256, one layer) needs about 1.5 GiB: 19 in three quarters of 40
    assert runs_that_fit(1028, 128, 256, 1, 40 * gib) == 19
    assert runs_that_fit(5028, 128, 256, 1, 139 * gib) == 14   # an empty H200 at T = 5028
    assert runs_that_fit(5028, 128, 256, 2, 139 * gib) == 7    # twice the layers, half the runs
    assert runs_that_fit(78_400, 128, 256, 1, 139 * gib) == 1  # never fewer than one
