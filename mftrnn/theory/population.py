"""Population dynamics: the exact untied mean field for any per-unit bias spread (rho > 0) and for
the LSTM's non-Gaussian cell state (docs/theory.md §2.4).

P sampled units carry persistent biases drawn from the init's law (N(mu_k, rho_k^2) per gate, or a
`hyper.BiasLaw`) and their states for two input
sequences a and b. Each step, every gate gets fresh Gaussian fields whose variances and covariance
are read off the population (eq. (T3) without the rho^2 term, which the persistent bias carries):
that is exactly what fresh weights at every step (untied) produce in a wide network. The two
sequences' fields are drawn jointly so that small differences between them survive (eq. (P1)).
Everything runs in torch (float64), on the GPU when one is given.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from mftrnn.theory.hyper import Hyper

Tensor = torch.Tensor


def _scalar_hyper(hp: Hyper) -> dict[str, dict[str, float]]:
    out = {}
    for k, g in hp.gates.items():
        vals = {a: np.asarray(getattr(g, a), float) for a in ("mu", "rho", "sigma", "nu")}
        if any(v.size != 1 for v in vals.values()):
            raise ValueError("the population solver takes scalar hyperparameters (use the closed forms for grids)")
        out[k] = {a: float(v) for a, v in vals.items()}
    return out


@dataclass
class Stats:
    """Second moments of what a recurrent matrix sees, for both sequences: |v_a|^2/n, |v_b|^2/n,
    v_a.v_b/n, and e = |v_a|^2/n - v_a.v_b/n computed from the difference (no cancellation)."""

    q_a: float
    q_b: float
    c: float
    e_a: float
    e_b: float

    @staticmethod
    def of(va: Tensor, vb: Tensor) -> "Stats":
        d = va - vb
        return Stats(float((va * va).mean()), float((vb * vb).mean()), float((va * vb).mean()),
                     float((va * d).mean()), float((-vb * d).mean()))

    def scaled(self, s2: float) -> "Stats":
        return Stats(s2 * self.q_a, s2 * self.q_b, s2 * self.c, s2 * self.e_a, s2 * self.e_b)

    def plus(self, other: "Stats") -> "Stats":
        return Stats(self.q_a + other.q_a, self.q_b + other.q_b, self.c + other.c, self.e_a + other.e_a,
                     self.e_b + other.e_b)


def joint_field(st: Stats, shape: tuple, gen: torch.Generator, device) -> tuple[Tensor, Tensor]:
    """Two zero-mean Gaussian fields with variances q_a, q_b and covariance c, eq. (P1):
    x_a = sqrt(q_a) e1, x_b = (1 - e_a/q_a) x_a + sqrt(det/q_a) e2, det = c (e_a + e_b) + e_a e_b."""
    e1 = torch.randn(shape, generator=gen, device=device, dtype=torch.float64)
    e2 = torch.randn(shape, generator=gen, device=device, dtype=torch.float64)
    if st.q_a <= 0:
        return torch.zeros_like(e1), math.sqrt(max(st.q_b, 0.0)) * e2
    det = max(st.c * (st.e_a + st.e_b) + st.e_a * st.e_b, 0.0)
    xa = math.sqrt(st.q_a) * e1
    return xa, (1 - st.e_a / st.q_a) * xa + math.sqrt(det / st.q_a) * e2


SMALL = 100_000  # units below which one CPU thread is fastest (the ops are too small to split)


def cpu_threads(fn):
    """Run `fn` with one torch thread on the CPU when its population is small. Each step is a chain
    of elementwise ops on (P,) vectors; for P in the thousands, splitting them across threads costs
    more than it saves, and on a shared 2-core machine it cost 20x (0.38 s against 7.7 s for the
    spectrum's 4,000 units)."""
    import functools
    import inspect

    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        bound = sig.bind_partial(*args, **kwargs)
        bound.apply_defaults()
        size = bound.arguments.get("population", SMALL)
        device = bound.arguments.get("device")
        on_cpu = device is None and not torch.cuda.is_available() or str(device).startswith("cpu")
        if not (on_cpu and size < SMALL) or torch.get_num_threads() == 1:
            return fn(*args, **kwargs)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)

    return run


def _inputs(r_a: float, r_b: float, r_ab: float) -> Stats:
    return Stats(r_a, r_b, r_ab, r_a - r_ab, r_b - r_ab)


