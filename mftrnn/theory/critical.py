"""The critical initialization: meanfield hyperparameters solved from the theory (docs/theory.md §10).

The family (which hyperparameters are free, which are fixed, and why, is in docs/theory.md §10.1):
orthogonal recurrent weights (or Gaussian), no bias spread (rho = 0), gates deterministic at the
operating point (recurrent scale `gate_sigma`; input scale `gate_nu`, the drive, chosen by the theory of
the write unless given: `choose_drive`), the candidate's input scale `candidate_nu`, the LSTM's output gate
(GRU: reset gate) open at bias `open_bias`, and two solved numbers:

* the keep gate f = sigma(b_keep) (LSTM f, GRU z) from the isometry condition over the task's T
  steps, eq. (T35): the rms gain of the tied critical product over T steps equals 10^log10_gain
  (default -0.5: the strongest input write, 1 - f, that keeps the product within half a decade
  on average; the value was chosen by measurement, docs/theory.md §10.2); the LSTM's input gate is
  coupled, b_i = -b_f (so i = 1 - f);
* the candidate's recurrent scale from the criticality condition, eq. (T34): tied (the default) the
  spectral radius of the Jacobian at the operating point is 1, f + i o sigma_g <tanh'> = 1 (LSTM),
  z + (1 - z) r sigma_n <tanh'> = 1 (GRU); untied (the paper's condition) m_1 = 1 (eq. (T23)).

The operating point is the state the task's long stretch drives the network to: input second moment
R_op (0 for zero padding), Q from the untied fixed point (eq. (T6)). The solution is checked with
the linearized tied theory (eq. (T36): mean-square gain of the T-step product, smallest singular
value, memory horizon), the untied closed forms (m_1, xi_C, Q*), and, in `mftrnn critical`, the tied
population solver on the task's own inputs.

The gates' input scale (the drive) is chosen by the theory of the write (mftrnn.theory.write, eq. (T38)):
the predicted separation D_T of pairs of the task's examples at the last step, over a grid of drives,
and the drive at which D_T is halfway between the quiet drive's and the largest (`midpoint_drive`,
docs/theory.md §10.8). Where the inputs drive the operating point, the gate means there are averages over
the task's empirical law of per-step input second moments (`CriticalSpec.r_nodes`), not over one
Gaussian of variance nu^2 R_op, and the keep and the candidate's scale are solved again for each drive.
Everything but the choice of the drive (seconds) and `mftrnn critical`'s check costs milliseconds.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit, gammaln, logsumexp

from mftrnn.cells import CANDIDATE, GATES, KEEP
from mftrnn.theory import closed
from mftrnn.theory.hyper import Gate, Hyper
from mftrnn.theory.quadrature import nodes as hermite_nodes
from mftrnn.theory.write import WriteInputs, separation

VERSION = 5  # bump when the solver's answer for the same spec changes: old cache entries are ignored
OPEN_GATE = {"lstm": "o", "gru": "r"}  # the gate held open (the LSTM's output, the GRU's reset)
CRITERIA = ("tied", "untied")
ISOMETRIES = ("gain", "phase")
# init.isometry=auto, measured on padded MNIST (docs/theory.md §10.6, docs/results.md): the phase-limited
# GRU (write 30) learns 1.6-2x faster than the Haar one at pad 1000 and 5000; the LSTM does not gain from it
DEFAULT_ISOMETRY = {"lstm": "gain", "gru": "phase"}
# The candidate's input scale of the family (§10.1), and the grid of gates' input scales the theory of the
# write chooses from (docs/theory.md §10.8), its first the quiet drive (the gates barely see the input)
CANDIDATE_NU = 1.0
DRIVE_GRID = (0.1, 0.3, 1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0, 30.0, 50.0, 100.0, 300.0, 1000.0)
# midpoint_drive: the fraction of the drive's effect on D_T at the chosen drive, and the smallest effect
# (D_hi - D_lo) for which a drive is chosen at all: the theory's tolerance against networks on D_T
# (docs/theory.md §10.8), below which a predicted gain is not a gain
DRIVE_FRACTION = 0.5
DRIVE_MIN_EFFECT = 0.05
# a drive is admissible only where the keep gate's mean slope over the long stretch, E sigma'(u_keep) (eq.
# (T42)), stays at least this fraction of the quiet drive's: a driven operating point whose keep gate is
# saturated on most steps trains badly (unrolled MNIST, docs/theory.md §10.8); under zero padding the slope
# does not depend on the drive
DRIVE_MIN_SLOPE = 0.5


# the init=critical settings each family leaves unused (a run's label should not show them)
UNUSED_BY = {"gain": ("write", "log10_min_gain"), "phase": ("log10_gain",)}


@dataclass(frozen=True)
class CriticalSpec:
    """Everything the solution depends on: the cache key (docs/theory.md §10.1)."""

    cell: str  # lstm | gru (nn.GRU's reset-after form)
    steps: int  # T: the steps a gradient must cross (the task's length)
    content_steps: int  # the informative part: steps 1..content_steps (the image); the rest is padding
    R_op: float  # input second moment at the operating point (the padding's; the inputs' without padding)
    criterion: str = "tied"  # tied: spectral radius 1 (eq. (T34)); untied: m_1 = 1 (eq. (T23))
    log10_gain: float = -0.5  # eq. (T35): log10 of the rms gain of the tied T-step product at the solution
    orthogonal: bool = True
    gate_sigma: float = 0.0  # recurrent scale of the gates (i, f, o / r, z)
    gate_nu: Optional[float] = None  # input scale of the gates (the drive); None: chosen by `choose_drive`
    candidate_nu: float = CANDIDATE_NU  # input scale of the candidate (g / n)
    open_bias: float = 3.0  # bias of the LSTM's output gate, the GRU's reset gate (sigma(3) = 0.953)
    isometry: str = "gain"  # gain: Haar angles, keep from eq. (T35); phase: write given, angle limit from eq. (T37)
    write: float = 30.0  # isometry=phase: T (1 - f)
    log10_min_gain: float = -0.5  # isometry=phase: log10 of the T-step product's smallest singular value
    # the empirical law of the per-step input second moment |x_t|^2 / n_in over the long stretch (nodes and
    # weights; empty: all at R_op): the gate means at the operating point are averages over it (eq. (T40))
    r_nodes: tuple = ()
    r_weights: tuple = ()
    inputs_key: str = ""  # WriteInputs.key() of the pairs the drive is chosen from ("" : none)
    drive_population: int = 2000  # units of the write theory's tied population
    drive_grid: tuple = DRIVE_GRID
    drive_fraction: float = DRIVE_FRACTION

    def __post_init__(self) -> None:
        for name in ("r_nodes", "r_weights", "drive_grid"):  # lists from JSON: tuples, so specs compare equal
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.cell not in ("lstm", "gru"):
            raise ValueError(f"cell={self.cell!r} is not allowed: the critical solver handles lstm and gru")
        if self.steps < 1 or not 0 <= self.content_steps <= self.steps:
            raise ValueError(f"need steps >= 1 and 0 <= content_steps <= steps; got {self.steps}, {self.content_steps}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion={self.criterion!r} is not allowed: criterion must be one of {CRITERIA}")
        for name in ("R_op", "gate_sigma", "gate_nu", "candidate_nu"):
            v = getattr(self, name)
            if v is None and name == "gate_nu":
                continue
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}={v!r} is not allowed: {name} must be finite and >= 0")
        if len(self.r_nodes) != len(self.r_weights) or any(v < 0 for v in self.r_nodes + self.r_weights):
            raise ValueError("r_nodes and r_weights must have the same length and be >= 0")
        if not (self.drive_grid and all(v > 0 for v in self.drive_grid) and list(self.drive_grid) == sorted(self.drive_grid)):
            raise ValueError(f"drive_grid={self.drive_grid} must be increasing input scales > 0")
        if not 0 < self.drive_fraction < 1 or self.drive_population < 100:
            raise ValueError("need 0 < drive_fraction < 1 and drive_population >= 100")
        if not (math.isfinite(self.log10_gain) and self.log10_gain < 0):
            raise ValueError(f"log10_gain={self.log10_gain!r} is not allowed: log10_gain must be < 0")
        if self.isometry not in ISOMETRIES:
            raise ValueError(f"isometry={self.isometry!r} is not allowed: isometry must be one of {ISOMETRIES}")
        if self.isometry == "phase" and (self.criterion != "tied" or not self.orthogonal):
            raise ValueError("isometry='phase' needs criterion='tied' and orthogonal recurrent weights")
        if not (math.isfinite(self.write) and self.write > 0):
            raise ValueError(f"write={self.write!r} is not allowed: write must be > 0")
        if not (math.isfinite(self.log10_min_gain) and self.log10_min_gain < 0):
            raise ValueError(f"log10_min_gain={self.log10_min_gain!r} is not allowed: log10_min_gain must be < 0")

    def key(self) -> str:
        """A stable hash of the spec and the solver's version: the cache file's name."""
        text = json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


@dataclass
class CriticalSolution:
    """The solved hyperparameters and what the theory predicts for them (critical.json)."""

    spec: CriticalSpec
    gates: dict[str, dict[str, float]]  # gate -> {mu, rho, sigma, nu}, the meanfield preset
    orthogonal: bool
    predictions: dict = field(default_factory=dict)
    phase: float = math.pi  # the recurrent weights' largest eigen-angle (pi: Haar), docs/theory.md §10.6
    drive: dict = field(default_factory=dict)  # the gates' and candidate's input scales, how they were chosen

    def hyper(self) -> Hyper:
        return Hyper(self.spec.cell, {k: Gate(**v) for k, v in self.gates.items()}, self.orthogonal,
                     source={"init": "critical", "spec": asdict(self.spec)}, phase=self.phase)

    def overrides(self) -> list[str]:
        """The same initialization as `init=meanfield` command-line overrides."""
        out = ["init=meanfield", f"init.recurrent={'orthogonal' if self.orthogonal else 'gaussian'}"]
        if self.phase < math.pi:
            out.append(f"init.phase={self.phase:.6g}")
        out += [f"init.gates.{k}.{a}={v:.6g}" for k, g in self.gates.items() for a, v in g.items()]
        return out

    def as_dict(self) -> dict:
        return {"spec": asdict(self.spec), "recurrent": "orthogonal" if self.orthogonal else "gaussian",
                "phase": self.phase, "gates": self.gates, "drive": self.drive, "predictions": self.predictions,
                "overrides": self.overrides(), "version": VERSION}

    @classmethod
    def from_dict(cls, d: dict) -> "CriticalSolution":
        return cls(CriticalSpec(**d["spec"]), d["gates"], d["recurrent"] == "orthogonal", d["predictions"],
                   float(d.get("phase", math.pi)), d.get("drive", {}))


def resolve_isometry(cell: str, isometry: str, criterion: str, orthogonal: bool) -> str:
    """`auto` as the cell's measured default (DEFAULT_ISOMETRY); the Haar family (`gain`) wherever the
    phase limit does not apply (the untied criterion, Gaussian weights). Explicit values pass through."""
    if isometry != "auto":
        return isometry
    return DEFAULT_ISOMETRY[cell] if criterion == "tied" and orthogonal else "gain"


def recorded_isometry(solution: Optional[dict]) -> str:
    """The family a run's recorded solution (summary.json `init_solution`) used: solvers before version 4
    knew the Haar family (`gain`) only."""
    return ((solution or {}).get("spec") or {}).get("isometry", "gain")


# ----------------------------------------------------------------------------- the linearized tied theory
def keep_for_gain(steps: int, log10_gain: float) -> float:
    """The keep gate f of eq. (T35): the tied critical Jacobian J = f I + (1 - f) O (spectral radius 1,
    eigenvalues f + (1 - f) e^{i theta}) has, over `steps` steps, the rms gain 10^log10_gain:
    0.5 log10 tied_gain(f, 1 - f, T) = log10_gain. The gain falls monotonically with the write 1 - f
    (for T(1 - f) >> 1 as (4 pi T f (1 - f))^(-1/4)); solved for log(1 - f) by brentq."""
    if not log10_gain < 0:
        raise ValueError(f"log10_gain={log10_gain} must be < 0 (the gain of a radius-1 product is at most 1)")
    gap = lambda lw: 0.5 * math.log10(tied_gain(1 - math.exp(lw), math.exp(lw), steps)) - log10_gain  # noqa: E731
    hi = math.log(0.5)
    if gap(hi) > 0:  # even f = 1/2 keeps more than asked (very short T): the widest write
        return 0.5
    return 1.0 - math.exp(brentq(gap, math.log(1e-12), hi, xtol=1e-10))


def _angles(phase: float, points: int = 4096) -> np.ndarray:
    """Midpoints of [0, phase]: the eigen-angles of a phase-limited orthogonal matrix (symmetric in theta)."""
    return (np.arange(points) + 0.5) * phase / points


def _log10_singular(keep: float, coupling: float, steps: int, theta: float) -> float:
    """steps * log10 |f + c e^{i theta}|: the T-step product's log10 singular value at eigen-angle theta."""
    return steps * math.log10(max(abs(keep + coupling * complex(math.cos(theta), math.sin(theta))), 1e-300))


