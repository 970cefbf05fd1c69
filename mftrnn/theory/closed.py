"""Closed-form mean field (Gauss–Hermite): per-step maps, fixed points, time scales, m_1.

Cells: "lstm" (nn.LSTM: gates i, f, g, o), "gru" (nn.GRU, reset-after: r, z, n) and
"gru_reset_before" (the paper's form: n = tanh(W_n x + U_n (r * h) + b_n)). Hyperparameters per
gate k: bias mean mu, bias std rho, recurrent scale sigma, input scale nu (docs/theory.md §1).
Every hyperparameter and state may be an array: all maps broadcast, so one call runs a grid.

Exactness (docs/theory.md §2): under untied weights the GRU maps are exact for rho = 0. The LSTM
maps close the non-Gaussian cell state with a Gaussian of the same mean and variance (eq. (T9)),
and rho > 0 enters only as extra pre-activation variance (eq. (T3)); both are approximations,
whose exact counterpart is the population solver (mftrnn/theory/population.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import numpy as np

from mftrnn.theory.quadrature import bivariate_points, dsig, dtanh, expect_many, gaussian_points, sig

Array = np.ndarray
CELLS = ("lstm", "gru", "gru_reset_before")
GATES = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"), "gru_reset_before": ("r", "z", "n")}
N1, N2 = 48, 16  # Gauss–Hermite nodes: 1-D rules, and per axis of 2-D rules


@dataclass
class Gate:
    """One gate's hyperparameters (floats or broadcastable arrays)."""

    mu: Array = 0.0
    rho: Array = 0.0
    sigma: Array = 1.0
    nu: Array = 1.0


@dataclass
class Hyper:
    """A cell and its per-gate hyperparameters; `orthogonal` recurrent weights change only m_2 and
    the spectra, not the forward maps (docs/theory.md §3)."""

    cell: str
    gates: dict[str, Gate]
    orthogonal: bool = False

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        missing = set(GATES[self.cell]) - set(self.gates)
        if missing:
            raise ValueError(f"{self.cell} needs gates {GATES[self.cell]}; missing {sorted(missing)}")

    def g(self, k: str) -> Gate:
        return self.gates[k]

    def var(self, k: str, q: Array, r: Array) -> Array:
        """Pre-activation variance of gate k, eq. (T3): sigma^2 Q + nu^2 R + rho^2."""
        g = self.gates[k]
        return g.sigma ** 2 * q + g.nu ** 2 * r + g.rho ** 2

    def with_gate(self, k: str, **kw) -> "Hyper":
        gates = dict(self.gates)
        gates[k] = replace(gates[k], **kw)
        return replace(self, gates=gates)


@dataclass
class FixedPoint:
    """Stationary single-sequence moments (eq. (T6)/(T10)) and the derived quantities."""

    q_h: Array
    m_h: Array  # mean of h (GRU) ; LSTM: unused (0)
    q_s: Array = field(default_factory=lambda: np.array(np.nan))  # LSTM cell state second moment
    m_s: Array = field(default_factory=lambda: np.array(np.nan))


# ----------------------------------------------------------------------------- gate moments
def _moments(f_list: list[Callable[[Array], Array]], mean: Array, var: Array, n: int = N1) -> list[Array]:
    return expect_many(f_list, mean, var, n)


def _sig_moments(hp: Hyper, k: str, q: Array, r: Array):
    """<s>, <s^2>, <s'^2> of s = sigmoid(u_k), u_k ~ N(mu_k, var_k)."""
    return _moments([sig, lambda u: sig(u) ** 2, lambda u: dsig(u) ** 2], hp.g(k).mu, hp.var(k, q, r))


