"""Deterministic untied mean field: per-step maps, fixed points, time scales and m_1, for any bias law.

Cells: "lstm" (nn.LSTM: gates i, f, g, o), "gru" (nn.GRU, reset-after: r, z, n) and
"gru_reset_before" (the paper's form: n = tanh(W_n x + U_n (r * h) + b_n)). Every hyperparameter
and state may be an array: all maps broadcast, so one call runs a grid.

Under untied weights every unit sees fresh Gaussian fields whose statistics are population
averages, and its own persistent biases (docs/theory.md §2.6). So each per-unit statistic is
computed conditional on the unit's biases, at the nodes of a quadrature rule of the bias law
(`hyper.unit_rule`, eq. (T31)), and population averages are weighted sums over that node axis,
which is the last axis of every per-unit array here. This makes the GRU maps exact for any bias
law. The LSTM's cell state given the unit's biases is not Gaussian; its moments are exact and
E[tanh(s)^2] etc. use a Gaussian of the same mean and variance (the closure, eq. (T9)), whose error
against the exact population solver (mftrnn/theory/population.py) is measured in docs/theory.md §2.6.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from mftrnn.theory.hyper import Gate, Hyper, unit_rule
from mftrnn.theory.quadrature import bivariate_points, dsig, dtanh, expect_many, gaussian_points, sig

Array = np.ndarray
N2 = 16  # Gauss-Hermite nodes per axis of 2-D rules

__all__ = ["Gate", "Hyper", "FixedPoint", "fixed_point", "m1", "slope_c", "tangent", "length_slope", "xi", "trajectory",
           "two_step", "TwoState", "memory_horizon", "one_minus_c", "lstm_tangent_entries"]


def _lift(x) -> Array:
    """A population-level value (...) as a per-unit one (..., 1), broadcasting over the node axis."""
    return np.asarray(x, float)[..., None]


def _avg(x, w: Array) -> Array:
    """The population average of a per-unit array (..., K) (or (..., 1): the same at every node)."""
    x = np.asarray(x, float)
    return (x[..., 0] * w.sum()) if x.shape[-1:] == (1,) and w.size > 1 else x @ w


# ----------------------------------------------------------------------------- gate moments
def _sig_moments(hp: Hyper, k: str, q: Array, r: Array):
    """<s>, <s^2>, <s'^2> of s = sigmoid(u_k), u_k ~ N(mu_k, var_k)."""
    return expect_many([sig, lambda u: sig(u) ** 2, lambda u: dsig(u) ** 2], hp.g(k).mu, hp.var(k, q, r))


def _tanh_moments(mean: Array, var: Array):
    """<tanh>, <tanh^2>, <tanh'^2> under N(mean, var)."""
    return expect_many([np.tanh, lambda u: np.tanh(u) ** 2, lambda u: dtanh(u) ** 2], mean, var)


def _one_minus_sig2(hp: Hyper, k: str, q: Array, r: Array) -> Array:
    return expect_many([lambda u: (1 - sig(u)) ** 2], hp.g(k).mu, hp.var(k, q, r))[0]


_K = 7  # Chebyshev points in r^2 for the reset-after candidate


def _candidate_functions(u: Array) -> list[Array]:
    """tanh, tanh^2, tanh'^2 and (tanh'^2)'' = 4 tanh'^2 (5 tanh^2 - 1), sharing one tanh."""
    t = np.tanh(u)
    t2 = t * t
    d2 = (1 - t2) ** 2
    return [t, t2, d2, 4 * d2 * (5 * t2 - 1)]


def _tanh_pair(u: Array) -> list[Array]:
    t = np.tanh(u)
    return [t, t * t]