def tied_gain(keep: float, coupling: float, steps, phase: float = math.pi) -> np.ndarray:
    """Mean-square gain |J^n u|^2 / |u|^2 of a random u under n steps of J = f I + c O, eq. (T36):
    sum_k C(n,k)^2 f^(2(n-k)) c^(2k) (orthogonal O: the mean of |f + c e^{i theta}|^(2n) over the
    unit circle; Gaussian O of scale 1 gives the same mean-square growth, docs/theory.md §7.8).
    With the eigen-angles limited to |theta| < phase (phase < pi, eq. (T37)) the mean runs over that
    arc instead (midpoint rule). `steps` may be an array of n >= 0; computed in log space (n up to
    10^5 and more)."""
    n = np.atleast_1d(np.asarray(steps, dtype=np.int64))
    out = np.empty(n.shape)
    if phase < math.pi:
        log_mod = np.log(np.maximum(np.abs(keep + coupling * np.exp(1j * _angles(phase))), 1e-300))
        for j, m in enumerate(n):
            out[j] = math.exp(float(logsumexp(2 * m * log_mod)) - math.log(log_mod.size))
        return out if np.ndim(steps) else out[0]
    lf, lc = math.log(max(keep, 1e-300)), math.log(max(coupling, 1e-300))
    for j, m in enumerate(n):
        k = np.arange(m + 1)
        lbin = gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
        out[j] = math.exp(float(logsumexp(2 * lbin + 2 * (m - k) * lf + 2 * k * lc)))
    return out if np.ndim(steps) else out[0]