class PopulationSolver:
    """P units of one cell under untied weights; `step` advances both sequences by one step."""

    def __init__(self, hp: Hyper, population: int = 200_000, seed: int = 0, device: Optional[str] = None) -> None:
        self.cell = hp.cell
        self.p = _scalar_hyper(hp)
        self.n = population
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.gen = torch.Generator(device=self.device).manual_seed(seed)
        shape = (population,)
        self.bias = hp.sample_biases(population, self.gen, self.device)  # any bias law, eq. (T31)
        zeros = lambda: torch.zeros(shape, device=self.device, dtype=torch.float64)  # noqa: E731
        self.h_a, self.h_b = zeros(), zeros()
        self.s_a, self.s_b = zeros(), zeros()  # LSTM cell states
        self.last: dict[str, Tensor] = {}  # the last step's per-unit quantities (sequence a), for Jacobians

    def _pre(self, k: str, rec: Stats, inp: Stats) -> tuple[Tensor, Tensor]:
        """Pre-activations of gate k for both sequences: persistent bias + fresh recurrent and input fields."""
        g = self.p[k]
        fa, fb = joint_field(rec.scaled(g["sigma"] ** 2).plus(inp.scaled(g["nu"] ** 2)), (self.n,), self.gen, self.device)
        return self.bias[k] + fa, self.bias[k] + fb

    def step(self, r_a: float, r_b: float, r_ab: float) -> None:
        inp = _inputs(r_a, r_b, r_ab)
        rec = Stats.of(self.h_a, self.h_b)
        if self.cell == "lstm":
            (ia, ib), (fa, fb), (ga, gb), (oa, ob) = (self._pre(k, rec, inp) for k in "ifgo")
            s_prev = self.s_a
            self.s_a = torch.sigmoid(fa) * self.s_a + torch.sigmoid(ia) * torch.tanh(ga)
            self.s_b = torch.sigmoid(fb) * self.s_b + torch.sigmoid(ib) * torch.tanh(gb)
            h_prev = self.h_a
            self.h_a, self.h_b = torch.sigmoid(oa) * torch.tanh(self.s_a), torch.sigmoid(ob) * torch.tanh(self.s_b)
            self.last = {"u_i": ia, "u_f": fa, "u_g": ga, "u_o": oa, "s_prev": s_prev, "h_prev": h_prev}
            return
        (ua_z, ub_z), (ua_r, ub_r) = self._pre("z", rec, inp), self._pre("r", rec, inp)
        ra, rb = torch.sigmoid(ua_r), torch.sigmoid(ub_r)
        gn = self.p["n"]
        if self.cell == "gru_reset_before":  # U_n sees r * h, eq. (T4)
            un_a, un_b = joint_field(Stats.of(ra * self.h_a, rb * self.h_b).scaled(gn["sigma"] ** 2)
                                     .plus(inp.scaled(gn["nu"] ** 2)), (self.n,), self.gen, self.device)
            un_a, un_b, g_a = un_a + self.bias["n"], un_b + self.bias["n"], None
        else:  # reset-after, eq. (T13): u_n = b_n + W_n x + r * (U_n h)
            g_a, g_b = joint_field(rec.scaled(gn["sigma"] ** 2), (self.n,), self.gen, self.device)
            x_a, x_b = joint_field(inp.scaled(gn["nu"] ** 2), (self.n,), self.gen, self.device)
            un_a, un_b = self.bias["n"] + x_a + ra * g_a, self.bias["n"] + x_b + rb * g_b
        za, zb = torch.sigmoid(ua_z), torch.sigmoid(ub_z)
        h_prev = self.h_a
        self.h_a = za * self.h_a + (1 - za) * torch.tanh(un_a)
        self.h_b = zb * self.h_b + (1 - zb) * torch.tanh(un_b)
        self.last = {"u_z": ua_z, "u_r": ua_r, "u_n": un_a, "g": g_a, "h_prev": h_prev}

    def moments(self) -> dict[str, float]:
        st = Stats.of(self.h_a, self.h_b)
        d = 0.5 * (self.h_a - self.h_b) ** 2  # (P,) each unit's share of the distance
        out = {"q_h_a": st.q_a, "q_h_b": st.q_b, "c_h": st.c, "d_h": float(d.mean()),
               "d_h_se": float(d.std()) / math.sqrt(self.n)}
        if self.cell == "lstm":
            ss = Stats.of(self.s_a, self.s_b)
            out.update(q_s_a=ss.q_a, c_s=ss.c)
        return out


