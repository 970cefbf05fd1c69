"""Each initialization writes the statistics it promises, gate by gate."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import compose_train
from mftrnn.errors import ConfigError
from mftrnn.inits import effective_gate_biases, gate_block, initialize, layer_params
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