def _log_singular_spread(keep: float, coupling: float, steps: int, phase: float = math.pi) -> dict:
    """Mean and std over theta in [0, phase] of steps * log10 |keep + coupling e^{i theta}| (midpoint rule)."""
    theta = _angles(phase)  # symmetric in theta: [0, phase] suffices
    lam = np.abs(keep + coupling * np.exp(1j * theta))
    logs = steps * np.log10(np.maximum(lam, 1e-300))
    return {"log10_singular_mean": float(logs.mean()), "log10_singular_std": float(logs.std())}


def tied_horizon(keep: float, coupling: float, max_steps: int, eps: float = 1e-2,
                 phase: float = math.pi) -> Optional[int]:
    """The memory horizon of eq. (T29) in the linearized tied theory: the first n <= max_steps at
    which the mean-square distance of two states, tied_gain(n), falls below eps (None: never)."""
    grid = np.unique(np.clip(np.geomspace(1, max(max_steps, 1), 200).astype(np.int64), 1, max_steps))
    g = tied_gain(keep, coupling, grid, phase)
    below = np.flatnonzero(g < eps)
    if below.size == 0:
        return None
    hi = int(grid[below[0]])
    lo = int(grid[below[0] - 1]) if below[0] > 0 else 0
    while hi - lo > 1:  # the gain falls monotonically: bisect between the grid points
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tied_gain(keep, coupling, mid, phase) >= eps else (lo, mid)
    return hi


