"""The finite-width simulator (mftrnn.theory.simulate): cells, weight law, inputs, trajectories, Jacobians."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mftrnn.cells import GATES
from mftrnn.theory.hyper import Gate, Hyper
from mftrnn.theory.simulate import (
    CellWeights, Spectra, Trajectory, cell_step, generators, jacobian_spectra, lstm_step, module_step,
    module_weights, sample_biases, sample_weights, simulate_trajectory, tied_module, two_sequence_inputs)

CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # The matrices here are small (n <= 400): with several intra-op threads, LAPACK's QR/SVD spend
    # their time synchronizing, and on a shared, loaded CPU a 96 x 96 QR took 30x longer than with one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hps(cell: str, default: Gate = Gate(), recurrent: str = "gaussian", **per_gate: Gate) -> Hyper:
    """A Hyper with `default` for every gate of `cell`, overridden per gate name."""
    return Hyper(cell, {g: per_gate.get(g, default) for g in GATES[cell]}, orthogonal=recurrent == "orthogonal")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, elementwise."""
    return 1.0 / (1.0 + np.exp(-x))


# --------------------------------------------------------------------------- 1. cell equations
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_hand_step_matches_torch_module(cell):
    # PyTorch's default init has non-zero b_hh, which checks that b_hn sits inside the reset product.
    torch.manual_seed(1)
    rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(7, 16)
    p = module_weights(rnn)
    x = torch.randn(6, 3, 7)  # (T, B, n_in)
    h = torch.randn(3, 16)  # (B, n): a non-zero start state
    c = torch.randn(3, 16) if cell == "lstm" else None
    h_mod, c_mod = h, c
    with torch.no_grad():
        for t in range(6):
            mine = cell_step(cell, p, x[t], h, c)
            ref = module_step(rnn, x[t], h_mod, c_mod)
            torch.testing.assert_close(mine.h, ref.h, atol=1e-5, rtol=0)
            if cell == "lstm":
                torch.testing.assert_close(mine.c, ref.c, atol=1e-5, rtol=0)
            h, c, h_mod, c_mod = mine.h, mine.c, ref.h, ref.c
        # and the whole sequence in one call (cuDNN-style, zero start) ends where the hand-written steps do
        out, _ = rnn(x)  # (T, B, n)
        h, c = torch.zeros(3, 16), torch.zeros(3, 16) if cell == "lstm" else None
        for t in range(6):
            h, c, _ = cell_step(cell, p, x[t], h, c)
    torch.testing.assert_close(h, out[-1], atol=1e-5, rtol=0)


def test_gru_forms_agree_when_reset_gate_is_a_constant():
    # With the reset gate a constant scalar r (sigma_r = nu_r = rho_r = 0) and b_hn = 0,
    # U_n (r h) = r (U_n h): the two GRU forms must give the same step (docs/theory.md §2.3, eq. (T13)).
    gates = hps("gru", Gate(mu=0.2, rho=0.5, sigma=1.0, nu=1.0), r=Gate(mu=0.7, rho=0, sigma=0, nu=0))
    gen = generators(0, CPU)
    p = CellWeights(*sample_weights(gates, 32, 10, gen["weights"]), *sample_biases(gates, 32, gen["biases"]))
    x, h = torch.randn(4, 10, dtype=torch.float64), torch.randn(4, 32, dtype=torch.float64)
    torch.testing.assert_close(cell_step("gru", p, x, h).h, cell_step("gru_reset_before", p, x, h).h,
                               atol=1e-12, rtol=0)


# --------------------------------------------------------------------------- 2. the weight law
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("recurrent", ["gaussian", "orthogonal"])
def test_untied_sampler_follows_the_law(cell, recurrent):
    n, n_in = 300, 120
    names = GATES[cell]
    gates = {g: Gate(mu=0.5 * j - 1, rho=0.3 + 0.2 * j, sigma=0.5 + 0.5 * j, nu=1.5 - 0.3 * j)
             for j, g in enumerate(names)}
    hp = Hyper(cell, gates, orthogonal=recurrent == "orthogonal")
    gen = generators(3, CPU)
    w_ih, w_hh = sample_weights(hp, n, n_in, gen["weights"])
    w_ih2, w_hh2 = sample_weights(hp, n, n_in, gen["weights"])
    assert not torch.equal(w_hh, w_hh2) and not torch.equal(w_ih, w_ih2)  # fresh draws (untied)
    for j, g in enumerate(names):
        g_hp, rows = gates[g], slice(j * n, (j + 1) * n)
        u, w = w_hh[rows], w_ih[rows]  # (n, n), (n, n_in)
        assert u.var().item() * n == pytest.approx(g_hp.sigma ** 2, rel=0.05)
        assert abs(u.mean().item()) < 4 * g_hp.sigma / n  # 4 standard errors of the mean of n^2 entries
        assert w.var().item() * n_in == pytest.approx(g_hp.nu ** 2, rel=0.05)
        if recurrent == "orthogonal":
            eye = torch.eye(n, dtype=u.dtype)
            torch.testing.assert_close(u @ u.T, g_hp.sigma ** 2 * eye, atol=1e-10, rtol=0)
    # Biases: per unit N(mu, rho^2), b_hh = 0 (so the GRU's b_hn = 0); wide so that the moments are sharp.
    wide = 20_000
    b_ih, b_hh = sample_biases(hp, wide, gen["biases"])
    assert torch.all(b_hh == 0)
    for j, g in enumerate(names):
        b = b_ih[j * wide:(j + 1) * wide]
        assert abs(b.mean().item() - gates[g].mu) < 4 * gates[g].rho / math.sqrt(wide)
        assert b.std().item() == pytest.approx(gates[g].rho, rel=0.05)