def _reset_after_candidate(hp: Hyper, q: Array, r_in: Array, n: int = N2, full: bool = True):
    """Moments of the reset-after candidate u_n = a + r g, eq. (T13): a ~ N(mu_n, nu_n^2 R),
    g = U_n h ~ N(0, v_g = sigma_n^2 Q), r = sigmoid(u_r). Given r, u_n ~ N(mu_n, v_a + r^2 v_g): a 2-D
    rule over (u_r, eps). Returns <tanh>, <tanh^2>, E[r^2 tanh'^2] and the reset-path term of (T16),
    E[sigmoid'(u_r)^2 g^2 tanh'(u_n)^2] = E_r[sigmoid'^2 (v_g E[phi] + r^2 v_g^2 E[phi''])], phi = tanh'^2,
    by Stein's lemma applied twice to g (phi'' = 4 tanh'^2 (5 tanh^2 - 1))."""
    gr, gn = hp.g("r"), hp.g("n")
    ur, w = gaussian_points(gr.mu, hp.var("r", q, r_in), n)  # (..., n)
    rr, dr2 = sig(ur), dsig(ur) ** 2
    v_g = np.asarray(gn.sigma ** 2 * q, float)[..., None]
    # The inner expectations depend on r only through v(r) = v_a + r^2 v_g, smoothly: evaluate them
    # at K Chebyshev points of r^2 in [0, 1] and interpolate to the n_r nodes (barycentric), K << n_r.
    v_a = np.asarray(gn.nu ** 2 * r_in + gn.rho ** 2, float)[..., None]
    cheb = (1 - np.cos(np.pi * (np.arange(_K) + 0.5) / _K)) / 2  # (K,)
    mu_n = np.asarray(gn.mu, float)[..., None]
    mu_n = np.broadcast_to(mu_n, np.broadcast_shapes(v_a.shape, v_g.shape, mu_n.shape, (_K,)))
    at_nodes = expect_many(_candidate_functions if full else _tanh_pair, mu_n, v_a + v_g * cheb)  # each (..., K)
    # barycentric weights of Chebyshev points of the first kind: (-1)^k sin((2k+1) pi / 2K)
    bary = (-1.0) ** np.arange(_K) * np.sin((2 * np.arange(_K) + 1) * np.pi / (2 * _K))
    terms = bary / (rr[..., :, None] ** 2 - cheb)  # (..., n_r, K); r^2 never hits a node exactly
    terms /= terms.sum(-1, keepdims=True)
    inner = [np.einsum("...ik,...k->...i", terms, f) for f in at_nodes]  # each (..., n_r)
    if not full:  # the length map needs only <tanh>_n and <tanh^2>_n
        return inner[0] @ w, inner[1] @ w
    e_t, e_t2, e_s2, e_phi2 = inner
    reset_path = (dr2 * (v_g * e_s2 + rr ** 2 * v_g ** 2 * e_phi2)) @ w
    return e_t @ w, e_t2 @ w, (rr ** 2 * e_s2) @ w, reset_path


def _candidate(hp: Hyper, q: Array, r_in: Array, q_rh: Optional[Array] = None):
    """<tanh>_n and <tanh^2>_n of the GRU candidate for either form. Reset-before, eq. (T4): U_n sees
    r * h, of population second moment q_rh (default <r^2> Q: no bias spread)."""
    if hp.cell == "gru":
        return _reset_after_candidate(hp, q, r_in, full=False)
    if q_rh is None:
        q_rh = _sig_moments(hp, "r", q, r_in)[1] * q
    gn = hp.g("n")
    t, t2, _ = _tanh_moments(gn.mu, gn.sigma ** 2 * q_rh + gn.nu ** 2 * r_in + gn.rho ** 2)
    return t, t2


# ----------------------------------------------------------------------------- one step, per unit
def _gru_unit(hp: Hyper, w: Array, m: Array, q: Array, q_bar: Array, r: Array) -> tuple[Array, Array]:
    """One step of the GRU length map, eq. (T5), per unit: (M_h, Q_h) at each node, fields of
    population length q_bar (lifted)."""
    ez, ez2, _ = _sig_moments(hp, "z", q_bar, r)
    q_rh = None
    if hp.cell == "gru_reset_before":  # the population moment of r * h
        q_rh = _lift(_avg(_sig_moments(hp, "r", q_bar, r)[1] * q, w))
    t, t2 = _candidate(hp, q_bar, r, q_rh)
    return ez * m + (1 - ez) * t, ez2 * q + 2 * (ez - ez2) * t * m + (1 - 2 * ez + ez2) * t2


def _lstm_unit(hp: Hyper, m_s: Array, q_s: Array, q_bar: Array, r: Array) -> tuple[Array, Array, Array]:
    """One step of the LSTM length map, eqs. (T8)-(T9), per unit: (M_s, Q_s) -> (M_s', Q_s', Q_h'),
    with the Gaussian closure s ~ N(M_s, Q_s - M_s^2) for E[tanh(s)^2]."""
    fi, fi2, _ = _sig_moments(hp, "i", q_bar, r)
    ff, ff2, _ = _sig_moments(hp, "f", q_bar, r)
    _, fo2, _ = _sig_moments(hp, "o", q_bar, r)
    tg, tg2, _ = _tanh_moments(hp.g("g").mu, hp.var("g", q_bar, r))
    m_new = ff * m_s + fi * tg
    q_s_new = ff2 * q_s + 2 * ff * fi * tg * m_s + fi2 * tg2
    _, ts2, _ = _tanh_moments(m_new, np.maximum(q_s_new - m_new ** 2, 0))
    return m_new, q_s_new, fo2 * ts2


# ----------------------------------------------------------------------------- fixed points
@dataclass
class FixedPoint:
    """Stationary single-sequence moments, eqs. (T6), (T7), (T10): population values, and the
    per-unit ones at the nodes of the bias law's rule (`unit`, arrays (..., K)) with the rule itself."""

    q_h: Array
    m_h: Array  # population mean of h (GRU); LSTM: 0
    q_s: Array = field(default_factory=lambda: np.array(np.nan))  # LSTM cell-state second moment
    m_s: Array = field(default_factory=lambda: np.array(np.nan))
    unit: dict = field(default_factory=dict)
    rule: Optional[tuple[Hyper, Array]] = None