def _tanh_moments(mean: Array, var: Array):
    """<tanh>, <tanh^2>, <tanh'^2> under N(mean, var)."""
    return _moments([np.tanh, lambda u: np.tanh(u) ** 2, lambda u: dtanh(u) ** 2], mean, var)


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
    """Moments of the reset-after candidate u_n = a + r g, eq. (T13): a ~ N(mu_n, nu_n^2 R + rho_n^2),
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
    mu_n = np.broadcast_to(np.asarray(gn.mu, float)[..., None], np.broadcast_shapes(v_a.shape, v_g.shape, (_K,)))
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


def _candidate(hp: Hyper, q: Array, r_in: Array):
    """<tanh>_n and <tanh^2>_n of the GRU candidate for either form."""
    gn = hp.g("n")
    if hp.cell == "gru":
        return _reset_after_candidate(hp, q, r_in, full=False)
    _, r2, _ = _sig_moments(hp, "r", q, r_in)
    # reset-before, eq. (T4): U_n sees r * h, whose second moment is <r^2> Q under untied weights
    t, t2, _ = _tanh_moments(gn.mu, gn.sigma ** 2 * r2 * q + gn.nu ** 2 * r_in + gn.rho ** 2)
    return t, t2


# ----------------------------------------------------------------------------- single-sequence maps
def gru_step(hp: Hyper, m: Array, q: Array, r_in: Array) -> tuple[Array, Array]:
    """One step of the GRU length map, eq. (T5): (M_h, Q_h) -> (M_h', Q_h')."""
    ez, ez2, _ = _sig_moments(hp, "z", q, r_in)
    t, t2 = _candidate(hp, q, r_in)
    m_new = ez * m + (1 - ez) * t
    q_new = ez2 * q + 2 * (ez - ez2) * t * m + (1 - 2 * ez + ez2) * t2
    return m_new, q_new


def lstm_step(hp: Hyper, m_s: Array, q_s: Array, q_h: Array, r_in: Array) -> tuple[Array, Array, Array]:
    """One step of the LSTM length map, eqs. (T8)-(T9): (M_s, Q_s, Q_h) -> (M_s', Q_s', Q_h'),
    with the Gaussian closure s ~ N(M_s, Q_s - M_s^2) for E[tanh(s)^2]."""
    fi, fi2, _ = _sig_moments(hp, "i", q_h, r_in)
    ff, ff2, _ = _sig_moments(hp, "f", q_h, r_in)
    _, fo2, _ = _sig_moments(hp, "o", q_h, r_in)
    tg, tg2, _ = _tanh_moments(hp.g("g").mu, hp.var("g", q_h, r_in))
    m_new = ff * m_s + fi * tg
    q_s_new = ff2 * q_s + 2 * ff * fi * tg * m_s + fi2 * tg2
    _, ts2, _ = _tanh_moments(m_new, np.maximum(q_s_new - m_new ** 2, 0))
    return m_new, q_s_new, fo2 * ts2


# ----------------------------------------------------------------------------- fixed points
def _phi(hp: Hyper, q: Array, r_in: Array) -> tuple[Array, FixedPoint]:
    """Q -> Phi(Q): the stationary Q_h implied by pre-activations of length Q (means solved exactly)."""
    if hp.cell == "lstm":
        fi, fi2, _ = _sig_moments(hp, "i", q, r_in)
        ff, ff2, _ = _sig_moments(hp, "f", q, r_in)
        _, fo2, _ = _sig_moments(hp, "o", q, r_in)
        tg, tg2, _ = _tanh_moments(hp.g("g").mu, hp.var("g", q, r_in))
        m_s = fi * tg / np.maximum(1 - ff, 1e-300)
        q_s = (fi2 * tg2 + 2 * ff * fi * tg * m_s) / np.maximum(1 - ff2, 1e-300)
        _, ts2, _ = _tanh_moments(m_s, np.maximum(q_s - m_s ** 2, 0))
        return fo2 * ts2, FixedPoint(q_h=q, m_h=np.zeros_like(q), q_s=q_s, m_s=m_s)
    ez, ez2, _ = _sig_moments(hp, "z", q, r_in)
    t, t2 = _candidate(hp, q, r_in)
    m = t  # M* = <1-z> <tanh> / (1 - <z>) = <tanh>_n
    q_new = (2 * (ez - ez2) * t * m + (1 - 2 * ez + ez2) * t2) / np.maximum(1 - ez2, 1e-300)
    return q_new, FixedPoint(q_h=q, m_h=m)


def _flat(hp: Hyper, r_in: Array) -> tuple[Hyper, Array, tuple]:
    """Broadcast every hyperparameter and R to one shape and flatten it, so subsets can be taken."""
    shape = np.broadcast_shapes(np.shape(r_in), *(np.shape(getattr(g, a)) for g in hp.gates.values()
                                                   for a in ("mu", "rho", "sigma", "nu")))
    flat = lambda v: np.broadcast_to(np.asarray(v, float), shape).reshape(-1)  # noqa: E731
    gates = {k: Gate(*(flat(getattr(g, a)) for a in ("mu", "rho", "sigma", "nu"))) for k, g in hp.gates.items()}
    return replace(hp, gates=gates), flat(r_in), shape


def _take(hp: Hyper, idx: Array) -> Hyper:
    return replace(hp, gates={k: Gate(g.mu[idx], g.rho[idx], g.sigma[idx], g.nu[idx]) for k, g in hp.gates.items()})


def fixed_point(hp: Hyper, r_in: Array = 0.0, tol: float = 1e-11, max_iter: int = 100) -> FixedPoint:
    """The stable fixed point Q_h* of the length map, eq. (T6)/(T10), vectorized over hyperparameters.

    Solves Phi(Q) = Q on [0, 1] (|h| <= 1) by the Illinois variant of regula falsi, each iteration
    on the points not yet converged. Where Q = 0 is a fixed point (no input, no bias spread, zero
    candidate bias), the non-zero one is taken if it exists (Phi(Q) > Q just above 0: the chaotic
    side), else Q* = 0 (the ordered side).
    """
    fhp, r, shape = _flat(hp, r_in)
    g = lambda idx, x: _phi(_take(fhp, idx), x, r[idx])[0] - x  # noqa: E731
    n = r.size
    everything = np.arange(n)
    lo, hi = np.zeros(n), np.ones(n)
    g_lo = g(everything, lo)
    trivial = g_lo <= 1e-15
    lo[trivial] = 1e-10
    g_lo[trivial] = g(everything[trivial], lo[trivial])
    zero = trivial & (g_lo <= 0)
    g_hi = g(everything, hi)
    # Safeguarded secant: the first step uses a forward-difference slope, later steps the secant
    # through the last two iterates; a step that leaves the bracket is replaced by bisection.
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
        right = gx > 0  # root lies right of x
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
    return _phi(hp, q, np.asarray(r_in, float))[1]


# ----------------------------------------------------------------------------- two-sequence maps
def _biv(hp: Hyper, k: str, q_a, q_b, c, r_a, r_b, r_ab, n: int = N2):
    """Points of gate k's pre-activations for the two sequences, eq. (T3)."""
    g = hp.g(k)
    return bivariate_points(g.mu, g.mu, hp.var(k, q_a, r_a), hp.var(k, q_b, r_b),
                            g.sigma ** 2 * c + g.nu ** 2 * r_ab + g.rho ** 2, n)


@dataclass
class TwoState:
    """Moments of two sequences' states: h (both cells) and, for the LSTM, the cell state s."""

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


def two_step(hp: Hyper, st: TwoState, r_a: Array, r_b: Array, r_ab: Array) -> TwoState:
    """One step of the joint map of two sequences (eqs. (T5)-(T9) and their overlaps (T11)-(T12)).

    Every second moment of a sequence is computed on the same bivariate nodes as the overlap, so
    that identical sequences give C = Q to rounding and small differences survive.
    """
    if hp.cell == "lstm":
        return _lstm_two_step(hp, st, r_a, r_b, r_ab)
    za, zb, w = _biv(hp, "z", st.q_a, st.q_b, st.c, r_a, r_b, r_ab)
    za, zb = sig(za), sig(zb)
    e = lambda x: x @ w  # noqa: E731
    ez_a, ez_b = e(za), e(zb)
    t_a, ta2, t_b, tb2, tab = _candidate_two(hp, st, r_a, r_b, r_ab)
    q_a = e(za * za) * st.q_a + 2 * e(za * (1 - za)) * t_a * st.m_a + e((1 - za) ** 2) * ta2
    q_b = e(zb * zb) * st.q_b + 2 * e(zb * (1 - zb)) * t_b * st.m_b + e((1 - zb) ** 2) * tb2
    c = (e(za * zb) * st.c + e(za * (1 - zb)) * st.m_a * t_b + e((1 - za) * zb) * t_a * st.m_b
         + e((1 - za) * (1 - zb)) * tab)
    return TwoState(m_a=ez_a * st.m_a + (1 - ez_a) * t_a, q_a=q_a, m_b=ez_b * st.m_b + (1 - ez_b) * t_b,
                    q_b=q_b, c=c)


def _candidate_two(hp: Hyper, st: TwoState, r_a, r_b, r_ab):
    """<tanh>, <tanh^2> per sequence and E[tanh(u_n,a) tanh(u_n,b)] for either GRU form."""
    gn = hp.g("n")
    ra, rb, w = _biv(hp, "r", st.q_a, st.q_b, st.c, r_a, r_b, r_ab)
    ra, rb = sig(ra), sig(rb)
    if hp.cell == "gru_reset_before":  # eq. (T4): U_n sees r * h
        e = lambda x: x @ w  # noqa: E731
        va = gn.sigma ** 2 * e(ra * ra) * st.q_a + gn.nu ** 2 * r_a + gn.rho ** 2
        vb = gn.sigma ** 2 * e(rb * rb) * st.q_b + gn.nu ** 2 * r_b + gn.rho ** 2
        cv = gn.sigma ** 2 * e(ra * rb) * st.c + gn.nu ** 2 * r_ab + gn.rho ** 2
        ua, ub, w2 = bivariate_points(gn.mu, gn.mu, va, vb, cv)
        ta, tb = np.tanh(ua), np.tanh(ub)
        return ta @ w2, (ta * ta) @ w2, tb @ w2, (tb * tb) @ w2, (ta * tb) @ w2
    # reset-after, eq. (T13): given (r_a, r_b), (u_n,a, u_n,b) is bivariate normal
    base_a, base_b, base_ab = (gn.nu ** 2 * r_a + gn.rho ** 2, gn.nu ** 2 * r_b + gn.rho ** 2, gn.nu ** 2 * r_ab + gn.rho ** 2)
    add = lambda b, x: np.asarray(b, float)[..., None] + x  # noqa: E731
    va = add(base_a, ra ** 2 * np.asarray(gn.sigma ** 2 * st.q_a)[..., None])
    vb = add(base_b, rb ** 2 * np.asarray(gn.sigma ** 2 * st.q_b)[..., None])
    cv = add(base_ab, ra * rb * np.asarray(gn.sigma ** 2 * st.c)[..., None])
    mu = np.asarray(gn.mu, float)[..., None]
    ua, ub, w2 = bivariate_points(mu, mu, va, vb, cv, n=16)  # (..., n_r^2, 16^2)
    ta, tb = np.tanh(ua), np.tanh(ub)
    return ((ta @ w2) @ w, ((ta * ta) @ w2) @ w, (tb @ w2) @ w, ((tb * tb) @ w2) @ w, ((ta * tb) @ w2) @ w)


def _lstm_two_step(hp: Hyper, st: TwoState, r_a, r_b, r_ab) -> TwoState:
    """LSTM joint map: cell-state moments exactly (untied, rho = 0), h through the Gaussian closure."""
    args = (st.q_a, st.q_b, st.c, r_a, r_b, r_ab)
    out = {}
    for k in ("i", "f", "o"):
        ua, ub, w = _biv(hp, k, *args)
        sa, sb = sig(ua), sig(ub)
        out[k] = (sa @ w, sb @ w, (sa * sa) @ w, (sb * sb) @ w, (sa * sb) @ w)
    ua, ub, w = _biv(hp, "g", *args)
    ta, tb = np.tanh(ua), np.tanh(ub)
    g = (ta @ w, tb @ w, (ta * ta) @ w, (tb * tb) @ w, (ta * tb) @ w)
    (fa, fb, fa2, fb2, fab), (ia, ib, ia2, ib2, iab) = out["f"], out["i"]
    ms_a = fa * st.ms_a + ia * g[0]
    ms_b = fb * st.ms_b + ib * g[1]
    qs_a = fa2 * st.qs_a + 2 * fa * ia * g[0] * st.ms_a + ia2 * g[2]
    qs_b = fb2 * st.qs_b + 2 * fb * ib * g[1] * st.ms_b + ib2 * g[3]
    cs = fab * st.cs + fa * ib * g[1] * st.ms_a + ia * g[0] * fb * st.ms_b + iab * g[4]
    sa, sb, w = bivariate_points(ms_a, ms_b, np.maximum(qs_a - ms_a ** 2, 0), np.maximum(qs_b - ms_b ** 2, 0),
                                 cs - ms_a * ms_b)
    ta, tb = np.tanh(sa), np.tanh(sb)
    oa2, ob2, oab = out["o"][2], out["o"][3], out["o"][4]
    return TwoState(m_a=0.0, q_a=oa2 * ((ta * ta) @ w), m_b=0.0, q_b=ob2 * ((tb * tb) @ w),
                    c=oab * ((ta * tb) @ w), ms_a=ms_a, qs_a=qs_a, ms_b=ms_b, qs_b=qs_b, cs=cs)


def trajectory(hp: Hyper, steps: int, split: int, r_in: Array,
               inputs: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None) -> dict[str, Array]:
    """The two-sequence scenario from the zero state: inputs independent (overlap 0) for t <= split,
    identical after; returns t, Q_h (both sequences), C_h and, for the LSTM, Q_s and C_s, t = 0..T.

    `inputs` = (R_a, R_b, R_ab), each of length `steps`, replaces the scenario by given per-step input
    moments (|x_a|^2/n, |x_b|^2/n, x_a.x_b/n: real task sequences). Hyperparameters (and r_in) may be
    arrays (a grid): every output is then (T+1, *grid)."""
    st = TwoState(*(np.zeros(()) for _ in range(5)))
    rows = [st]
    for t in range(1, steps + 1):
        if inputs is None:
            r_a = r_b = r_in
            r_ab = 0.0 if t <= split else r_in
        else:
            r_a, r_b, r_ab = (float(v[t - 1]) for v in inputs)
        st = two_step(hp, st, r_a, r_b, r_ab)
        rows.append(st)
    shape = np.broadcast_shapes(*(np.shape(v) for v in (rows[-1].q_a, rows[-1].q_b, rows[-1].c)))
    col = lambda name: np.stack([np.broadcast_to(np.asarray(getattr(r, name), float), shape) for r in rows])  # noqa: E731
    out = {"t": np.arange(steps + 1), "q_h_a": col("q_a"), "q_h_b": col("q_b"), "c_h": col("c")}
    if hp.cell == "lstm":
        out["q_s_a"] = col("qs_a")
        out["c_s"] = col("cs")
    return out


def one_minus_c(traj: dict) -> Array:
    """1 - C/Q of a two-sequence trajectory (any solver's), C/Q = C_h / sqrt(Q_a Q_b): from d_h where
    the solver gives it (the population solvers: no cancellation when the sequences nearly agree)."""
    q = np.sqrt(np.maximum(traj["q_h_a"] * traj["q_h_b"], 1e-300))
    return traj["d_h"] / q if "d_h" in traj else 1 - traj["c_h"] / q


def memory_horizon(one_minus_c: Array, split: int, eps: float) -> Array:
    """Steps after the split until the two sequences can no longer be told apart: the first
    tau >= 1 with (1 - C/Q)(split + tau) < eps * (1 - C/Q)(split), eq. (T29); NaN where that never
    happens within the trajectory (the horizon is then longer than T - split) or where 1 - C/Q is
    0 at the split. one_minus_c: (T+1, *grid), index = step. Does not assume exponential decay."""
    d = np.asarray(one_minus_c, float)
    if not 0 <= split < d.shape[0]:
        raise ValueError(f"split={split} must be a step of the trajectory (0..{d.shape[0] - 1})")
    at_split = d[split]
    after = d[split + 1:]
    with np.errstate(invalid="ignore"):
        below = after < eps * at_split  # (T - split, *grid)
    found = below.any(axis=0) & (at_split > 0)
    tau = np.argmax(below, axis=0) + 1.0
    return np.where(found, tau, np.nan)


# ----------------------------------------------------------------------------- time scales and m_1
def m1(hp: Hyper, fp: FixedPoint, r_in: Array) -> Array:
    """m_1 = (1/n) E tr(J J^T) of the one-step Jacobian at the fixed point.

    GRU reset-before: eq. (T15); GRU reset-after: eq. (T16); LSTM: lambda_max of the 2x2 mean-square
    map on (ds, dh), eq. (T17), which equals (1/n) E tr(J J^T) of the effective cell-state Jacobian
    when sigma_o = 0 (docs/theory.md §4.1).
    """
    q = fp.q_h
    if hp.cell == "lstm":
        a, k, c, d = lstm_mean_square_entries(hp, fp, r_in)
        tr = a + c * k + d
        return 0.5 * (tr + np.sqrt(np.maximum(tr ** 2 - 4 * a * d, 0)))
    gz, gn, gr = hp.g("z"), hp.g("n"), hp.g("r")
    _, ez2, ezd2 = _sig_moments(hp, "z", q, r_in)
    t, t2 = _candidate(hp, q, r_in)
    one_minus_z2 = _moments([lambda u: (1 - sig(u)) ** 2], gz.mu, hp.var("z", q, r_in))[0]
    base = ez2 + gz.sigma ** 2 * ezd2 * (q - 2 * fp.m_h * t + t2)
    if hp.cell == "gru_reset_before":
        _, er2, erd2 = _sig_moments(hp, "r", q, r_in)
        _, _, td2 = _tanh_moments(gn.mu, gn.sigma ** 2 * er2 * q + gn.nu ** 2 * r_in + gn.rho ** 2)
        return base + one_minus_z2 * gn.sigma ** 2 * td2 * (er2 + gr.sigma ** 2 * erd2 * q)
    _, _, er2d2, reset_path = _reset_after_candidate(hp, q, r_in)
    return base + one_minus_z2 * (gn.sigma ** 2 * er2d2 + gr.sigma ** 2 * reset_path)


def lstm_mean_square_entries(hp: Hyper, fp: FixedPoint, r_in: Array):
    """(a, K, c, d) of the LSTM's mean-square tangent map, eq. (T17), at the fixed point (closure)."""
    q = fp.q_h
    _, fi2, fid2 = _sig_moments(hp, "i", q, r_in)
    _, ff2, ffd2 = _sig_moments(hp, "f", q, r_in)
    _, fo2, fod2 = _sig_moments(hp, "o", q, r_in)
    _, tg2, tgd2 = _tanh_moments(hp.g("g").mu, hp.var("g", q, r_in))
    _, ts2, tsd2 = _tanh_moments(fp.m_s, np.maximum(fp.q_s - fp.m_s ** 2, 0))
    s = {k: hp.g(k).sigma ** 2 for k in "ifgo"}
    k = s["f"] * ffd2 * fp.q_s + s["i"] * fid2 * tg2 + s["g"] * fi2 * tgd2
    return ff2, k, fo2 * tsd2, s["o"] * fod2 * ts2


def xi(lam: Array) -> Array:
    """Time scale of a linearized map with leading eigenvalue lam, eq. (T14): xi = -1 / ln |lam|
    (inf where |lam| >= 1: no decay)."""
    lam = np.abs(np.asarray(lam, float))
    with np.errstate(divide="ignore"):
        return np.where(lam < 1, -1.0 / np.log(np.where(lam < 1, lam, 0.5)), np.inf)


def length_slope(hp: Hyper, fp: FixedPoint, r_in: Array, h: float = 1e-7) -> Array:
    """Leading eigenvalue of the single-sequence map linearized at the fixed point, among the modes
    that move Q_h (xi_Q, eq. (T14)); by forward differences of the exact map. State (M_h, Q_h) for
    the GRU, (M_s, Q_s, Q_h) for the LSTM. A mode invisible in Q_h (e.g. the mean's, when the
    candidate bias is zero) does not set the length's time scale."""
    if hp.cell == "lstm":
        x0 = [fp.m_s, fp.q_s, fp.q_h]
        step = lambda x: lstm_step(hp, x[0], x[1], x[2], r_in)  # noqa: E731
    elif np.all(np.abs(fp.m_h) < 1e-12):  # <tanh>_n = 0: the mean's mode never reaches Q_h
        dq = np.maximum(1e-7 * fp.q_h, 1e-9)
        return np.abs((gru_step(hp, fp.m_h, fp.q_h + dq, r_in)[1] - gru_step(hp, fp.m_h, fp.q_h, r_in)[1]) / dq)
    else:
        x0 = [fp.m_h, fp.q_h]
        step = lambda x: gru_step(hp, x[0], x[1], r_in)  # noqa: E731
    d = len(x0)
    x0 = [np.asarray(v, float) for v in x0]
    base = step(x0)
    jac = np.zeros(np.broadcast_shapes(*(v.shape for v in x0)) + (d, d))
    for j in range(d):
        fu = step([v + (h if i == j else 0) for i, v in enumerate(x0)])
        for i in range(d):
            jac[..., i, j] = (np.asarray(fu[i]) - np.asarray(base[i])) / h
    lam, vec = np.linalg.eig(jac)
    visible = np.abs(vec[..., d - 1, :]) > 1e-6  # the Q_h component of each right eigenvector
    return np.max(np.where(visible, np.abs(lam), 0.0), axis=-1)
