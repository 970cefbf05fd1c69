"""Each initialization writes the statistics it promises, gate by gate."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import compose_train
from mftrnn.errors import ConfigError
from mftrnn.inits import TaskShape, effective_gate_biases, gate_block, initialize, layer_params
from mftrnn.models import GATES, RNNClassifier
from mftrnn.schema import CellKind, ModelConfig, to_objects

H = 64


def build(cell: str, init: str, overrides=(), hidden: int = H, layers: int = 2, input_size: int = 28, seq_len: int = 100):
    conf = to_objects(compose_train([f"cell={cell}", f"init={init}", *overrides]))
    torch.manual_seed(0)
    model = RNNClassifier(CellKind(cell), input_size, ModelConfig(hidden=hidden, layers=layers))
    initialize(model, conf.init, seq_len)
    return model, conf


def blocks(model, name, layer=0):
    p = layer_params(model.rnn, layer)[name]
    return {g: gate_block(p, GATES[model.cell], g) for g in GATES[model.cell]}


def assert_orthogonal(w: torch.Tensor, gain: float = 1.0):
    eye = torch.eye(w.shape[0])
    assert torch.allclose(w @ w.T, gain**2 * eye, atol=1e-5), "block is not orthogonal"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_standard(cell):
    model, _ = build(cell, "standard")
    gates = GATES[CellKind(cell)]
    for layer in range(2):
        p = layer_params(model.rnn, layer)
        for g, w in blocks(model, "weight_hh", layer).items():
            assert_orthogonal(w)  # per gate, not over the stacked kernel
        n_in = p["weight_ih"].shape[1]
        bound = math.sqrt(6 / (n_in + len(gates) * H))  # Glorot over the stacked (n_in, G*H) kernel
        assert p["weight_ih"].abs().max() <= bound + 1e-7
        assert p["weight_ih"].abs().max() > 0.9 * bound
        total = p["bias_ih"] + p["bias_hh"]
        for g in gates:
            expected = 1.0 if g == "f" else 0.0  # LSTM forget bias +1 as the sum of the two vectors
            assert torch.all(gate_block(total, gates, g) == expected)
    assert model.head.bias.abs().max() == 0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_pytorch_default_is_uniform_in_one_over_sqrt_h(cell):
    model, _ = build(cell, "pytorch")
    bound = 1 / math.sqrt(H)
    for name, p in model.rnn.named_parameters():
        assert p.abs().max() <= bound and p.abs().max() > 0.95 * bound, name
        assert abs(p.var().item() - bound**2 / 3) < 0.1 * bound**2 / 3, name


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chrono(cell):
    t_max = 500
    model, _ = build(cell, "chrono", [f"init.t_max={t_max}"], hidden=1024, layers=1)
    b = blocks(model, "bias_ih")
    assert torch.all(layer_params(model.rnn, 0)["bias_hh"] == 0)  # one vector written, no doubling
    keep = b["f"] if cell == "lstm" else b["z"]
    assert keep.min() >= 0 and keep.max() <= math.log(t_max - 1) + 1e-6
    # exp(b) ~ U[1, T_max - 1]: its mean is T_max / 2 within a few standard errors
    mean, se = t_max / 2, (t_max - 2) / math.sqrt(12 * 1024)
    assert abs(keep.exp().mean().item() - mean) < 4 * se
    if cell == "lstm":
        assert torch.equal(b["i"], -b["f"])
        assert torch.all(b["g"] == 0) and torch.all(b["o"] == 0)
    else:
        assert torch.all(b["r"] == 0) and torch.all(b["n"] == 0)


def test_chrono_t_max_defaults_to_the_sequence_length():
    model, _ = build("lstm", "chrono", hidden=2048, layers=1, seq_len=50)
    assert blocks(model, "bias_ih")["f"].max() <= math.log(49) + 1e-6
    assert blocks(model, "bias_ih")["f"].max() > math.log(40)


@pytest.mark.parametrize("cell,recurrent", [("lstm", "gaussian"), ("lstm", "orthogonal"),
                                            ("gru", "gaussian"), ("gru", "orthogonal")])
def test_meanfield_sample_moments_match_the_hyperparameters(cell, recurrent):
    hidden, n_in = 512, 28
    names = GATES[CellKind(cell)]
    hps = {g: dict(mu=0.5 * k - 1, rho=0.2 * k, sigma=0.5 + 0.4 * k, nu=1.5 - 0.3 * k) for k, g in enumerate(names)}
    overrides = [f"init.recurrent={recurrent}"] + [f"init.gates.{g}.{k}={v}" for g, hp in hps.items() for k, v in hp.items()]
    model, _ = build(cell, "meanfield", overrides, hidden=hidden, layers=2, input_size=n_in)
    for layer, fan_in in ((0, n_in), (1, hidden)):
        w_hh, w_ih, b_ih = (blocks(model, n, layer) for n in ("weight_hh", "weight_ih", "bias_ih"))
        assert torch.all(layer_params(model.rnn, layer)["bias_hh"] == 0)
        for g, hp in hps.items():
            n_b = hidden
            # bias mean within 5 standard errors (sd rho/sqrt(H)); bias std within 15%
            assert abs(b_ih[g].mean().item() - hp["mu"]) <= 5 * hp["rho"] / math.sqrt(n_b) + 1e-6
            if hp["rho"] > 0:
                assert b_ih[g].std().item() == pytest.approx(hp["rho"], rel=0.15)
            else:
                assert torch.all(b_ih[g] == hp["mu"])
            # input entries N(0, nu^2 / n_in): variance within 5% (>= 14k entries)
            assert w_ih[g].var().item() * fan_in == pytest.approx(hp["nu"] ** 2, rel=0.05)
            if recurrent == "orthogonal":
                assert_orthogonal(w_hh[g] / hp["sigma"])
            else:
                assert w_hh[g].var().item() * hidden == pytest.approx(hp["sigma"] ** 2, rel=0.02)
                assert abs(w_hh[g].mean().item()) < 5 * hp["sigma"] / hidden


def test_critical_needs_the_task_inputs():
    with pytest.raises(ConfigError, match="input statistics"):
        build("lstm", "critical")  # a bare length: no R_op


def test_effective_biases_report_sums():
    model, _ = build("lstm", "standard", layers=1)
    eff = effective_gate_biases(model)
    assert eff["l0.f"] == {"mean": 1.0, "std": 0.0} and eff["l0.i"]["mean"] == 0.0


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("init", ["pytorch", "standard", "chrono", "meanfield", "critical"])
def test_the_drive_writes_its_input_scales_on_top_of_every_init(cell, init):
    """init.drive: every gate's input weights but the candidate's N(0, gates^2 / n_in), the candidate's
    N(0, candidate^2 / n_in), in every layer (sample statistics at hidden 256); the init's recurrent weights
    and biases are the ones it writes without a drive (same seed), and the record names what was written."""
    drive = ["init.drive.gates=5", "init.drive.candidate=2"]
    shape = TaskShape(100, 28, 0.0) if init == "critical" else 100  # critical: zero padding after 28 steps
    driven, conf = build(cell, init, drive, hidden=256, seq_len=shape)
    plain, _ = build(cell, init, ["init.drive.gates=0.1"] if init == "critical" else [], hidden=256, seq_len=shape)
    cand = "g" if cell == "lstm" else "n"
    for layer in range(2):
        w = blocks(driven, "weight_ih", layer)
        n_in = layer_params(driven.rnn, layer)["weight_ih"].shape[1]
        for gate, block in w.items():
            want = 2.0 if gate == cand else 5.0
            assert block.mean().item() == pytest.approx(0, abs=4 * want / math.sqrt(n_in * block.numel()))
            assert block.var().item() * n_in == pytest.approx(want ** 2, rel=0.08), (gate, layer)
        for name in ("weight_hh", "bias_ih", "bias_hh"):
            a, b = layer_params(driven.rnn, layer)[name], layer_params(plain.rnn, layer)[name]
            assert torch.equal(a, b), (name, layer)
    torch.manual_seed(0)
    model = RNNClassifier(CellKind(cell), 28, ModelConfig(hidden=256, layers=2))
    record = initialize(model, conf.init, shape)["drive"]
    assert record["gates"] == 5 and record["candidate"] == 2 and record["source"] == "given"
    assert record["gates_measured"] == pytest.approx(5, rel=0.05) and record["candidate_measured"] == pytest.approx(2, rel=0.05)


def test_an_init_without_a_drive_records_its_own_scales():
    model = RNNClassifier(CellKind.lstm, 28, ModelConfig(hidden=256))
    conf = to_objects(compose_train(["cell=lstm", "init=chrono"]))
    record = initialize(model, conf.init, 1028)["drive"]
    glorot = math.sqrt(2 * 28 / (28 + 4 * 256))  # the stacked kernel's Glorot scale, times sqrt(n_in)
    assert record["source"] == "own" and record["gates"] is None
    assert record["gates_measured"] == pytest.approx(glorot, rel=0.05)


def test_a_theory_drive_is_init_critical_choice(data_root, tmp_path, monkeypatch):
    """init.drive.theory=true on chrono: the gates' and candidate's scales init=critical chooses for the task
    and cell, written on top of chrono's biases and recurrent weights."""
    from mftrnn.data import load_splits
    from mftrnn.inits import task_shape
    from mftrnn.tasks import build_task

    monkeypatch.setenv("MFTRNN_CACHE", str(tmp_path))
    small = ["task.pad=30", "data.limit=256", "init.drive.pairs=3", "init.drive.population=300"]
    chrono = to_objects(compose_train(["cell=gru", "init=chrono", "init.drive.theory=true", *small]))
    critical = to_objects(compose_train(["cell=gru", "init=critical", *small]))
    task = build_task(chrono.task)
    splits = load_splits(task.dataset, chrono.data)
    task.fit(splits)
    records = []
    for conf in (chrono, critical):
        torch.manual_seed(0)
        model = RNNClassifier(CellKind.gru, 28, ModelConfig(hidden=256))
        records.append(initialize(model, conf.init, task_shape(task, splits, conf.init))["drive"])
        if conf is chrono:
            z = gate_block(layer_params(model.rnn, 0)["bias_ih"], GATES[CellKind.gru], "z")
            assert z.std() > 0.5  # chrono's spread of keep biases is kept
    assert records[0]["gates"] == records[1]["gates"] > 1 and records[0]["source"].startswith("theory")
    assert records[0]["gates_measured"] == pytest.approx(records[0]["gates"], rel=0.05)