def _unit_stationary(hp: Hyper, w: Array, q: Array, r: Array) -> dict[str, Array]:
    """The stationary per-unit moments when the fields have population length q (lifted, (..., 1)):
    the means solve linearly (M_h = <tanh>_n, eq. (T7)), the second moments in closed form."""
    if hp.cell == "lstm":
        fi, fi2, _ = _sig_moments(hp, "i", q, r)
        ff, ff2, _ = _sig_moments(hp, "f", q, r)
        _, fo2, _ = _sig_moments(hp, "o", q, r)
        tg, tg2, _ = _tanh_moments(hp.g("g").mu, hp.var("g", q, r))
        m_s = fi * tg / np.maximum(1 - ff, 1e-300)
        q_s = (fi2 * tg2 + 2 * ff * fi * tg * m_s) / np.maximum(1 - ff2, 1e-300)
        _, ts2, _ = _tanh_moments(m_s, np.maximum(q_s - m_s ** 2, 0))
        return {"q_h": fo2 * ts2, "m_h": np.zeros_like(q_s), "q_s": q_s, "m_s": m_s}
    ez, ez2, _ = _sig_moments(hp, "z", q, r)
    q_rh = None
    rounds = 2 if (hp.cell == "gru_reset_before" and w.size > 1) else 0
    if rounds:
        r2 = _sig_moments(hp, "r", q, r)[1]
        q_rh = _lift(_avg(r2 * q, w))
    for it in range(rounds + 1):  # reset-before with a spread: <r^2 h^2> needs the units' own Q
        t, t2 = _candidate(hp, q, r, q_rh)
        q_unit = (2 * (ez - ez2) * t * t + (1 - 2 * ez + ez2) * t2) / np.maximum(1 - ez2, 1e-300)
        if it < rounds:
            q_rh = _lift(_avg(r2 * q_unit, w))
    return {"q_h": q_unit, "m_h": t}


def _flat(hp: Hyper, r_in: Array, k: int) -> tuple[Hyper, Array, tuple]:
    """Broadcast every hyperparameter (node axis last, size k) and R to one grid shape and flatten the
    grid to one axis, so subsets of grid points can be taken."""
    grid = np.broadcast_shapes(np.shape(r_in), *(np.shape(getattr(g, a))[:-1] for g in hp.gates.values()
                                                  for a in ("mu", "rho", "sigma", "nu")))
    flat = lambda v: np.broadcast_to(np.asarray(v, float), grid + (k,)).reshape(-1, k)  # noqa: E731
    gates = {name: Gate(*(flat(getattr(g, a)) for a in ("mu", "rho", "sigma", "nu"))) for name, g in hp.gates.items()}
    return replace(hp, gates=gates), np.broadcast_to(np.asarray(r_in, float), grid).reshape(-1), grid


def _take(hp: Hyper, idx: Array) -> Hyper:
    return replace(hp, gates={k: Gate(g.mu[idx], g.rho[idx], g.sigma[idx], g.nu[idx]) for k, g in hp.gates.items()})