# ----------------------------------------------------------------------------- gate averages
def _mean_sigmoid(mu: float, var: float) -> float:
    x, w = hermite_nodes(32)
    return float(w @ expit(mu + math.sqrt(max(var, 0.0)) * x))


def _mean_dsigmoid(mu: float, var: float) -> float:
    x, w = hermite_nodes(32)
    p = expit(mu + math.sqrt(max(var, 0.0)) * x)
    return float(w @ (p * (1.0 - p)))


def _mean_dtanh(var: float, mean: float = 0.0) -> float:
    x, w = hermite_nodes(32)
    return float(w @ (1.0 - np.tanh(mean + math.sqrt(max(var, 0.0)) * x) ** 2))


def input_law(spec: CriticalSpec) -> tuple[np.ndarray, np.ndarray]:
    """The per-step input second moments of the long stretch as a quadrature rule (nodes R_j, weights w_j
    summing to 1): the task's empirical law (spec.r_nodes), else all mass at R_op."""
    if spec.r_nodes:
        w = np.asarray(spec.r_weights, float)
        return np.asarray(spec.r_nodes, float), w / w.sum()
    return np.array([spec.R_op]), np.ones(1)


def _family(spec: CriticalSpec, b_keep: float, cand_sigma: float, gate_nu: float) -> Hyper:
    """The Hyper of the critical family at keep bias b_keep, candidate scale cand_sigma and drive gate_nu."""
    gs, gn = spec.gate_sigma, gate_nu
    gates = {k: Gate(mu=0.0, rho=0.0, sigma=gs, nu=gn) for k in GATES[spec.cell]}
    gates[KEEP[spec.cell]] = Gate(mu=b_keep, rho=0.0, sigma=gs, nu=gn)
    gates[OPEN_GATE[spec.cell]] = Gate(mu=spec.open_bias, rho=0.0, sigma=gs, nu=gn)
    if spec.cell == "lstm":  # input-forget coupling: i = 1 - f (docs/theory.md §10.1)
        gates["i"] = Gate(mu=-b_keep, rho=0.0, sigma=gs, nu=gn)
    gates[CANDIDATE[spec.cell]] = Gate(mu=0.0, rho=0.0, sigma=cand_sigma, nu=spec.candidate_nu)
    return Hyper(spec.cell, gates, spec.orthogonal)