@cpu_threads
def trajectory(hp: Hyper, steps: int, split: int, r_in: float, population: int = 200_000, seed: int = 0,
               device: Optional[str] = None,
               inputs: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None) -> dict[str, np.ndarray]:
    """The two-sequence scenario (as mftrnn.theory.closed.trajectory), exact under untied weights.
    `d_h` = |h_a - h_b|^2 / (2n), from the differences themselves (1 - C/Q ~ d_h / Q without cancellation).
    `inputs` = per-step (R_a, R_b, R_ab) replaces the scenario (as in closed.trajectory)."""
    sol = PopulationSolver(hp, population, seed, device)
    rows = [sol.moments()]
    for t in range(1, steps + 1):
        if inputs is None:
            sol.step(r_in, r_in, 0.0 if t <= split else r_in)
        else:
            sol.step(*(float(v[t - 1]) for v in inputs))
        rows.append(sol.moments())
    out = {"t": np.arange(steps + 1)}
    for key in rows[0]:
        out[key] = np.array([r[key] for r in rows])
    return out


@cpu_threads
def stationary(hp: Hyper, r_in: float, population: int = 200_000, burn_in: int = 300, seed: int = 0,
               device: Optional[str] = None) -> PopulationSolver:
    """A population driven by one input sequence (a = b) for `burn_in` steps: the stationary state."""
    sol = PopulationSolver(hp, population, seed, device)
    for _ in range(burn_in):
        sol.step(r_in, r_in, r_in)
    return sol


@cpu_threads
def fixed_point(hp: Hyper, r_in: float, population: int = 200_000, burn_in: int = 300, average: int = 100,
                seed: int = 0, device: Optional[str] = None) -> dict[str, float]:
    """Stationary Q_h (and Q_s, M_s for the LSTM), averaged over `average` steps after the burn-in."""
    sol = stationary(hp, r_in, population, burn_in, seed, device)
    acc: dict[str, float] = {}
    for _ in range(average):
        sol.step(r_in, r_in, r_in)
        m = {"q_h": float((sol.h_a ** 2).mean()), "m_h": float(sol.h_a.mean())}
        if hp.cell == "lstm":
            m.update(q_s=float((sol.s_a ** 2).mean()), m_s=float(sol.s_a.mean()))
        for k, v in m.items():
            acc[k] = acc.get(k, 0.0) + v / average
    return acc