def fixed_point(hp: Hyper, r_in: Array = 0.0, tol: float = 1e-11, max_iter: int = 100) -> FixedPoint:
    """The stable fixed point Q_h* of the length map, eqs. (T6), (T10), for any bias law (eq. (T31)),
    vectorized over hyperparameters.

    Solves Phi(Q) = Q on [0, 1] (|h| <= 1), Phi(Q) = the population mean of the units' stationary
    Q_h when the fields have length Q, by a safeguarded secant iteration on the points not yet
    converged. Where Q = 0 is a fixed point (no input, no bias, zero candidate bias), the non-zero
    one is taken if it exists (Phi(Q) > Q just above 0: the chaotic side), else Q* = 0.
    """
    hpn, w = unit_rule(hp)
    fhp, r, shape = _flat(hpn, r_in, w.size)
    g = lambda idx, x: _avg(_unit_stationary(_take(fhp, idx), w, _lift(x), _lift(r[idx]))["q_h"], w) - x  # noqa: E731
    n = r.size
    everything = np.arange(n)
    lo, hi = np.zeros(n), np.ones(n)
    g_lo = g(everything, lo)
    trivial = g_lo <= 1e-15
    lo[trivial] = 1e-10
    g_lo[trivial] = g(everything[trivial], lo[trivial])
    zero = trivial & (g_lo <= 0)
    g_hi = g(everything, hi)
    # The first step uses a forward-difference slope, later steps the secant through the last two
    # iterates; a step that leaves the bracket is replaced by bisection.
    x = np.where(g_hi >= 0, hi, 0.5 * (lo + hi))
    active = ~zero & (g_hi < 0)
    x_prev = g_prev = None
    for it in range(max_iter):
        idx = everything[active]
        if idx.size == 0:
            break
        xi_ = x[idx]
        gx = g(idx, xi_)
        if it == 0:
            h = 1e-7 * np.maximum(xi_, 1e-6)
            slope = (g(idx, xi_ + h) - gx) / h
            x_prev, g_prev = np.full(n, np.nan), np.full(n, np.nan)
        else:
            dx = xi_ - x_prev[idx]
            slope = np.where(dx != 0, (gx - g_prev[idx]) / np.where(dx != 0, dx, 1), -1.0)
        x_prev[idx], g_prev[idx] = xi_, gx
        right = gx > 0  # the root lies right of x
        lo[idx[right]] = xi_[right]
        hi[idx[~right]] = xi_[~right]
        step = xi_ - gx / np.where(slope == 0, -1.0, slope)
        inside = (step > lo[idx]) & (step < hi[idx]) & np.isfinite(step)
        exact = np.abs(gx) <= 1e-16  # landed on the root: keep it
        x_new = np.where(exact, xi_, np.where(inside, step, 0.5 * (lo[idx] + hi[idx])))
        done = exact | (np.abs(x_new - xi_) <= tol * np.maximum(x_new, 1e-12))
        x[idx] = x_new
        active[idx[done]] = False
    q = np.where(zero, 0.0, x).reshape(shape)
    unit = _unit_stationary(hpn, w, _lift(q), _lift(r_in))
    full = np.broadcast_shapes(*(np.shape(v) for v in unit.values()))
    unit = {k: np.broadcast_to(v, full) for k, v in unit.items()}
    unit["q_bar"] = q
    pop = {k: _avg(v, w) for k, v in unit.items() if k != "q_bar"}
    fp = FixedPoint(q_h=q, m_h=pop["m_h"], unit=unit, rule=(hpn, w))
    if hp.cell == "lstm":
        fp.q_s, fp.m_s = pop["q_s"], pop["m_s"]
    return fp


def _rule(hp: Hyper, fp: FixedPoint) -> tuple[Hyper, Array]:
    return fp.rule if fp.rule is not None else unit_rule(hp)


# ----------------------------------------------------------------------------- m_1 and the slope of C
def _gru_tangent_terms(hp: Hyper, fp: FixedPoint, r_in: Array) -> dict[str, Array]:
    """Per-unit pieces of the GRU's mean-square tangent map, eqs. (T15), (T16): a = <z^2>, `field`:
    the growth fed by the population tangent <D> (gate z, candidate and reset paths), and for the
    reset-before form `rh`: the part fed by <r^2 D> (U_n multiplies the tangent of r * h)."""
    hpn, w = _rule(hp, fp)
    q, r = _lift(fp.q_h), _lift(r_in)
    m_u, q_u = fp.unit["m_h"], fp.unit["q_h"]
    gz, gn, gr = hpn.g("z"), hpn.g("n"), hpn.g("r")
    _, ez2, ezd2 = _sig_moments(hpn, "z", q, r)
    one_minus_z2 = _one_minus_sig2(hpn, "z", q, r)
    if hpn.cell == "gru_reset_before":
        _, er2, erd2 = _sig_moments(hpn, "r", q, r)
        q_rh = _lift(_avg(er2 * q_u, w))
        t, t2, td2 = _tanh_moments(gn.mu, gn.sigma ** 2 * q_rh + gn.nu ** 2 * r + gn.rho ** 2)
        base = gz.sigma ** 2 * ezd2 * (q_u - 2 * m_u * t + t2)
        cand = one_minus_z2 * gn.sigma ** 2 * td2
        # d(r h) = r dh + h sigmoid'(u_r) (U_r dh): U_n sees <r^2 D> + sigma_r^2 <sigmoid'^2 Q> <D>
        return {"a": ez2, "field": base + cand * gr.sigma ** 2 * _lift(_avg(erd2 * q_u, w)), "rh": cand, "r2": er2}
    t, t2, er2d2, reset_path = _reset_after_candidate(hpn, q, r)
    base = gz.sigma ** 2 * ezd2 * (q_u - 2 * m_u * t + t2)
    return {"a": ez2, "field": base + one_minus_z2 * (gn.sigma ** 2 * er2d2 + gr.sigma ** 2 * reset_path)}