def operating_point(hp: Hyper, R: float, fp: Optional[closed.FixedPoint] = None,
                    law: Optional[tuple[np.ndarray, np.ndarray]] = None) -> dict:
    """Gate means and slopes at the operating point (untied fixed point Q* at input R, eq. (T6); `fp`
    if the caller has it): keep f (z), the coupled write i (1 - z), the open gate o (r), <tanh'> of
    the candidate's pre-activation and (LSTM) of the cell state, and the tied spectral radius of
    eq. (T34). With `law` (nodes R_j, weights w_j: the task's per-step input second moments) every
    gate mean is the average over it, and the coupling averages the product of the gates that share
    a step's input (eq. (T40)); without it, all steps have R."""
    fp = fp if fp is not None else closed.fixed_point(hp, R)
    r_j, w_j = law if law is not None else (np.array([R]), np.ones(1))
    q = float(np.asarray(fp.q_h).reshape(-1)[0])
    cell = hp.cell
    g = lambda k, a: float(np.asarray(getattr(hp.g(k), a)).reshape(-1)[0])  # noqa: E731
    var = lambda k, r: g(k, "sigma") ** 2 * q + g(k, "nu") ** 2 * r + g(k, "rho") ** 2  # noqa: E731
    mean = lambda k: np.array([_mean_sigmoid(g(k, "mu"), var(k, r)) for r in r_j])  # noqa: E731  per node
    cand = CANDIDATE[cell]
    keep, open_ = mean(KEEP[cell]), mean(OPEN_GATE[cell])
    dtanh_cand = np.array([_mean_dtanh(var(cand, r), g(cand, "mu")) for r in r_j])
    out = {"Q_h": q, "keep": float(w_j @ keep), "open": float(w_j @ open_), "dtanh_candidate": float(w_j @ dtanh_cand)}
    sigma_c = g(cand, "sigma")
    if cell == "lstm":
        write = mean("i")
        q_s = float(np.asarray(fp.q_s).reshape(-1)[0])
        dtanh_s = _mean_dtanh(q_s)
        coupling = sigma_c * dtanh_s * float(w_j @ (write * open_ * dtanh_cand))
        out.update(write=float(w_j @ write), Q_s=q_s, dtanh_state=dtanh_s)
    else:
        coupling = sigma_c * float(w_j @ ((1.0 - keep) * open_ * dtanh_cand))
        out.update(write=1.0 - out["keep"])
    out.update(coupling=coupling, radius=out["keep"] + coupling)
    return out


# ----------------------------------------------------------------------------- the solver
def phase_for_min_gain(keep: float, coupling: float, steps: int, log10_min_gain: float) -> float:
    """The eigen-angle limit of eq. (T37): the largest phase in (0, pi] at which the T-step product of
    J = f I + c O (radius f + c = 1, eigen-angles |theta| < phase) keeps its smallest singular value,
    |f + c e^{i phase}|^T, at 10^log10_min_gain; pi when even the Haar circle keeps more (short T)."""
    gap = lambda th: _log10_singular(keep, coupling, steps, th) - log10_min_gain  # noqa: E731
    if gap(math.pi) >= 0:
        return math.pi
    return brentq(gap, 1e-12, math.pi, xtol=1e-12)