def test_tied_module_is_initialized_by_init_meanfield():
    gates = hps("gru", Gate(mu=0.3, rho=0.0, sigma=2.0, nu=0.5), recurrent="orthogonal")
    rnn = tied_module(gates, 64, 20, seed=5, device=CPU, dtype=torch.float64)
    u = rnn.weight_hh_l0[:64]  # (n, n) the r block
    torch.testing.assert_close(u @ u.T, 4.0 * torch.eye(64, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.all(rnn.bias_ih_l0 == 0.3) and torch.all(rnn.bias_hh_l0 == 0)
    again = tied_module(gates, 64, 20, seed=5, device=CPU, dtype=torch.float64)
    assert torch.equal(again.weight_hh_l0, rnn.weight_hh_l0)  # seeded, reproducible


# --------------------------------------------------------------------------- 3. inputs
def test_two_sequence_inputs():
    steps, split, n_in, R = 400, 150, 200, 2.5
    x = two_sequence_inputs(steps, split, n_in, R, torch.Generator().manual_seed(0), "cpu")  # (T, 2, n_in)
    assert x.shape == (steps, 2, n_in) and x.dtype == torch.float64
    assert torch.equal(x[split:, 0], x[split:, 1])  # identical for 1-based t > split
    assert not torch.any(x[:split, 0] == x[:split, 1])  # independent draws before
    assert (x ** 2).mean().item() == pytest.approx(R, rel=0.02)  # 0.35% standard error
    overlap = (x[:split, 0] * x[:split, 1]).mean().item()  # R_ab before the split, expected 0
    assert abs(overlap) < 4 * R / math.sqrt(split * n_in)
    assert torch.equal(two_sequence_inputs(5, 0, 3, 1.0, torch.Generator().manual_seed(0), "cpu")[:, 0],
                       two_sequence_inputs(5, 0, 3, 1.0, torch.Generator().manual_seed(0), "cpu")[:, 1])
    with pytest.raises(ValueError):
        two_sequence_inputs(5, 6, 3, 1.0, torch.Generator(), "cpu")


# --------------------------------------------------------------------------- 4. trajectories
@pytest.mark.parametrize("cell", ["gru", "gru_reset_before"])
@pytest.mark.parametrize("tied", [True, False])
def test_gru_trajectory_small_sigma(cell, tied):
    steps, split = 80, 20
    tr = simulate_trajectory(hps(cell, Gate(sigma=0.5, nu=1.0)), width=200, steps=steps,
                             split=split, R=1.0, input_size=100, tied=tied, seed=1)
    assert isinstance(tr, Trajectory) and tr.q_s_a is None and tr.c_s is None
    assert tr.t.tolist() == list(range(steps + 1))
    assert np.all(np.isfinite(np.stack([tr.q_h_a, tr.q_h_b, tr.c_h])))
    assert tr.q_h_a[0] == tr.q_h_b[0] == tr.c_h[0] == 0  # zero initial state
    # Same network, same input law: the lengths agree once the inputs coincide (theory: Q_a = Q_b).
    assert tr.q_h_a[40:].mean() == pytest.approx(tr.q_h_b[40:].mean(), rel=0.05)
    assert np.all(np.abs(tr.c_h) <= np.sqrt(tr.q_h_a * tr.q_h_b) * (1 + 1e-12))  # Cauchy-Schwarz
    # 1 - (correlation coefficient): second order in h_a - h_b, unlike 1 - c/q_a, whose first-order
    # term (q_a - q_b)/q_a is only zero on average.
    gap = 1 - tr.c_h[1:] / np.sqrt(tr.q_h_a[1:] * tr.q_h_b[1:])  # (T,) for t = 1..T
    assert gap[split - 1] > 0.3  # independent inputs up to the split: little correlation
    after = gap[split:split + 30]
    assert after[-1] < 1e-8 * gap[split - 1]  # the difference is forgotten (m_1 < 1 for small sigma)
    assert np.all(after[1:] <= after[:-1] + 1e-12)  # monotone decay after the split, up to rounding


@pytest.mark.parametrize("tied", [True, False])
def test_lstm_trajectory_records_the_cell_state(tied):
    gates = hps("lstm", Gate(sigma=1.0, nu=1.0), recurrent="orthogonal", f=Gate(mu=1.0, sigma=1.0, nu=1.0))
    tr = simulate_trajectory(gates, width=96, steps=40, split=10, R=1.0, input_size=50,
                             tied=tied, seed=2)
    assert tr.q_s_a.shape == tr.c_s.shape == (41,)
    assert np.all(np.isfinite(tr.q_s_a)) and tr.q_s_a[-1] > 0
    assert np.all(tr.q_h_a <= tr.q_s_a + 1e-12)  # |o tanh(s)| <= |s| unit by unit
    # 30 steps after the split the two cell states have (nearly) merged: C_s -> Q_s (docs/theory.md §3)
    assert tr.c_s[-1] == pytest.approx(tr.q_s_a[-1], rel=0.05)
    assert tr.c_h[-1] == pytest.approx(tr.q_h_a[-1], rel=0.05)


def test_tied_trajectory_runs_the_module_and_is_reproducible():
    # The tied LSTM path (torch module, step by step) equals the hand-written step with the module's
    # weights and the same input stream.
    gates = hps("lstm", Gate(sigma=1.0, nu=1.0, rho=0.2))
    kw = dict(width=48, steps=15, split=5, R=1.0, input_size=30, tied=True, seed=4)
    tr = simulate_trajectory(gates, **kw)
    p = module_weights(tied_module(gates, 48, 30, 4, CPU, torch.float64))
    x = two_sequence_inputs(15, 5, 30, 1.0, generators(4, CPU)["inputs"], CPU)  # (T, 2, n_in)
    h = c = torch.zeros(2, 48, dtype=torch.float64)
    with torch.no_grad():
        for t in range(15):
            h, c, _ = lstm_step(p, x[t], h, c)
    assert tr.q_h_a[-1] == pytest.approx((h[0] @ h[0]).item() / 48, rel=1e-10)
    assert tr.c_s[-1] == pytest.approx((c[0] @ c[1]).item() / 48, rel=1e-10)
    again = simulate_trajectory(gates, **kw)
    np.testing.assert_array_equal(again.c_h, tr.c_h)


# --------------------------------------------------------------------------- 5. Jacobians
@pytest.mark.parametrize("tied", [True, False])
def test_lstm_constant_gates_jacobian_is_forget_gate(tied):
    # sigma = nu = 0: every gate is sigmoid(bias), constant in time, and U = 0 makes K = 0 in eq. (T21),
    # so the effective Jacobian is D_f exactly.
    n, seed = 80, 7
    gates = hps("lstm", Gate(mu=0.0, rho=1.0, sigma=0, nu=0), f=Gate(mu=1.0, rho=1.5, sigma=0, nu=0))
    sp = jacobian_spectra(gates, n, R=1.0, burn_in=5, product_steps=3, input_size=20,
                          tied=tied, seed=seed)
    assert isinstance(sp, Spectra) and sp.one_step.shape == sp.product.shape == (n,)
    if tied:
        rnn = tied_module(gates, n, 20, seed, CPU, torch.float64)
        b = (rnn.bias_ih_l0 + rnn.bias_hh_l0)[n:2 * n]  # the f block
    else:
        b = sample_biases(gates, n, generators(seed, CPU)["biases"])[0][n:2 * n]
    expected = np.sort(sigmoid(b.numpy()) ** 2)[::-1]
    np.testing.assert_allclose(sp.one_step, expected, atol=1e-6, rtol=0)
    assert sp.m1 == pytest.approx(expected.mean(), abs=1e-9)
    assert sp.m2 == pytest.approx((expected ** 2).mean(), abs=1e-9)


@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_before"])
@pytest.mark.parametrize("tied", [True, False])
def test_product_of_constant_diagonal_jacobians(cell, tied):
    # All recurrent weights zero and the keep gate (f or z) constant: J = D_keep at every step, so the
    # squared singular values of the product are the per-step ones to the power product_steps.
    keep = "f" if cell == "lstm" else "z"
    const = Gate(mu=2.0, rho=1.0, sigma=0, nu=0)
    gates = hps(cell, Gate(mu=0.0, rho=0.5, sigma=0, nu=1.0), **{keep: const})
    sp = jacobian_spectra(gates, 60, R=1.0, burn_in=4, product_steps=6, input_size=20,
                          tied=tied, seed=3)
    np.testing.assert_allclose(sp.product, sp.one_step ** 6, rtol=1e-10, atol=0)


def _gauss(fn, mean: float, var: float, nodes: int = 80) -> float:
    """E fn(u), u ~ N(mean, var), by probabilists' Gauss-Hermite quadrature (docs/theory.md §2.1)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    return float(np.sum(w * fn(mean + math.sqrt(var) * x)) / math.sqrt(2 * math.pi))


@pytest.mark.parametrize("cell", ["gru", "gru_reset_before"])
def test_untied_gru_constant_gates_moments_match_eq19(cell):
    # Deterministic gates (sigma_z = sigma_r = nu_z = nu_r = 0, rho = 0): z = f = sigmoid(mu_z) and
    # r = sigmoid(mu_r) are constants, and the only random channel is the candidate,
    # u_n ~ N(mu_n, nu_n^2 R + r^2 sigma_n^2 Q_h) (docs/theory.md eq. (T13) with b_hn = 0, same for
    # both GRU forms). Independent check: the mean field itself. Q_h* is the fixed point of eq. (T5),
    # computed here by Gauss-Hermite quadrature (not from the simulation); the simulated Q_h must
    # match it, and then m_1, m_2 of eq. (T23) with A = f, B = (1 - f) r tanh'(u_n) must match the measured
    # moments of the one-step Jacobian of the untied network.
    mu_z, mu_r, mu_n, sigma_n, nu_n, R, n = 1.0, 1.0, 0.3, 2.0, 0.5, 1.0, 400
    gates = Hyper(cell, {"r": Gate(mu=mu_r, rho=0, sigma=0, nu=0), "z": Gate(mu=mu_z, rho=0, sigma=0, nu=0),
                         "n": Gate(mu=mu_n, rho=0, sigma=sigma_n, nu=nu_n)})
    f, r = sigmoid(mu_z), sigmoid(mu_r)

    def var_n(q: float) -> float:
        return nu_n ** 2 * R + r ** 2 * sigma_n ** 2 * q

    m, q = 0.0, 0.0
    for _ in range(500):  # eq. (T5): a contraction here (m_1 < 1), so plain iteration converges
        t1, t2 = _gauss(np.tanh, mu_n, var_n(q)), _gauss(lambda u: np.tanh(u) ** 2, mu_n, var_n(q))
        m, q = f * m + (1 - f) * t1, f ** 2 * q + 2 * f * (1 - f) * t1 * m + (1 - f) ** 2 * t2
    b2 = (1 - f) ** 2 * r ** 2 * _gauss(lambda u: (1 - np.tanh(u) ** 2) ** 2, mu_n, var_n(q))  # <B^2>
    b4 = (1 - f) ** 4 * r ** 4 * _gauss(lambda u: (1 - np.tanh(u) ** 2) ** 4, mu_n, var_n(q))  # <B^4>
    m1 = f ** 2 + sigma_n ** 2 * b2
    m2 = f ** 4 + 4 * sigma_n ** 2 * f ** 2 * b2 + sigma_n ** 4 * (b4 + b2 ** 2)  # kappa = 0: Gaussian U_n

    tr = simulate_trajectory(gates, width=n, steps=60, split=60, R=R, tied=False)
    assert tr.q_h_a[30:].mean() == pytest.approx(q, rel=0.05)
    sp = jacobian_spectra(gates, n, R=R, burn_in=40, product_steps=1, tied=False)
    assert sp.m1 == pytest.approx(m1, rel=0.05)
    assert sp.m2 == pytest.approx(m2, rel=0.08)
    # a single step's product is the step itself
    np.testing.assert_allclose(sp.product, sp.one_step, rtol=1e-10, atol=1e-14)


def test_bad_arguments():
    with pytest.raises(ValueError):
        simulate_trajectory(hps("gru"), 0, 2, 1, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        simulate_trajectory(hps("gru", Gate(sigma=-1.0)), 8, 2, 1, 1.0)
    with pytest.raises(ValueError, match="grids"):
        simulate_trajectory(hps("gru", Gate(mu=np.zeros(3))), 8, 2, 1, 1.0)
    with pytest.raises(ValueError):
        jacobian_spectra(hps("gru"), 8, 1.0, product_steps=0)