def lstm_tangent_entries(hp: Hyper, fp: FixedPoint, r_in: Array) -> tuple[Array, Array, Array, Array]:
    """Per-unit (a, K, c, d) of the LSTM's mean-square tangent map, eq. (T17), at the fixed point:
    D_s' = a D_s + K <D_h>, D_h' = c D_s' + d <D_h> (cell-state closure for c and d)."""
    hpn, w = _rule(hp, fp)
    q, r = _lift(fp.q_h), _lift(r_in)
    _, fi2, fid2 = _sig_moments(hpn, "i", q, r)
    _, ff2, ffd2 = _sig_moments(hpn, "f", q, r)
    _, fo2, fod2 = _sig_moments(hpn, "o", q, r)
    _, tg2, tgd2 = _tanh_moments(hpn.g("g").mu, hpn.var("g", q, r))
    m_s, q_s = fp.unit["m_s"], fp.unit["q_s"]
    _, ts2, tsd2 = _tanh_moments(m_s, np.maximum(q_s - m_s ** 2, 0))
    s = {k: hpn.g(k).sigma ** 2 for k in "ifgo"}
    k = s["f"] * ffd2 * q_s + s["i"] * fid2 * tg2 + s["g"] * fi2 * tgd2
    return ff2, k, fo2 * tsd2, s["o"] * fod2 * ts2


def m1(hp: Hyper, fp: FixedPoint, r_in: Array) -> Array:
    """m_1 = (1/n) E tr(J J^T) of the one-step Jacobian at the fixed point, as the spectra see it
    (eq. (T23), first line): GRU reset-before eq. (T15), reset-after eq. (T16), LSTM the effective
    cell-state Jacobian (T21), <a> + <K> <c>. Population averages over the units' bias law."""
    return tangent(hp, fp, r_in)[0]


WINDOW = 200  # steps over which a bias spread's non-exponential decay is averaged (eq. (T18))


def slope_c(hp: Hyper, fp: FixedPoint, r_in: Array, window: int = WINDOW) -> Array:
    """lambda_C, the per-step growth of the mean-square distance of two nearby trajectories at the
    fixed point: the slope of the correlation map at C = Q, so xi_C = -1/ln lambda_C (eq. (T18)).
    See `tangent`."""
    return tangent(hp, fp, r_in, window)[1]


def tangent(hp: Hyper, fp: FixedPoint, r_in: Array, window: int = WINDOW) -> tuple[Array, Array]:
    """(m_1, lambda_C) from one evaluation of the per-unit tangent map.

    Each unit's tangent D(b) grows as D' = a(b) D + B(b) <D> (the fields of the recurrent matrices see
    the population's tangent; LSTM: the pair (D_s, D_h) of eq. (T17); reset-before GRU: U_n sees
    <r^2 D>). m_1 is one step from a uniform tangent. Without a bias spread the growth is one number
    per step: lambda_C = m_1 (GRU) or lambda_max of (T17) (LSTM). With a spread the decay is a
    mixture over units, slower for the slower units, and not exponential (its asymptotic rate is
    that of the slowest unit, 1 for a Gaussian law): then lambda_C is the geometric-mean growth over
    `window` steps from a uniform tangent, (<D_window> / <D_0>)^(1/window), what a population of
    units measures over that window (population.tangent_growth)."""
    hpn, w = _rule(hp, fp)
    if hp.cell == "lstm":
        a, k, c, d = lstm_tangent_entries(hp, fp, r_in)
        m_1 = _avg(a, w) + _avg(k, w) * _avg(c, w)
        if w.size == 1:
            a, k, c, d = (v[..., 0] for v in (a, k, c, d))
            tr = a + c * k + d
            return m_1, 0.5 * (tr + np.sqrt(np.maximum(tr ** 2 - 4 * a * d, 0)))
        d_s = d_h = np.ones(np.broadcast_shapes(*(np.shape(v) for v in (a, k, c, d))))
        log_growth = 0.0
        for _ in range(window):
            norm = _avg(d_s + d_h, w)
            field = _lift(_avg(d_h, w))
            d_s = a * d_s + k * field
            d_h = c * d_s + d * field
            new = _avg(d_s + d_h, w)
            log_growth = log_growth + np.log(new / norm)
            d_s, d_h = d_s / _lift(new), d_h / _lift(new)
        return m_1, np.exp(log_growth / window)
    t = _gru_tangent_terms(hp, fp, r_in)
    m_1 = _avg(t["a"] + t["field"], w)
    if "rh" in t:
        m_1 = m_1 + _avg(t["rh"], w) * _avg(t["r2"], w)
    if w.size == 1:
        return m_1, m_1
    dd = np.ones(np.broadcast_shapes(*(np.shape(v) for v in t.values())))
    log_growth = 0.0
    for _ in range(window):
        norm = _avg(dd, w)
        grow = t["field"] * _lift(norm)
        if "rh" in t:
            grow = grow + t["rh"] * _lift(_avg(t["r2"] * dd, w))
        dd = t["a"] * dd + grow
        new = _avg(dd, w)
        log_growth = log_growth + np.log(new / norm)
        dd = dd / _lift(new)
    return m_1, np.exp(log_growth / window)


def xi(lam: Array) -> Array:
    """Time scale of a linearized map with leading eigenvalue lam, eq. (T14): xi = -1 / ln |lam|
    (inf where |lam| >= 1: no decay)."""
    lam = np.abs(np.asarray(lam, float))
    with np.errstate(divide="ignore"):
        return np.where(lam < 1, -1.0 / np.log(np.where(lam < 1, lam, 0.5)), np.inf)