def solve_family(spec: CriticalSpec, gate_nu: float) -> tuple[Hyper, float]:
    """The critical family at drive `gate_nu` (docs/theory.md §10.2): the keep bias from eq. (T35), with
    the gate means averaged over the input law (eq. (T40); isometry=phase: from the given write, T(1 - f)
    = write), then the candidate's recurrent scale from eq. (T34) (tied: radius 1; untied: m_1 = 1), by
    brentq; isometry=phase then limits the recurrent eigen-angles by eq. (T37) (§10.6). Returns the Hyper
    and the largest eigen-angle."""
    if spec.isometry == "phase":
        f_target = 1.0 - min(spec.write / spec.steps, 0.5)
    else:
        f_target = keep_for_gain(spec.steps, spec.log10_gain)
    r_j, w_j = law = input_law(spec)
    # Q* ~ 0 near the operating point: the gates' noise comes from the input, step by step
    keep_mean = lambda b: float(w_j @ [_mean_sigmoid(b, gate_nu ** 2 * r) for r in r_j])  # noqa: E731
    logit = math.log(f_target / (1.0 - f_target))
    b_lo, b_hi = logit - 5, logit + 40 + 8 * gate_nu * math.sqrt(r_j.max())
    if keep_mean(b_hi) < f_target:  # the driven steps close the keep gate too often for any bias to hold f
        raise RuntimeError(f"critical: no keep bias holds the mean keep {f_target:.6g} at drive {gate_nu:g} for "
                           f"{spec.cell}, T = {spec.steps}, R_op = {spec.R_op:.4g}")
    b_keep = brentq(lambda b: keep_mean(b) - f_target, b_lo, b_hi, xtol=1e-12)

    def excess(sigma_c: float) -> float:
        hp = _family(spec, b_keep, sigma_c, gate_nu)
        if spec.criterion == "tied":
            return operating_point(hp, spec.R_op, law=law)["radius"] - 1.0
        fp = closed.fixed_point(hp, spec.R_op)
        return float(np.asarray(closed.m1(hp, fp, spec.R_op)).reshape(-1)[0]) - 1.0

    lo, hi = 1e-3, 2.0
    while excess(hi) < 0 and hi < 1e4:
        hi *= 2
    if excess(lo) > 0 or excess(hi) < 0:
        raise RuntimeError(f"critical: no candidate scale in [{lo}, {hi}] meets the {spec.criterion} condition "
                           f"at drive {gate_nu:g} for {spec.cell}, T = {spec.steps}, R_op = {spec.R_op:.4g} "
                           f"(keep f = {f_target:.6g})")
    sigma_c = brentq(excess, lo, hi, xtol=1e-10)
    hp = _family(spec, b_keep, sigma_c, gate_nu)
    phase = math.pi
    if spec.isometry == "phase":
        op = operating_point(hp, spec.R_op, law=law)
        phase = phase_for_min_gain(op["keep"], op["coupling"], spec.steps, spec.log10_min_gain)
    return replace(hp, phase=phase), phase


def keep_slope(hp: Hyper, law: tuple[np.ndarray, np.ndarray]) -> float:
    """The keep gate's mean slope over the long stretch, sum_j w_j E sigma'(b_keep + nu sqrt(R_j) z) (eq. (T42)):
    how far training can still move the keep gate through its input and bias where the network holds its
    memory."""
    k = KEEP[hp.cell]
    mu, nu = (float(np.asarray(getattr(hp.g(k), a)).reshape(-1)[0]) for a in ("mu", "nu"))
    r_j, w_j = law
    return float(w_j @ [_mean_dsigmoid(mu, nu ** 2 * r) for r in r_j])


def midpoint_drive(grid, d_end, fraction: float = DRIVE_FRACTION, min_effect: float = DRIVE_MIN_EFFECT,
                   admissible=None) -> tuple[float, dict]:
    """The drive rule of docs/theory.md §10.8 on the predicted D_T (eq. (T38)) over increasing drives `grid`
    (NaN: no critical family there; `admissible` False: a drive the rule may not choose, eq. (T42)): D_lo at
    the quietest drive, D_hi the largest admissible; the drive at which D_T first reaches D_lo + fraction
    (D_hi - D_lo), interpolated in log nu between grid points and rounded to two significant digits. Where
    the drive moves D_T by less than `min_effect`, the quietest drive. Returns (nu, the reason as a dict)."""
    grid, d = np.asarray(grid, float), np.asarray(d_end, float)
    if admissible is not None:
        d = np.where(np.asarray(admissible, bool), d, np.nan)
    ok = np.isfinite(d)
    if not ok[0]:
        raise RuntimeError("the quietest drive of the grid has no critical family: nothing to compare with")
    d_lo, j_hi = d[0], int(np.nanargmax(d))
    d_hi = d[j_hi]
    reason = {"rule": f"the drive at which D_T is {fraction:g} of the way from the quietest drive's to the largest",
              "D_lo": float(d_lo), "D_hi": float(d_hi), "nu_lo": float(grid[0]), "nu_hi": float(grid[j_hi]),
              "fraction": fraction}
    if d_hi - d_lo < min_effect:
        reason["why"] = (f"no drive raises D_T by {min_effect:g} or more over the quietest ({d_lo:.3f} at nu = "
                         f"{grid[0]:g}; at most {d_hi:.3f}, nu = {grid[j_hi]:g}): driven gates do not help tell the "
                         "examples apart at T here, they stay quiet")
        return float(grid[0]), reason
    target = d_lo + fraction * (d_hi - d_lo)
    j = int(np.flatnonzero(ok & (d >= target))[0])
    lo_nu, hi_nu, lo_d, hi_d = grid[j - 1], grid[j], d[j - 1], d[j]
    x = (target - lo_d) / (hi_d - lo_d) if np.isfinite(lo_d) and hi_d > lo_d else 1.0
    nu = float(np.exp(np.log(lo_nu) + x * (np.log(hi_nu) - np.log(lo_nu))))
    nu = float(f"{nu:.2g}")
    reason["why"] = (f"D_T rises from {d_lo:.3f} (nu = {grid[0]:g}) to {d_hi:.3f} (nu = {grid[j_hi]:g}); half of that "
                     f"rise is reached at nu = {nu:g}, where the rows open and close the gates of the units they "
                     "drive; more drive saturates the gates for little more separation")
    return nu, reason


