"""The mean-field theory: closed forms against the population solver, against reference values, and
against simulated untied networks over randomized hyperparameters (docs/theory.md §6)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from mftrnn.cells import GATES
from mftrnn.theory import closed, population
from mftrnn.theory.hyper import Gate, Hyper
from mftrnn.theory.inputs import scenario
from mftrnn.theory.trajectories import two_sequences
from mftrnn.theory.grid import axis_values, compute_grid
from mftrnn.theory.simulate import simulate_trajectory

G = Gate


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def gru_c(cell="gru"):
    return Hyper(cell, {"z": G(mu=0, sigma=.5, nu=.5), "r": G(mu=0, sigma=2, nu=.5), "n": G(mu=0, sigma=1.5, nu=.5)})


# ----------------------------------------------------------------------------- reference values
def test_closed_forms_reproduce_the_notes_reference_values():
    """shared/notes/theory.md §11, the rows our closed forms reproduce (docs/theory.md §7)."""
    hp = Hyper("gru_reset_before", {"z": G(mu=2, sigma=.5, nu=.5), "n": G(sigma=2, nu=.5), "r": G(mu=1, sigma=.7, nu=.5)})
    assert float(closed.fixed_point(hp, 1.0).q_h) == pytest.approx(.0158, abs=5e-5)
    fp = closed.fixed_point(gru_c(), 1.0)
    assert float(fp.q_h) == pytest.approx(.0699, abs=5e-5)
    assert float(closed.m1(gru_c(), fp, 1.0)) == pytest.approx(.3862, abs=5e-5)
    lstm = Hyper("lstm", {k: G(mu=1.0 if k == "f" else 0.0) for k in "ifgo"})
    fp = closed.fixed_point(lstm, 1.0)
    assert float(fp.q_h) == pytest.approx(.0507, abs=2e-4)
    assert float(closed.m1(lstm, fp, 1.0)) == pytest.approx(.553, abs=1e-3)


# ----------------------------------------------------------------------------- internal consistency
@pytest.mark.parametrize("cell", ["gru", "gru_reset_before"])
def test_m1_is_the_decay_rate_of_one_minus_c(cell):
    """After the split, (1 - C/Q)(t+1) / (1 - C/Q)(t) -> m_1 (eq. (T15)/(T16)): the closed C map
    and the Jacobian formula are two independent computations of the same number."""
    hp = gru_c(cell).with_gate("z", mu=1.0)
    fp = closed.fixed_point(hp, 1.0)
    tr = closed.trajectory(hp, 60, 10, 1.0)
    with np.errstate(invalid="ignore"):  # t = 0: both states are 0
        omc = 1 - tr["c_h"] / np.sqrt(tr["q_h_a"] * tr["q_h_b"])
    rate = omc[41:51] / omc[40:50]
    assert np.allclose(rate, float(closed.m1(hp, fp, 1.0)), rtol=2e-3)


@pytest.mark.parametrize("cell", ["gru", "gru_reset_before"])
def test_closed_forms_equal_the_population_solver_at_rho_zero(cell):
    """Both are exact for the untied GRU with rho = 0; P = 40,000 units: relative error ~ 1/sqrt(P) ~ 0.5%."""
    hp = gru_c(cell).with_gate("z", mu=1.0)
    fp = closed.fixed_point(hp, 1.0)
    pfp = population.fixed_point(hp, 1.0, population=40_000, burn_in=80, average=40)
    assert pfp["q_h"] == pytest.approx(float(fp.q_h), rel=0.02)
    growth = population.tangent_growth(hp, 1.0, population=40_000, burn_in=80, steps=60)
    assert growth == pytest.approx(float(closed.m1(hp, fp, 1.0)), rel=0.02)


def test_lstm_closure_is_close_to_the_exact_population():
    hp = Hyper("lstm", {k: G(mu=1.0 if k == "f" else 0.0) for k in "ifgo"})
    fp = closed.fixed_point(hp, 1.0)
    pfp = population.fixed_point(hp, 1.0, population=40_000, burn_in=80, average=40)
    assert pfp["q_h"] == pytest.approx(float(fp.q_h), rel=0.03)  # closure error here < 1%
    assert pfp["q_s"] == pytest.approx(float(fp.q_s), rel=0.03)  # (T8) is exact: noise only
    lam = population.tangent_growth(hp, 1.0, population=40_000, burn_in=80, steps=60)
    assert lam == pytest.approx(float(closed.m1(hp, fp, 1.0)), rel=0.03)


@pytest.mark.parametrize("cell", ["gru", pytest.param("gru_reset_before", marks=pytest.mark.slow), "lstm"])
def test_closed_forms_follow_the_population_under_a_bias_spread(cell):
    """rho > 0: the per-unit quadrature (eq. (T31)) is exact for the GRU and closes only the LSTM's
    cell state; the sampled population is exact. P = 60,000: noise ~ 0.5 %. The closure's measured
    error here is below 1 % (docs/theory.md §2.6), so 2.5 % is a failure of the method, not noise."""
    keep = "f" if cell == "lstm" else "z"
    hp = Hyper(cell, {k: G() for k in GATES[cell]}).with_gate(keep, mu=2.0, rho=1.0)
    if cell == "gru_reset_before":
        hp = hp.with_gate("r", rho=1.0)
    fp = closed.fixed_point(hp, 1.0)
    pfp = population.fixed_point(hp, 1.0, population=60_000, burn_in=150, average=40)
    assert pfp["q_h"] == pytest.approx(float(fp.q_h), rel=0.025)
    lam = population.tangent_growth(hp, 1.0, population=60_000, burn_in=150, steps=closed.WINDOW)
    assert lam == pytest.approx(float(closed.slope_c(hp, fp, 1.0)), rel=0.01)
    # the spread slows forgetting beyond the one-step m_1: lambda_C averages over slow units
    assert float(closed.slope_c(hp, fp, 1.0)) > float(closed.m1(hp, fp, 1.0)) + 0.05


# ----------------------------------------------------------------------------- theory vs networks
def _random_cases(cell, n, seed):
    rng = np.random.default_rng(seed)
    gates = GATES[cell]
    keep = "f" if cell == "lstm" else "z"
    for _ in range(n):
        hp = {k: G(mu=float(rng.uniform(-1, 1)), rho=0.0, sigma=float(rng.uniform(0.3, 1.5)),
                   nu=float(rng.uniform(0.3, 1.2))) for k in gates}
        hp[keep].mu = float(rng.uniform(0, 2))  # fast to moderately slow keep gates
        yield Hyper(cell, hp)


@pytest.mark.parametrize("cell,seed", [("gru", 1), pytest.param("gru_reset_before", 2, marks=pytest.mark.slow), ("lstm", 3)])
def test_theory_matches_untied_networks_over_random_hyperparameters(cell, seed):
    """Untied networks of width n = 500, 3 seeds, two random hyperparameter sets per cell.

    Tolerances from the measured spread (docs/theory.md §6): Q_h of one network at one step
    fluctuates by ~ sqrt(2/n) ~ 6% of itself, so the mean over 3 seeds and the last 20 steps is
    compared at 6%. 1 - C/Q just after the split varies by ~ 12% between seeds at this width (the
    two input sequences' finite-n overlap), so its mean over 3 seeds and t = split+1..split+3 is
    compared at 20% (about 3 standard errors)."""
    steps, split = 50, 20
    for hp in _random_cases(cell, 2, seed=seed):
        gates = {k: vars(g) for k, g in hp.gates.items()}
        tr = two_sequences(hp, scenario(steps, split, 1.0))  # theory.method=auto (docs/theory.md §2.5)
        th = {"q_h_a": tr.q_h_a}
        with np.errstate(invalid="ignore", divide="ignore"):
            th_omc = tr.one_minus_c
        sims = [simulate_trajectory(hp, 500, steps, split, 1.0, tied=False, seed=s) for s in range(3)]
        q_sim = np.mean([s.q_h_a for s in sims], axis=0)
        assert q_sim[-20:].mean() == pytest.approx(th["q_h_a"][-20:].mean(), rel=0.06), gates
        window = slice(split + 1, split + 4)
        omc_sim = np.mean([1 - s.c_h[window] / np.sqrt(s.q_h_a[window] * s.q_h_b[window]) for s in sims])
        assert omc_sim == pytest.approx(th_omc[window].mean(), rel=0.20), gates


# ----------------------------------------------------------------------------- grids and the CLI
def test_grid_is_vectorized():
    hp = Hyper("lstm", {k: G() for k in "ifgo"})
    x = axis_values(["init.gates.f.mu", -2, 8, 101], "x", "lstm")
    y = axis_values(["init.gates.f.sigma", 0, 2, 101], "y", "lstm")
    res = compute_grid(hp, 1.0, x, y)  # speed: `mftrnn bench theory` (docs/performance.md)
    assert res["xi_C"].shape == (101, 101)
    # memory grows with the forget bias: xi_C increases along x at fixed sigma_f = 0, up to the
    # edge of chaos (m_1 = 1, xi_C infinite) near mu_f = 6.6 for these hyperparameters
    row = res["xi_C"][0]
    finite = np.isfinite(row)
    assert finite[:80].all() and not finite[-5:].any()
    assert np.all(np.diff(row[finite]) > 0)
    assert np.all(np.diff(res["q_h"][0]) > 0)  # one branch of fixed points, no jumps
    # a point of the grid equals the scalar computation
    single = Hyper("lstm", {**{k: G() for k in "ifgo"}, "f": G(mu=x[1][30], sigma=y[1][50])})
    fp = closed.fixed_point(single, 1.0)
    assert res["m1"][50, 30] == pytest.approx(float(closed.m1(single, fp, 1.0)), rel=1e-6)


def test_a_linked_key_moves_with_its_axis():
    """linked=(("init.gates.i.mu", "x", -xs),): every point is the scalar computation with i.mu = -f.mu
    (the LSTM heat map's coupled slice), and differs from the grid without the link."""
    hp = Hyper("lstm", {k: G() for k in "ifgo"})
    xs, ys = np.array([0.0, 2.0, 4.0]), np.array([0.5, 1.5])
    x, y = ("init.gates.f.mu", xs), ("init.gates.g.sigma", ys)
    res = compute_grid(hp, 1.0, x, y, linked=(("init.gates.i.mu", "x", -xs),))
    free = compute_grid(hp, 1.0, x, y)
    for j, mu in enumerate(xs):
        for i, sigma in enumerate(ys):
            single = Hyper("lstm", {**{k: G() for k in "ifgo"}, "f": G(mu=mu), "i": G(mu=-mu), "g": G(sigma=sigma)})
            fp = closed.fixed_point(single, 1.0)
            assert res["m1"][i, j] == pytest.approx(float(closed.m1(single, fp, 1.0)), rel=1e-6)
    assert not np.allclose(res["m1"][:, 1:], free["m1"][:, 1:])


def test_cli_writes_theory_json_with_grid_and_simulation(tmp_path):
    out = tmp_path / "run"
    res = run_cli("theory", "cell=gru", "init.gates.z.mu=1", "theory.steps=30", "theory.split=10",
                  "theory.spectrum.population=1000", "theory.spectrum.points=40", "theory.spectrum.product_steps=3",
                  "theory.spectrum.product_points=20", "theory.simulate=true",
                  "theory.width=64", "theory.seeds=1", "theory.grid.x=[init.gates.z.mu,-1,4,11]",
                  "theory.grid.y=[init.gates.z.sigma,0,1,6]", "device=cpu", f"hydra.run.dir={out}")
    assert res.returncode == 0, res.stderr
    d = json.loads((out / "theory.json").read_text())
    for path in ("stationary.Q_h", "stationary.xi_Q", "stationary.xi_C", "stationary.m1", "jacobian.m1",
                 "jacobian.m2", "trajectory.t", "trajectory.Q_h_a", "trajectory.C_h", "trajectory.distance",
                 "memory.horizon", "hyperparameters.gates.z.mu", "inputs.R_stationary"):
        node = d
        for part in path.split("."):
            node = node[part]
        assert node is not None, path
    assert len(d["trajectory"]["t"]) == 31 and d["stationary"]["method"] == "closed"
    assert set(d["simulation"]) >= {"tied", "untied"}
    for f in ("grid.npz", "grid_xi_C.png", "trajectories.png", "spectrum.png"):
        assert (out / f).exists(), f
    assert not (out / "grid_horizon.png").exists()  # only with theory.grid.horizon=true
    assert "[" not in out.name


@pytest.mark.parametrize("args,expected", [
    (["init=critical", "theory.gru_form=reset_before", "cell=gru"], "reset_after"),
    (["theory.grid.x=[init.gates.q.mu,0,1,5]", "theory.grid.y=[init.gates.f.mu,0,1,5]"], "not a grid key"),
    (["theory.split=500"], "theory.split"),
    (["theory.input.R=-1"], "theory.input.R"),
])
def test_cli_bad_theory_input_is_one_clear_error(args, expected, tmp_path):
    res = run_cli("theory", *args, f"hydra.run.dir={tmp_path}")
    assert res.returncode != 0 and expected in res.stderr and "Traceback" not in res.stderr