# ----------------------------------------------------------------------------- xi_Q
def _length_map(hp: Hyper, w: Array, state: list[Array], r: Array) -> list[Array]:
    """The single-sequence map on the per-unit state: GRU (M_h, Q_h), LSTM (M_s, Q_s, Q_h); the
    fields see the population length <Q_h>."""
    q_bar = _lift(_avg(state[-1], w))
    if hp.cell == "lstm":
        return list(_lstm_unit(hp, state[0], state[1], q_bar, r))
    return list(_gru_unit(hp, w, state[0], state[1], q_bar, r))


def length_slope(hp: Hyper, fp: FixedPoint, r_in: Array, h: float = 1e-7, window: int = WINDOW) -> Array:
    """Leading eigenvalue of the single-sequence map linearized at the fixed point, among the modes
    that move the population's Q_h (xi_Q, eq. (T14)); by forward differences of the per-unit map
    (state (M_h, Q_h) per unit for the GRU, (M_s, Q_s, Q_h) for the LSTM), every unit's coordinate
    perturbed in turn. A mode invisible in Q_h (e.g. the mean's, when the candidate bias is zero)
    does not set the length's time scale. Cost: 1 + d K map evaluations for K nodes."""
    hpn, w = _rule(hp, fp)
    r = _lift(r_in)
    if hp.cell == "lstm":
        x0 = [fp.unit["m_s"], fp.unit["q_s"], fp.unit["q_h"]]
    else:
        x0 = [fp.unit["m_h"], fp.unit["q_h"]]
    d, k = len(x0), w.size
    shape = np.broadcast_shapes(*(np.shape(v) for v in x0))
    x0 = [np.broadcast_to(v, shape) for v in x0]
    base = _length_map(hpn, w, x0, r)
    jac = np.zeros(shape[:-1] + (d * k, d * k))
    for i in range(d):
        for j in range(k):
            x = [v.copy() for v in x0]
            x[i][..., j] += h
            out = _length_map(hpn, w, x, r)
            for c in range(d):
                jac[..., c * k:(c + 1) * k, i * k + j] = (np.broadcast_to(out[c], shape) - np.broadcast_to(base[c], shape)) / h
    if k == 1:
        lam, vec = np.linalg.eig(jac)
        # visible: the eigenvector moves the population Q_h
        visible = np.abs(vec[..., d - 1, :]) > 1e-6
        return np.max(np.where(visible, np.abs(lam), 0.0), axis=-1)
    # A bias spread: the relaxation after every unit's second moments are raised in proportion,
    # averaged over `window` steps (as in slope_c).
    delta = np.concatenate([np.zeros(shape)] * (d - 2) + [np.broadcast_to(v, shape) for v in x0[d - 2:]], -1)
    delta = np.where(np.abs(delta).sum(-1, keepdims=True) > 0, delta, 1.0)  # a zero state: raise it uniformly
    log_growth = 0.0
    for _ in range(window):
        new = np.einsum("...ij,...j->...i", jac, delta)
        size = np.maximum(np.abs(new).sum(-1), 1e-300)
        log_growth = log_growth + np.log(size / np.abs(delta).sum(-1))
        delta = new / size[..., None]
    return np.exp(log_growth / window)


# ----------------------------------------------------------------------------- two-sequence maps
def _biv(hp: Hyper, k: str, q_a, q_b, c, r_a, r_b, r_ab, n: int = N2):
    """Points of gate k's pre-activations for the two sequences, eq. (T3) (population q, c lifted)."""
    g = hp.g(k)
    return bivariate_points(g.mu, g.mu, hp.var(k, q_a, r_a), hp.var(k, q_b, r_b),
                            g.sigma ** 2 * c + g.nu ** 2 * r_ab + g.rho ** 2, n)


@dataclass
class TwoState:
    """Per-unit moments of two sequences' states (node axis last): h (both cells) and, for the LSTM,
    the cell state s."""

    m_a: Array
    q_a: Array
    m_b: Array
    q_b: Array
    c: Array
    ms_a: Array = 0.0  # LSTM: cell-state means, second moments and overlap
    qs_a: Array = 0.0
    ms_b: Array = 0.0
    qs_b: Array = 0.0
    cs: Array = 0.0


