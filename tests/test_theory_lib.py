"""The theory as a library: the config adapter for every init (checked against the modules the inits
really build), the bias laws, the per-unit quadrature against the sampled population, batching,
and the separation from the trainer."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from mftrnn.cells import GATES
from mftrnn.inits import initialize, layer_params, gate_block
from mftrnn.models import RNNClassifier
from mftrnn.schema import (CellKind, ChronoInitConfig, GateHP, GruGates, InitConfig, InitScheme, LstmGates,
                           MeanFieldInitConfig, ModelConfig, Recurrent)
from mftrnn.theory import closed, population
from mftrnn.theory.hyper import ChronoLaw, Gate, Hyper, UniformLaw, hyper_from_config, unit_rule
from mftrnn.theory.stationary import choose_method, stationary

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

INITS = {
    "pytorch": InitConfig(scheme=InitScheme.pytorch),
    "standard": InitConfig(scheme=InitScheme.standard),
    "chrono": ChronoInitConfig(),
}


def meanfield(cell: str) -> MeanFieldInitConfig:
    g = {k: GateHP(mu=0.5 * j - 0.5, rho=0.1 * j, sigma=0.5 + 0.25 * j, nu=1.0 - 0.2 * j)
         for j, k in enumerate(GATES[cell])}
    return MeanFieldInitConfig(recurrent=Recurrent.orthogonal, gates=(LstmGates if cell == "lstm" else GruGates)(**g))


def test_importing_the_theory_does_not_load_the_trainer():
    code = ("import sys, mftrnn.theory.app, mftrnn.theory.app_sim, mftrnn.theory.grid, mftrnn.theory.simulate, "
            "mftrnn.theory.stationary, mftrnn.theory.trajectories, mftrnn.theory.tied, mftrnn.theory.spectrum; "
            "bad = [m for m in ('mftrnn.train', 'mftrnn.tracking', 'mftrnn.checkpoint') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# ----------------------------------------------------------------------------- the adapter
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("scheme", ["pytorch", "standard", "chrono", "meanfield"])
def test_adapter_describes_what_the_init_builds(cell, scheme):
    """Each init's mean-field description (eq. (T30)) against the weights mftrnn.inits writes into a
    real module of hidden 256 with 28 inputs (padded MNIST rows), T = 1028: per gate, the recurrent
    and input entries' variance (sigma^2 / H, nu^2 / n_in), orthogonality, and the effective bias
    law's mean and spread. 256^2 entries: the variances are exact to ~1 %, the 256 biases' mean
    and std to a few 1/sqrt(256)."""
    hidden, n_in, T = 256, 28, 1028
    init = meanfield(cell) if scheme == "meanfield" else INITS[scheme]
    hp = hyper_from_config(CellKind(cell), init, hidden, n_in, T)
    torch.manual_seed(0)
    model = RNNClassifier(CellKind(cell), n_in, ModelConfig(hidden=hidden)).double()
    initialize(model, init, T)
    p = layer_params(model.rnn, 0)
    gates = GATES[cell]
    for k in gates:
        g = hp.gates[k]
        u = gate_block(p["weight_hh"], gates, k)
        w = gate_block(p["weight_ih"], gates, k)
        assert u.var().item() * hidden == pytest.approx(float(g.sigma) ** 2, rel=0.03), (k, "sigma")
        assert w.var().item() * n_in == pytest.approx(float(g.nu) ** 2, rel=0.12), (k, "nu")
        if hp.orthogonal:
            eye = torch.eye(hidden, dtype=u.dtype)
            torch.testing.assert_close(u @ u.T, float(g.sigma) ** 2 * eye, atol=1e-8, rtol=0)
        b = gate_block(p["bias_ih"], gates, k) + (0 if k == "n" else gate_block(p["bias_hh"], gates, k))
        mean, std = hp.bias_moments()[k]
        assert b.mean().item() == pytest.approx(float(mean), abs=0.2 * max(float(std), 0.05)), (k, "bias mean")
        assert b.std().item() == pytest.approx(float(std), rel=0.15, abs=1e-12), (k, "bias std")
    if scheme == "chrono" and cell == "lstm":  # one law for both: b_i = -b_f, unit by unit
        torch.testing.assert_close(gate_block(p["bias_ih"], gates, "i"), -gate_block(p["bias_ih"], gates, "f"))


def test_adapter_values():
    hp = hyper_from_config(CellKind.lstm, INITS["pytorch"], 256, 28, 100)
    assert float(hp.gates["g"].sigma) ** 2 == pytest.approx(1 / 3) and not hp.orthogonal
    assert float(hp.gates["g"].nu) ** 2 == pytest.approx(28 / 768)
    assert hp.bias_moments()["f"][1] == pytest.approx(math.sqrt(2 / 768))  # two uniforms of variance 1/(3H)
    hp = hyper_from_config(CellKind.lstm, INITS["standard"], 256, 28, 100)
    assert hp.orthogonal and float(hp.gates["f"].mu) == 1 and float(hp.gates["i"].mu) == 0
    assert float(hp.gates["g"].nu) ** 2 == pytest.approx(2 * 28 / (28 + 4 * 256))
    hp = hyper_from_config(CellKind.gru, INITS["chrono"], 256, 28, 1028, "reset_before")
    assert hp.cell == "gru_reset_before" and hp.laws[0].t_max == 1028 and hp.law_gates == {"z"}
    assert hyper_from_config(CellKind.gru, ChronoInitConfig(t_max=50), 256, 28, 1028).laws[0].t_max == 50
    with pytest.raises(ValueError, match="critical"):
        hyper_from_config(CellKind.gru, InitConfig(scheme=InitScheme.critical), 256, 28, 100)


# ----------------------------------------------------------------------------- bias laws and the rule
@pytest.mark.parametrize("law", [ChronoLaw("f", 1000.0, ("i",)), UniformLaw("z", 1 / 16), UniformLaw("n", 1 / 16, 1)])
def test_a_law_samples_what_its_rule_integrates(law):
    gen = torch.Generator().manual_seed(0)
    draws = law.sample(200_000, gen, "cpu")
    vals, w = law.rule()
    assert w.sum() == pytest.approx(1.0)
    for k, v in draws.items():
        for power in (1, 2, 3):
            exact = (vals[k] ** power) @ w
            scale = float((v.abs() ** power).mean())
            assert float((v ** power).mean()) == pytest.approx(exact, abs=0.01 * scale), (k, power)
    if isinstance(law, ChronoLaw):  # b_keep = log u, u ~ U[1, T - 1]; the coupled gate is its negative
        assert torch.equal(draws["i"], -draws["f"])
        assert float(draws["f"].min()) >= 0 and float(draws["f"].max()) <= math.log(999) + 1e-9


def test_unit_rule():
    plain = Hyper("gru", {k: Gate() for k in GATES["gru"]})
    hpn, w = unit_rule(plain)
    assert w.tolist() == [1.0] and np.shape(hpn.gates["z"].mu) == (1,)
    two = plain.with_gate("z", mu=2.0, rho=1.0).with_gate("r", rho=0.5)
    hpn, w = unit_rule(two)
    assert w.size == 64 and w.sum() == pytest.approx(1)  # 8 x 8 Gauss-Hermite nodes
    assert (np.asarray(hpn.gates["z"].mu) @ w) == pytest.approx(2.0)
    assert (np.asarray(hpn.gates["z"].mu) ** 2 @ w) == pytest.approx(5.0)  # mu^2 + rho^2
    grid = plain.with_gate("z", rho=np.array([[0.0], [1.0]]))
    hpn, w = unit_rule(grid)
    assert np.shape(hpn.gates["z"].mu) == (2, 1, 16)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chrono_law_closed_forms_follow_the_population(cell):
    """Chrono's log-uniform keep-gate law (T_max = 200) through the per-unit quadrature against the
    sampled population (P = 60,000), zero input as in padding plus some drive (R = 0.5)."""
    hp = hyper_from_config(CellKind(cell), ChronoInitConfig(t_max=200), 64, 28, 200)
    hp = Hyper(hp.cell, {k: Gate(mu=g.mu, sigma=1.0, nu=1.0) for k, g in hp.gates.items()}, False, hp.laws)
    fp = closed.fixed_point(hp, 0.5)
    pfp = population.fixed_point(hp, 0.5, population=60_000, burn_in=300, average=40)
    assert pfp["q_h"] == pytest.approx(float(fp.q_h), rel=0.025)
    lam = population.tangent_growth(hp, 0.5, population=60_000, burn_in=300, steps=closed.WINDOW)
    assert lam == pytest.approx(float(closed.slope_c(hp, fp, 0.5)), rel=0.01)


# ----------------------------------------------------------------------------- the solver's call
@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_before"])
def test_a_batch_equals_its_points(cell):
    """One vectorized call over 6 hyperparameter points equals 6 scalar calls (the solver's loop)."""
    keep = "f" if cell == "lstm" else "z"
    mus = np.linspace(0.0, 5.0, 6)
    base = Hyper(cell, {k: Gate(sigma=0.8, nu=0.7) for k in GATES[cell]})
    batch = stationary(base.with_gate(keep, mu=mus), 0.3)
    for j, mu in enumerate(mus):
        one = stationary(base.with_gate(keep, mu=float(mu)), 0.3)
        for key in ("q_h", "m1", "lambda_c", "lambda_q"):
            assert getattr(batch, key)[j] == pytest.approx(float(getattr(one, key)), rel=1e-9, abs=1e-14), key
    assert np.all(np.diff(batch.xi_c) > 0)  # a slower keep gate remembers longer


def test_method_choice():
    assert choose_method("auto", "gru", trajectory=True) == "closed" and choose_method("auto", "lstm") == "closed"
    assert choose_method("auto", "lstm", trajectory=True) == "population"  # the closure's 1 - C/Q: §2.6
    assert choose_method("closed", "lstm", trajectory=True) == "closed"
    assert choose_method("population") == "population"
    with pytest.raises(ValueError, match="method"):
        choose_method("exact")
