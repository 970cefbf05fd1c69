"""The theory of the write (docs/theory.md §10.8): its prediction of how well the last state tells two inputs
apart, against simulated networks with explicit tolerances; the drive rule; the solver's choice on toy tasks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mftrnn.theory import tied
from mftrnn.theory.critical import CriticalSpec, choose_drive, midpoint_drive, solve, solve_family
from mftrnn.theory.simulate import tied_module
from mftrnn.theory.write import WriteInputs, pair_statistics, separation


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MFTRNN_CACHE", str(tmp_path / "cache"))


def toy_rows(pairs: int, content: int, relax: int, n_in: int, seed: int, tail: float = 0.0) -> torch.Tensor:
    """(content + relax, 2 pairs, n_in) sequences like MNIST rows: about 30 % blank steps, the others of
    entries |N(0, 1)| with a heavy tail of bright steps; the same padding for both of a pair (zeros, or
    N(0, tail^2) noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(content, 2 * pairs, n_in, generator=g, dtype=torch.float64).abs() * 0.3
    x *= (torch.rand(content, 2 * pairs, 1, generator=g, dtype=torch.float64) > 0.3)  # blank steps
    x *= 1 + 2 * (torch.rand(content, 2 * pairs, 1, generator=g, dtype=torch.float64) > 0.85)  # bright steps
    pad = tail * torch.randn(relax, pairs, n_in, generator=g, dtype=torch.float64)
    return torch.cat([x, pad.repeat_interleave(2, dim=1)])


def network_separation(hp, x: torch.Tensor, width: int, seeds: int) -> tuple[float, float]:
    """1 - C/Q of the last states and Q there, mean over pairs and seeds, of tied nn.LSTM / nn.GRU of `width`
    units initialized as `mftrnn train` does with the Hyper's values (eigen-angle limit included)."""
    omc, q = [], []
    for seed in range(seeds):
        rnn = tied_module(hp, width, x.shape[2], seed, "cpu")
        with torch.no_grad():
            out, _ = rnn(x)
        st = pair_statistics(out[-1])  # (2P, n) -> per pair
        omc.append(float(st["one_minus_c"].mean()))
        q.append(float(st["q"].mean()))
    return float(np.mean(omc)), float(np.mean(q))


@pytest.mark.parametrize("cell,isometry,nu", [("lstm", "gain", 10.0), ("lstm", "gain", 2.0), ("gru", "phase", 10.0),
                                             ("gru", "gain", 10.0)])
def test_separation_matches_tied_networks(cell, isometry, nu, one_thread):
    """Eq. (T38) on toy rows against tied networks of width 1000 (3 seeds) with the critical family's weights:
    1 - C/Q of the last states within 0.05 and their size Q within 15 %. The GRU's phase-limited weights go
    through the self-coupling model of eq. (T39)."""
    content, relax, n_in = 12, 6, 16
    x = toy_rows(pairs=6, content=content, relax=relax, n_in=n_in, seed=1)
    hp, phase = solve_family(CriticalSpec(cell, 300, content, 0.0, gate_nu=nu, isometry=isometry), nu)
    assert (phase < 1) == (isometry == "phase")
    theory = separation(hp, WriteInputs(x, content, 300), population=4000)
    net_omc, net_q = network_separation(hp, x, width=1000, seeds=3)
    assert float(theory["one_minus_c_end"]) == pytest.approx(net_omc, abs=0.05)
    assert float(theory["q"][-1]) == pytest.approx(net_q, rel=0.15)
    assert 0.05 < net_omc < 1  # a case with something to tell apart


def test_self_coupling_is_what_carries_phase_limited_weights(one_thread):
    """Without eq. (T39) the tied population misses the phase-limited GRU's state size by far: the model, not
    the tolerance, makes the test above pass."""
    content, relax, n_in = 12, 6, 16
    x = toy_rows(pairs=6, content=content, relax=relax, n_in=n_in, seed=1)
    hp, _ = solve_family(CriticalSpec("gru", 300, content, 0.0, gate_nu=10.0, isometry="phase"), 10.0)
    _, net_q = network_separation(hp, x, width=1000, seeds=2)
    haar = separation(hp.__class__(**{**hp.__dict__, "phase": math.pi}), WriteInputs(x, content, 300), population=4000)
    assert abs(float(haar["q"][-1]) / net_q - 1) > 0.3
    assert tied.self_coupling(hp) == pytest.approx(math.sin(hp.phase) / hp.phase)


def test_separation_is_batched_over_a_grid_of_drives(one_thread):
    x = toy_rows(pairs=3, content=8, relax=4, n_in=8, seed=2)
    inputs = WriteInputs(x, 8, 100)
    fams = [solve_family(CriticalSpec("lstm", 100, 8, 0.0, gate_nu=nu), nu)[0] for nu in (0.5, 5.0)]
    from mftrnn.theory.hyper import Gate, Hyper

    grid = Hyper("lstm", {k: Gate(**{a: np.array([float(getattr(f.g(k), a)) for f in fams]) for a in
                                     ("mu", "rho", "sigma", "nu")}) for k in "ifgo"}, True)
    both = separation(grid, inputs, population=500)["one_minus_c_end"]
    one = [float(separation(f, inputs, population=500)["one_minus_c_end"]) for f in fams]
    assert both.shape == (2,) and np.allclose(both, one, atol=1e-12)


def test_inputs_check_their_layout():
    x = torch.zeros(10, 4, 3)
    with pytest.raises(ValueError, match="2P"):
        WriteInputs(torch.zeros(10, 3, 3), 5, 20)
    with pytest.raises(ValueError, match="content"):
        WriteInputs(x, 11, 20)
    with pytest.raises(ValueError, match="burn_in"):
        WriteInputs(x, 10, 10, burn_in=10)
    a, b = WriteInputs(x, 5, 20), WriteInputs(x, 5, 30)
    assert a.key() != b.key() and a.relax == 5 and a.pairs == 2


def test_burn_in_keeps_the_input_fields_and_costs_less(one_thread):
    """Eq. (T41): fresh recurrent fields for the first steps; with no recurrent field (sigma = 0 everywhere)
    the burn-in changes nothing, since the input fields stay tied."""
    from mftrnn.theory.hyper import Gate, Hyper

    hp = Hyper("lstm", {k: Gate(mu=0.5, sigma=0.0, nu=2.0) for k in "ifgo"})
    x = toy_rows(pairs=2, content=20, relax=0, n_in=6, seed=3)
    full = separation(hp, WriteInputs(x, 20, 20), population=300)
    burnt = separation(hp, WriteInputs(x, 20, 20, burn_in=15), population=300)
    assert np.allclose(full["one_minus_c"], burnt["one_minus_c"], atol=1e-12)


# ----------------------------------------------------------------------------- the drive rule
def test_midpoint_rule_on_curves():
    grid = [0.1, 1.0, 10.0, 100.0]
    nu, why = midpoint_drive(grid, [0.2, 0.3, 0.6, 0.8])  # halfway: 0.5, between 1 and 10
    assert 1 < nu < 10 and why["D_lo"] == 0.2 and why["D_hi"] == 0.8
    assert nu == pytest.approx(10 ** (2 / 3), rel=0.02)  # log-linear between (1, 0.3) and (10, 0.6)
    assert midpoint_drive(grid, [0.5, 0.45, 0.3, 0.2])[0] == 0.1  # the drive only erases: quiet
    assert midpoint_drive(grid, [0.5, 0.505, 0.51, 0.51])[0] == 0.1  # below the smallest effect: quiet
    # no family at 100: the largest is 0.6 at 10, halfway 0.4 lies a third of the way from 1 to 10 in log nu
    assert midpoint_drive(grid, [0.2, 0.3, 0.6, float("nan")])[0] == pytest.approx(10 ** (1 / 3), rel=0.03)
    with pytest.raises(RuntimeError, match="quietest"):
        midpoint_drive(grid, [float("nan"), 0.3, 0.6, 0.8])
    # drives that freeze the keep gate (eq. (T42)) are not candidates: the largest admissible D_T is 0.3 at 1
    nu, why = midpoint_drive(grid, [0.2, 0.3, 0.6, 0.8], admissible=[True, True, False, False])
    assert why["D_hi"] == 0.3 and 0.1 < nu < 1


def test_solver_chooses_a_drive_for_a_zero_padded_toy_task(one_thread):
    """Zero padding after bright and blank rows: driven gates separate the inputs; the chosen drive lies inside
    the grid, its D_T halfway between the quietest and the largest, and the family stays critical there."""
    x = toy_rows(pairs=4, content=12, relax=6, n_in=16, seed=4)
    inputs = WriteInputs(x, 12, 300)
    spec = CriticalSpec("lstm", 300, 12, 0.0, drive_population=1000, inputs_key=inputs.key())
    sol = solve(spec, inputs)
    d = sol.drive
    curve = np.array(d["curve"]["one_minus_c_end"], float)
    assert d["source"] == "theory" and d["curve"]["nu"][0] < d["gates"] < d["curve"]["nu"][-1]
    assert curve.max() - curve[0] > 0.1
    mid = curve[0] + 0.5 * (curve.max() - curve[0])
    assert sol.predictions["write"]["one_minus_c_end"] == pytest.approx(mid, abs=0.05)
    assert sol.predictions["operating_point"]["radius"] == pytest.approx(1, abs=1e-8)
    assert sol.gates["f"]["nu"] == d["gates"] and sol.gates["g"]["nu"] == 1.0
    assert d["curve"]["keep_slope_ratio"] == [1.0] * len(d["curve"]["nu"])  # zero padding: the drive never freezes it
    with pytest.raises(ValueError, match="WriteInputs"):
        solve(CriticalSpec("lstm", 300, 12, 0.0))


def test_solver_keeps_the_gates_quiet_where_the_padding_is_noise(one_thread):
    """Noise in the long stretch drives the gates too: a drive closes the keep gate on the noise and erases what
    the rows wrote (D_T falls), so the rule keeps the quietest drive; the family is solved again at each drive
    with the gate means over the inputs' law (eq. (T40)), and stays at radius 1."""
    content, relax, n_in = 12, 30, 16
    x = toy_rows(pairs=4, content=content, relax=relax, n_in=n_in, seed=5, tail=1.0)
    r = (x[content:] ** 2).mean(-1)
    nodes = tuple(float(v) for v in r.flatten().sort().values.reshape(8, -1).mean(1))
    spec = CriticalSpec("lstm", 300, content, float(r.mean()), r_nodes=nodes, r_weights=(1 / 8,) * 8,
                        drive_population=1000)
    d = choose_drive(spec, WriteInputs(x, content, 300))
    curve = [v for v in d["curve"]["one_minus_c_end"] if v is not None]
    assert d["gates"] == d["curve"]["nu"][0] and curve[0] > curve[-1]
    slope = [v for v in d["curve"]["keep_slope_ratio"] if v is not None]  # eq. (T42): driven, the keep gate freezes
    assert slope[0] == 1 and slope[-1] < 0.5 and all(a >= b - 1e-9 for a, b in zip(slope, slope[1:]))
    keeps = [solve_family(CriticalSpec("lstm", 300, content, float(r.mean()), r_nodes=nodes, r_weights=(1 / 8,) * 8,
                                       gate_nu=nu), nu)[0].g("f").mu for nu in (0.1, 3.0)]
    assert keeps[1] > keeps[0] + 0.5  # a driven keep gate needs a larger bias to keep as much on average