def two_step(hp: Hyper, w: Array, st: TwoState, r_a: Array, r_b: Array, r_ab: Array) -> TwoState:
    """One step of the joint map of two sequences per unit (eqs. (T5)-(T9) and their overlaps
    (T11)-(T12)); `hp` carries the node axis of the bias law's rule, `w` its weights. The fields see
    population moments; every second moment of a sequence is computed on the same bivariate nodes
    as the overlap, so identical sequences give C = Q to rounding and small differences survive."""
    pop = [_lift(_avg(v, w)) for v in (st.q_a, st.q_b, st.c)]
    ra, rb, rab = (_lift(v) for v in (r_a, r_b, r_ab))
    if hp.cell == "lstm":
        return _lstm_two_step(hp, st, pop, ra, rb, rab)
    za, zb, wq = _biv(hp, "z", *pop, ra, rb, rab)
    za, zb = sig(za), sig(zb)
    e = lambda x: x @ wq  # noqa: E731
    ez_a, ez_b = e(za), e(zb)
    t_a, ta2, t_b, tb2, tab = _candidate_two(hp, w, st, pop, ra, rb, rab)
    q_a = e(za * za) * st.q_a + 2 * e(za * (1 - za)) * t_a * st.m_a + e((1 - za) ** 2) * ta2
    q_b = e(zb * zb) * st.q_b + 2 * e(zb * (1 - zb)) * t_b * st.m_b + e((1 - zb) ** 2) * tb2
    c = (e(za * zb) * st.c + e(za * (1 - zb)) * st.m_a * t_b + e((1 - za) * zb) * t_a * st.m_b
         + e((1 - za) * (1 - zb)) * tab)
    return TwoState(m_a=ez_a * st.m_a + (1 - ez_a) * t_a, q_a=q_a, m_b=ez_b * st.m_b + (1 - ez_b) * t_b,
                    q_b=q_b, c=c)


def _candidate_two(hp: Hyper, w: Array, st: TwoState, pop, r_a, r_b, r_ab):
    """<tanh>, <tanh^2> per sequence and E[tanh(u_n,a) tanh(u_n,b)] per unit, for either GRU form."""
    gn = hp.g("n")
    ra, rb, wq = _biv(hp, "r", *pop, r_a, r_b, r_ab)
    ra, rb = sig(ra), sig(rb)
    if hp.cell == "gru_reset_before":  # eq. (T4): U_n sees r * h, population moments
        e = lambda x: x @ wq  # noqa: E731
        rh = [_lift(_avg(e(x) * y, w)) for x, y in ((ra * ra, st.q_a), (rb * rb, st.q_b), (ra * rb, st.c))]
        va = gn.sigma ** 2 * rh[0] + gn.nu ** 2 * r_a + gn.rho ** 2
        vb = gn.sigma ** 2 * rh[1] + gn.nu ** 2 * r_b + gn.rho ** 2
        cv = gn.sigma ** 2 * rh[2] + gn.nu ** 2 * r_ab + gn.rho ** 2
        ua, ub, w2 = bivariate_points(gn.mu, gn.mu, va, vb, cv)
        ta, tb = np.tanh(ua), np.tanh(ub)
        return ta @ w2, (ta * ta) @ w2, tb @ w2, (tb * tb) @ w2, (ta * tb) @ w2
    # reset-after, eq. (T13): given (r_a, r_b), (u_n,a, u_n,b) is bivariate normal
    q_a, q_b, c = pop
    base_a, base_b, base_ab = (gn.nu ** 2 * r_a + gn.rho ** 2, gn.nu ** 2 * r_b + gn.rho ** 2,
                               gn.nu ** 2 * r_ab + gn.rho ** 2)
    add = lambda b, x: np.asarray(b, float)[..., None] + x  # noqa: E731
    va = add(base_a, ra ** 2 * np.asarray(gn.sigma ** 2 * q_a)[..., None])
    vb = add(base_b, rb ** 2 * np.asarray(gn.sigma ** 2 * q_b)[..., None])
    cv = add(base_ab, ra * rb * np.asarray(gn.sigma ** 2 * c)[..., None])
    mu = np.asarray(gn.mu, float)[..., None]
    ua, ub, w2 = bivariate_points(mu, mu, va, vb, cv, n=16)  # (..., n_r^2, 16^2)
    ta, tb = np.tanh(ua), np.tanh(ub)
    return ((ta @ w2) @ wq, ((ta * ta) @ w2) @ wq, (tb @ w2) @ wq, ((tb * tb) @ w2) @ wq, ((ta * tb) @ w2) @ wq)