def choose_drive(spec: CriticalSpec, inputs: WriteInputs) -> dict:
    """The gates' input scale from the theory of the write (docs/theory.md §10.8): the critical family is
    solved at every drive of spec.drive_grid (eq. (T40): where the inputs drive the operating point, the
    keep and the candidate's scale change with it), D_T of eq. (T38) is predicted for each on the task's
    pairs, and `midpoint_drive` picks one. Returns the drive record: gates, candidate, source, the curve,
    the reason."""
    grid = spec.drive_grid
    families, failed, slopes = [], {}, []
    law = input_law(spec)
    for nu in grid:
        try:
            families.append(solve_family(spec, nu))
            slopes.append(keep_slope(families[-1][0], law))
        except RuntimeError as exc:
            families.append(None)
            slopes.append(float("nan"))
            failed[nu] = str(exc).splitlines()[0]
    slope_ratio = np.asarray(slopes) / slopes[0] if families[0] is not None else np.full(len(grid), np.nan)
    d_end = np.full(len(grid), np.nan)
    d_split = np.full(len(grid), np.nan)
    groups: dict[float, list[int]] = {}
    for j, fam in enumerate(families):  # one batched population per eigen-angle limit (a scalar of the Hyper)
        if fam is not None:
            groups.setdefault(fam[1], []).append(j)
    for phase, idx in groups.items():
        hps = [families[j][0] for j in idx]
        batch = Hyper(spec.cell, {k: Gate(**{a: np.array([float(np.asarray(getattr(h.g(k), a))) for h in hps])
                                              for a in ("mu", "rho", "sigma", "nu")}) for k in GATES[spec.cell]},
                      spec.orthogonal, phase=phase)
        sep = separation(batch, inputs, spec.drive_population, seed=0, device="cpu")
        d_end[idx], d_split[idx] = sep["one_minus_c_end"], sep["one_minus_c_split"]
    admissible = slope_ratio >= DRIVE_MIN_SLOPE
    nu, reason = midpoint_drive(grid, d_end, spec.drive_fraction, admissible=admissible)
    if failed:
        reason["no_family"] = failed
    frozen = [float(n) for n, a, f in zip(grid, admissible, families) if f is not None and not a]
    if frozen:
        reason["keep_gate_frozen"] = frozen
        reason["why"] += (f"; drives from {min(frozen):g} are not admissible: they leave the keep gate less than "
                          f"{DRIVE_MIN_SLOPE:g} of the quiet drive's mean slope over the long stretch (eq. (T42))")
    clean = lambda v: [None if not np.isfinite(x) else float(x) for x in v]  # noqa: E731
    return {"gates": nu, "candidate": spec.candidate_nu, "source": "theory", "reason": reason,
            "curve": {"nu": list(grid), "one_minus_c_end": clean(d_end), "one_minus_c_split": clean(d_split),
                      "keep_slope_ratio": clean(slope_ratio)},
            "inputs": inputs.describe()}