@cpu_threads
def jacobian_diagonals(hp: Hyper, r_in: float, population: int = 20_000, burn_in: int = 300, seed: int = 0,
                       device: Optional[str] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-unit diagonals (a, b, c) and scales sigma of the one-step Jacobian J = A + sum_k B_k U_k C_k
    at stationarity (docs/theory.md §4.1, eqs. (T19)-(T21)), as samples of their joint law.

    GRU reset-after: a = z; k = z: b = (h - n) sigmoid'(u_z); k = n: b = (1 - z) tanh'(u_n) r;
    k = r: b = (1 - z) tanh'(u_n) g sigmoid'(u_r); c = 1. GRU reset-before (sigma_r = 0 only): k = z as
    above, k = n: b = (1 - z) tanh'(u_n), c = r. LSTM (effective cell-state Jacobian): a = f;
    c = o_prev tanh'(s_prev) for every k; k = f: b = s_prev sigmoid'(u_f); k = i: b = tanh(u_g) sigmoid'(u_i);
    k = g: b = i tanh'(u_g).
    """
    sol = stationary(hp, r_in, population, burn_in, seed, device)
    if hp.cell == "lstm":
        o_prev = torch.sigmoid(sol.last["u_o"])
        sol.step(r_in, r_in, r_in)
        L = sol.last
        f, i = torch.sigmoid(L["u_f"]), torch.sigmoid(L["u_i"])
        c = o_prev * (1 - torch.tanh(L["s_prev"]) ** 2)
        b = [L["s_prev"] * f * (1 - f), torch.tanh(L["u_g"]) * i * (1 - i), i * (1 - torch.tanh(L["u_g"]) ** 2)]
        sig = [sol.p[k]["sigma"] for k in "fig"]
        cs = [c, c, c]
        a = f
    else:
        sol.step(r_in, r_in, r_in)
        L = sol.last
        z, r = torch.sigmoid(L["u_z"]), torch.sigmoid(L["u_r"])
        n = torch.tanh(L["u_n"])
        dn = 1 - n ** 2
        one = torch.ones_like(z)
        a = z
        if hp.cell == "gru":
            b = [(L["h_prev"] - n) * z * (1 - z), (1 - z) * dn * r, (1 - z) * dn * L["g"] * r * (1 - r)]
            sig = [sol.p[k]["sigma"] for k in "znr"]
            cs = [one, one, one]
        else:
            if sol.p["r"]["sigma"] != 0:
                raise NotImplementedError("reset-before GRU with sigma_r > 0: J contains U_n D U_r, a product of "
                                          "two random matrices, not of the form A + sum_k B_k U_k C_k")
            b = [(L["h_prev"] - n) * z * (1 - z), (1 - z) * dn]
            sig = [sol.p[k]["sigma"] for k in "zn"]
            cs = [one, r]
    to = lambda t: t.detach().cpu().numpy()  # noqa: E731
    return to(a), np.stack([to(x) for x in b]), np.stack([to(x) for x in cs]), np.array(sig)


@cpu_threads
def tangent_growth(hp: Hyper, r_in: float, population: int = 200_000, burn_in: int = 300, steps: int = 200,
                   seed: int = 0, device: Optional[str] = None) -> float:
    """Per-step growth of the mean-square tangent at stationarity, eq. (T18): the slope of the
    correlation map at C = Q (so xi_C = -1/ln of it) for any bias law, exact under untied weights.

    A tangent population (dh, and ds for the LSTM) rides along the stationary units: each step
    every recurrent matrix applied to the tangent is a fresh Gaussian field with variance
    sigma_k^2 |tangent it sees|^2 / n, exactly as the forward pass's fields. The growth of
    |tangent|^2 is averaged geometrically over `steps` steps (renormalized every step).
    """
    sol = stationary(hp, r_in, population, burn_in, seed, device)
    gen, dev, n = sol.gen, sol.device, sol.n
    field = lambda var: math.sqrt(max(var, 0.0)) * torch.randn((n,), generator=gen, device=dev, dtype=torch.float64)  # noqa: E731
    dh = torch.randn((n,), generator=gen, device=dev, dtype=torch.float64)
    ds = torch.randn((n,), generator=gen, device=dev, dtype=torch.float64) if hp.cell == "lstm" else None
    log_growth = 0.0
    for _ in range(steps):
        norm0 = float((dh ** 2).mean()) + (float((ds ** 2).mean()) if ds is not None else 0.0)
        sol.step(r_in, r_in, r_in)
        L, p = sol.last, sol.p
        qd = float((dh ** 2).mean())
        if hp.cell == "lstm":
            f, i, o = torch.sigmoid(L["u_f"]), torch.sigmoid(L["u_i"]), torch.sigmoid(L["u_o"])
            tg = torch.tanh(L["u_g"])
            ds = (f * ds + L["s_prev"] * f * (1 - f) * field(p["f"]["sigma"] ** 2 * qd)
                  + tg * i * (1 - i) * field(p["i"]["sigma"] ** 2 * qd) + i * (1 - tg ** 2) * field(p["g"]["sigma"] ** 2 * qd))
            ts = torch.tanh(sol.s_a)
            dh = o * (1 - ts ** 2) * ds + ts * o * (1 - o) * field(p["o"]["sigma"] ** 2 * qd)
            norm1 = float((dh ** 2).mean()) + float((ds ** 2).mean())
        else:
            z, r = torch.sigmoid(L["u_z"]), torch.sigmoid(L["u_r"])
            nn_ = torch.tanh(L["u_n"])
            xi_r = field(p["r"]["sigma"] ** 2 * qd)
            if hp.cell == "gru":
                drive = r * field(p["n"]["sigma"] ** 2 * qd) + L["g"] * r * (1 - r) * xi_r
            else:  # reset-before: U_n sees the tangent of r * h
                d_rh = r * dh + L["h_prev"] * r * (1 - r) * xi_r
                drive = field(p["n"]["sigma"] ** 2 * float((d_rh ** 2).mean()))
            dh = (z * dh + (L["h_prev"] - nn_) * z * (1 - z) * field(p["z"]["sigma"] ** 2 * qd)
                  + (1 - z) * (1 - nn_ ** 2) * drive)
            norm1 = float((dh ** 2).mean())
        log_growth += math.log(norm1 / norm0)
        scale = 1 / math.sqrt(norm1)
        dh = dh * scale
        if ds is not None:
            ds = ds * scale
    return math.exp(log_growth / steps)