def _lstm_two_step(hp: Hyper, st: TwoState, pop, r_a, r_b, r_ab) -> TwoState:
    """LSTM joint map per unit: cell-state moments exactly, h through the Gaussian closure."""
    args = (*pop, r_a, r_b, r_ab)
    out = {}
    for k in ("i", "f", "o"):
        ua, ub, wq = _biv(hp, k, *args)
        sa, sb = sig(ua), sig(ub)
        out[k] = (sa @ wq, sb @ wq, (sa * sa) @ wq, (sb * sb) @ wq, (sa * sb) @ wq)
    ua, ub, wq = _biv(hp, "g", *args)
    ta, tb = np.tanh(ua), np.tanh(ub)
    g = (ta @ wq, tb @ wq, (ta * ta) @ wq, (tb * tb) @ wq, (ta * tb) @ wq)
    (fa, fb, fa2, fb2, fab), (ia, ib, ia2, ib2, iab) = out["f"], out["i"]
    ms_a = fa * st.ms_a + ia * g[0]
    ms_b = fb * st.ms_b + ib * g[1]
    qs_a = fa2 * st.qs_a + 2 * fa * ia * g[0] * st.ms_a + ia2 * g[2]
    qs_b = fb2 * st.qs_b + 2 * fb * ib * g[1] * st.ms_b + ib2 * g[3]
    cs = fab * st.cs + fa * ib * g[1] * st.ms_a + ia * g[0] * fb * st.ms_b + iab * g[4]
    sa, sb, w2 = bivariate_points(ms_a, ms_b, np.maximum(qs_a - ms_a ** 2, 0), np.maximum(qs_b - ms_b ** 2, 0),
                                  cs - ms_a * ms_b)
    ta, tb = np.tanh(sa), np.tanh(sb)
    oa2, ob2, oab = out["o"][2], out["o"][3], out["o"][4]
    return TwoState(m_a=0.0, q_a=oa2 * ((ta * ta) @ w2), m_b=0.0, q_b=ob2 * ((tb * tb) @ w2),
                    c=oab * ((ta * tb) @ w2), ms_a=ms_a, qs_a=qs_a, ms_b=ms_b, qs_b=qs_b, cs=cs)


def trajectory(hp: Hyper, steps: int, split: int, r_in: Array,
               inputs: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None) -> dict[str, Array]:
    """Two sequences from the zero state, inputs independent (overlap 0) for t <= split and identical
    after: population t, Q_h of both sequences, C_h, d_h = (Q_a + Q_b)/2 - C_h and, for the LSTM,
    Q_s and C_s, at t = 0..T, for any bias law.

    `inputs` = (R_a, R_b, R_ab), each of length `steps`, replaces the scenario by given per-step input
    moments (|x_a|^2/n, |x_b|^2/n, x_a.x_b/n: real task sequences). Hyperparameters (and r_in) may be
    arrays (a grid): every output is then (T+1, *grid)."""
    hpn, w = unit_rule(hp)
    zero = np.zeros(np.broadcast_shapes(hpn.shape(), np.shape(r_in) + (1,)))
    st = TwoState(*(zero for _ in range(5)), *(zero for _ in range(5)))
    rows = [st]
    for t in range(1, steps + 1):
        if inputs is None:
            r_a = r_b = r_in
            r_ab = 0.0 if t <= split else r_in
        else:
            r_a, r_b, r_ab = (float(v[t - 1]) for v in inputs)
        st = two_step(hpn, w, st, r_a, r_b, r_ab)
        rows.append(st)
    shape = np.broadcast_shapes(*(np.shape(v) for v in (rows[-1].q_a, rows[-1].q_b, rows[-1].c)))[:-1]
    col = lambda name: np.stack([np.broadcast_to(_avg(getattr(r, name), w), shape)  # noqa: E731
                                 for r in rows])
    out = {"t": np.arange(steps + 1), "q_h_a": col("q_a"), "q_h_b": col("q_b"), "c_h": col("c")}
    out["d_h"] = np.stack([np.broadcast_to(_avg((np.asarray(r.q_a) + np.asarray(r.q_b)) / 2 - np.asarray(r.c), w), shape)
                           for r in rows])
    if hp.cell == "lstm":
        out["q_s_a"] = col("qs_a")
        out["c_s"] = col("cs")
    return out


def one_minus_c(traj: dict) -> Array:
    """1 - C/Q of a two-sequence trajectory (any solver's), C/Q = C_h / sqrt(Q_a Q_b): from the
    distance d_h where the solver gives it (no cancellation when the sequences nearly agree)."""
    q = np.sqrt(np.maximum(traj["q_h_a"] * traj["q_h_b"], 1e-300))
    return traj["d_h"] / q if "d_h" in traj else 1 - traj["c_h"] / q


def memory_horizon(distance: Array, split: int, eps: float) -> Array:
    """Steps after the split until the two sequences can no longer be told apart, eq. (T29): the first
    tau >= 1 with D(split + tau) < eps * D(split), D the distance of the two states (d_h); NaN where
    that never happens within the trajectory (the horizon is then longer than T - split) or where D
    is 0 at the split. distance: (T+1, *grid), index = step. Does not assume exponential decay."""
    d = np.asarray(distance, float)
    if not 0 <= split < d.shape[0]:
        raise ValueError(f"split={split} must be a step of the trajectory (0..{d.shape[0] - 1})")
    at_split = d[split]
    after = d[split + 1:]
    with np.errstate(invalid="ignore"):
        below = after < eps * at_split  # (T - split, *grid)
    found = below.any(axis=0) & (at_split > 0)
    tau = np.argmax(below, axis=0) + 1.0
    return np.where(found, tau, np.nan)