def solve(spec: CriticalSpec, inputs: Optional[WriteInputs] = None) -> CriticalSolution:
    """Solve the critical family for `spec` (docs/theory.md §10.2): the drive (given, or chosen by
    `choose_drive` from `inputs`, §10.8), then `solve_family` at that drive, then the predictions of
    `predict` (with the write theory's D_T on `inputs` when given)."""
    if spec.gate_nu is None:
        if inputs is None:
            raise ValueError("choosing the gates' input scale (gate_nu=None) needs the task's pairs (WriteInputs)")
        if spec.inputs_key and inputs.key() != spec.inputs_key:
            raise ValueError("inputs do not match spec.inputs_key")
        drive = choose_drive(spec, inputs)
    else:
        drive = {"gates": spec.gate_nu, "candidate": spec.candidate_nu, "source": "given"}
    hp, phase = solve_family(spec, drive["gates"])
    gates = {k: {a: float(np.asarray(getattr(g, a))) for a in ("mu", "rho", "sigma", "nu")} for k, g in hp.gates.items()}
    predictions = predict(hp, spec, phase)
    if inputs is not None:
        sep = separation(hp, inputs, spec.drive_population, seed=0, device="cpu")
        predictions["write"] = {"one_minus_c_end": float(sep["one_minus_c_end"]),
                                "one_minus_c_split": float(sep["one_minus_c_split"]),
                                "one_minus_c_end_sd_over_pairs": float(sep["one_minus_c_end_sd"]),
                                "q_end": float(sep["q"][-1]), "distance_end": float(sep["distance"][-1]),
                                "theory": "tied population on the task's pairs (eq. (T38))", **inputs.describe()}
    return CriticalSolution(spec, gates, spec.orthogonal, predictions, phase, drive)


def predict(hp: Hyper, spec: CriticalSpec, phase: float = math.pi) -> dict:
    """What the theory says of `hp` for the task of `spec`: the operating point and the tied radius
    (eqs. (T34), (T40)); the linearized tied theory over the T steps (eq. (T36)): log10 of the rms gain and
    of the smallest singular value, the memory horizon after the informative part; the untied
    closed forms at the operating point: m_1, m_1^T, xi_C, Q*. `phase`: the recurrent weights' largest
    eigen-angle (pi: Haar; less: phase-limited, eq. (T37))."""
    fp = closed.fixed_point(hp, spec.R_op)
    op = operating_point(hp, spec.R_op, fp, law=input_law(spec))
    f, c, T = op["keep"], op["coupling"], spec.steps
    # the horizon is checked over the padding, or over the whole sequence where every step is informative
    # (unrolled MNIST, CIFAR-10): the first input must then survive all T steps
    n_check = spec.steps - spec.content_steps or spec.steps
    tied = {"radius": op["radius"],
            "log10_rms_gain": 0.5 * math.log10(max(tied_gain(f, c, T, phase), 1e-300))
            if op["radius"] <= 1 + 1e-9 else T * math.log10(op["radius"]),  # above 1 the top eigenvalue dominates
            "log10_min_singular": _log10_singular(f, c, T, phase),
            "phase": phase,
            # the spread of the T-step product's log singular values T log10 |f + c e^{i theta}| (normal
            # product: the moduli of its eigenvalues), theta uniform: their mean and standard deviation
            **_log_singular_spread(f, c, T, phase),
            "horizon": tied_horizon(f, c, n_check, phase=phase) if op["radius"] <= 1 + 1e-9 else None,
            "horizon_steps_checked": n_check}
    m1, lam = (float(np.asarray(v).reshape(-1)[0]) for v in closed.tangent(hp, fp, spec.R_op))
    untied = {"m1": m1, "log10_m1_power_T": T * math.log10(max(m1, 1e-300)), "lambda_c": lam,
              "xi_c": float(closed.xi(lam)), "Q_h": float(np.asarray(fp.q_h).reshape(-1)[0])}
    unsaturated = op.get("dtanh_state", 1.0) >= 0.5 and op["dtanh_candidate"] >= 0.5
    return {"operating_point": op, "tied_linear": tied, "untied": untied, "unsaturated": bool(unsaturated),
            "theory": "tied linearized at the operating point (eqs. (T34)-(T36), (T40)); untied closed forms (eq. (T23))"}


# ----------------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """Where solutions are cached: $MFTRNN_CACHE/critical, else ~/.cache/mftrnn/critical."""
    root = os.environ.get("MFTRNN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mftrnn")
    return Path(root) / "critical"


def solve_cached(spec: CriticalSpec, cache: bool = True,
                 inputs: Optional[WriteInputs] = None) -> tuple[CriticalSolution, bool]:
    """solve(spec, inputs) through the on-disk cache keyed by spec.key() (which holds inputs' key): (solution,
    True if it came from the cache). A sweep's runs with the same T and inputs solve once; a damaged entry
    is solved again."""
    path = cache_dir() / f"{spec.key()}.json"
    if cache and path.exists():
        try:
            sol = CriticalSolution.from_dict(json.loads(path.read_text()))
            if sol.spec == spec:
                return sol, True
        except (ValueError, KeyError, TypeError):
            pass
    sol = solve(spec, inputs)
    if cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(sol.as_dict(), indent=1))
            os.replace(tmp, path)  # atomic: parallel sweep workers never read half a file
        except OSError:
            pass  # a read-only home: the solution is still returned
    return sol, False
