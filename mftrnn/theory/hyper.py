"""The theory's hyperparameters, and the one adapter from the configs (any init scheme) to them.

A cell's mean-field description (docs/theory.md §1, §2.6) is, per gate k: the recurrent scale
sigma_k (entries of U_k with variance sigma_k^2 / n, or sigma_k times a Haar-orthogonal matrix),
the input scale nu_k (entries of W_k with variance nu_k^2 / n_in) and the law of the per-unit
bias, drawn once per unit and kept for every step. For `meanfield` that law is N(mu_k, rho_k^2)
per gate; other schemes have other laws (`BiasLaw`): chrono's log-uniform keep-gate bias with the
LSTM's input bias tied to it (b_i = -b_f), pytorch's sum of two uniform vectors. Every
hyperparameter of a Gate may be an array: the closed forms broadcast over grids.

The adapter `hyper_from_config` maps each init scheme to this description (eq. (T30)); it is the
only place that knows how a scheme writes the weights, besides mftrnn/inits.py, and the tests
check the two against each other on real modules.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Union

import numpy as np
import torch

from mftrnn.cells import CANDIDATE, CELLS, GATES, KEEP
from mftrnn.theory.quadrature import nodes as hermite_nodes

Array = np.ndarray
PARAMS = ("mu", "rho", "sigma", "nu")


@dataclass
class Gate:
    """One gate's hyperparameters (floats or broadcastable arrays): bias N(mu, rho^2) per unit,
    recurrent scale sigma, input scale nu."""

    mu: Array = 0.0
    rho: Array = 0.0
    sigma: Array = 1.0
    nu: Array = 1.0


# ----------------------------------------------------------------------------- bias laws
class BiasLaw:
    """A non-Gaussian law of the per-unit biases of some gates, drawn jointly per unit; it replaces
    the N(mu, rho^2) of those gates. Subclasses give exact samples (population and tied solvers) and
    a quadrature rule (closed forms). Parameters are scalars."""

    gates: tuple[str, ...] = ()

    def sample(self, n: int, gen: torch.Generator, device) -> dict[str, torch.Tensor]:
        """n i.i.d. units: {gate: (n,) float64 biases}."""
        raise NotImplementedError

    def rule(self) -> tuple[dict[str, Array], Array]:
        """Quadrature of the law: {gate: (K,) bias values at the nodes}, weights (K,) summing to 1."""
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def moments(self) -> dict[str, tuple[float, float]]:
        """{gate: (mean, std)} of the law, from its rule (exact for the polynomials it integrates)."""
        vals, w = self.rule()
        return {k: (float(v @ w), float(np.sqrt(max((v * v) @ w - (v @ w) ** 2, 0.0)))) for k, v in vals.items()}


@dataclass(frozen=True)
class ChronoLaw(BiasLaw):
    """Chrono initialization (Tallec & Ollivier 2018): b_keep = log(u), u ~ U[1, t_max - 1] per unit,
    and b = -b_keep for each gate in `negated` (the LSTM's input gate)."""

    keep: str
    t_max: float
    negated: tuple[str, ...] = ()
    points: int = 32

    @property
    def gates(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.keep,) + self.negated

    def _values(self, b: Array) -> dict[str, Array]:
        return {self.keep: b, **{g: -b for g in self.negated}}

    def sample(self, n, gen, device):
        u = torch.rand(n, generator=gen, device=device, dtype=torch.float64)
        return self._values(torch.log1p(u * (self.t_max - 2.0)))

    def rule(self):
        # Gauss-Legendre in u: what the units' statistics depend on is smooth in u (1 - sigma(log u)
        # = 1 / (1 + u)), while in b = log u the law is an exponential density.
        x, w = np.polynomial.legendre.leggauss(self.points)
        u = 1.0 + (x + 1) / 2 * (self.t_max - 2.0)
        return self._values(np.log(u)), w / 2

    def describe(self):
        return {"law": "chrono", "keep": self.keep, "t_max": self.t_max, "negated": list(self.negated)}


@dataclass(frozen=True)
class UniformLaw(BiasLaw):
    """PyTorch's default biases: the sum of `terms` vectors with entries U(-k, k) per unit, k =
    1/sqrt(hidden), independent per gate (bias_ih + bias_hh: two terms, a triangular law on
    [-2k, 2k]; one term: uniform)."""

    gate: str
    k: float
    terms: int = 2

    @property
    def gates(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.gate,)

    def sample(self, n, gen, device):
        u = torch.rand(self.terms, n, generator=gen, device=device, dtype=torch.float64)
        return {self.gate: self.k * (2 * u - 1).sum(0)}

    def rule(self):
        # Two nodes at +-sd, weights 1/2: exact for polynomials up to degree 3. The spread is at most
        # 2/sqrt(H) (0.125 at H = 256), so the error, of order sd^4 times a 4th derivative, is below
        # 1e-4 relative; more nodes per gate would multiply across the G gates (3^4 = 81 for the LSTM).
        sd = self.k * math.sqrt(self.terms / 3)
        return {self.gate: np.array([-sd, sd])}, np.array([0.5, 0.5])

    def describe(self):
        return {"law": "uniform", "gate": self.gate, "k": self.k, "terms": self.terms}


# ----------------------------------------------------------------------------- hyperparameters
@dataclass
class Hyper:
    """A cell (lstm, gru: reset-after as nn.GRU, gru_reset_before: the paper's form), its gates'
    hyperparameters and the non-Gaussian bias laws. `orthogonal` recurrent weights change only m_2
    and the spectra in the untied theory (docs/theory.md §4.2); `phase` < pi limits their eigen-angles
    (docs/theory.md §10.6: the linearized tied theory and simulated networks use it, the untied and the
    tied population theories do not). `source` records the init scheme."""

    cell: str
    gates: dict[str, Gate]
    orthogonal: bool = False
    laws: tuple = ()  # BiasLaw objects; their gates' mu and rho are unused
    source: dict = field(default_factory=dict)
    phase: float = math.pi  # orthogonal only: the recurrent weights' largest eigen-angle

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        missing = set(GATES[self.cell]) - set(self.gates)
        if missing:
            raise ValueError(f"{self.cell} needs gates {GATES[self.cell]}; missing {sorted(missing)}")
        covered = [g for law in self.laws for g in law.gates]
        if len(covered) != len(set(covered)) or not set(covered) <= set(GATES[self.cell]):
            raise ValueError(f"bias laws cover gates {covered}: each gate of {self.cell} at most once")

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

    @property
    def law_gates(self) -> set[str]:
        return {g for law in self.laws for g in law.gates}

    def shape(self) -> tuple[int, ...]:
        """The broadcast shape of the hyperparameters (() for one point, the grid's shape else)."""
        return np.broadcast_shapes(*(np.shape(getattr(g, a)) for g in self.gates.values() for a in PARAMS))

    def bias_moments(self) -> dict[str, tuple]:
        """{gate: (mean, std)} of each gate's per-unit bias law."""
        out = {k: (g.mu, g.rho) for k, g in self.gates.items()}
        for law in self.laws:
            out.update(law.moments())
        return out

    def describe(self) -> dict:
        """A JSON-ready description: per-gate scales and bias laws, the recurrent kind, the source."""
        to = lambda v: np.asarray(v, float).tolist()  # noqa: E731
        gates = {k: {a: to(getattr(g, a)) for a in PARAMS} for k, g in self.gates.items()}
        for k in self.law_gates:
            gates[k].pop("mu"), gates[k].pop("rho")
        out = {"cell": self.cell, "recurrent": "orthogonal" if self.orthogonal else "gaussian", "gates": gates,
               "bias_laws": [law.describe() for law in self.laws], "source": self.source}
        if self.phase_limited:
            out["phase"] = self.phase
        return out

    @property
    def phase_limited(self) -> bool:
        """Orthogonal recurrent weights with limited eigen-angles (docs/theory.md §10.6): the untied and
        the tied population theories, which draw Gaussian or Haar weights, do not describe them."""
        return self.phase < math.pi

    def sample_biases(self, n: int, gen: torch.Generator, device, batch: Optional[dict] = None) -> dict:
        """Per-unit biases for the population and tied solvers: {gate: tensor}. Gaussian gates draw
        mu + rho * eps, eps (n,) standard normal per gate, in gate order; with `batch` = {gate:
        {"mu": (B, 1, 1), "rho": (B, 1, 1)}} the draws are shared by a grid and come out (B, 1, n).
        Law gates draw from their law (scalar parameters)."""
        names = GATES[self.cell]
        eps = torch.randn(len(names), n, generator=gen, device=device, dtype=torch.float64)
        out = {}
        for j, k in enumerate(names):
            if batch is None:
                g = self.gates[k]
                out[k] = float(np.asarray(g.mu)) + float(np.asarray(g.rho)) * eps[j]
            else:
                out[k] = batch[k]["mu"] + batch[k]["rho"] * eps[j]
        for law in self.laws:
            for k, v in law.sample(n, gen, device).items():
                out[k] = v if batch is None else v.expand(next(iter(batch.values()))["mu"].shape[0], 1, n)
        return out


# ----------------------------------------------------------------------------- quadrature over units
NODES_PER_GAUSSIAN = {1: 16, 2: 8, 3: 4}  # per spread gate, by the number of spread gates (else 3)


def unit_rule(hp: Hyper) -> tuple[Hyper, Array]:
    """The per-unit bias law as a quadrature rule, eq. (T31): a Hyper whose gates' mu carry a
    trailing node axis (..., K) with rho = 0, and the node weights (K,), summing to 1.

    Each unit sees fresh Gaussian fields whose statistics are population averages, and its own
    persistent biases (docs/theory.md §2.6): every per-unit statistic is computed at each node and
    the population average is the weighted sum over the node axis. Gaussian gates with rho > 0
    anywhere on the grid get Gauss-Hermite nodes (16 for one such gate, 8 each for two, 4 for three,
    3 for four); every BiasLaw its own rule; the nodes of independent factors form a product.
    With no spread the rule is one node of weight 1 and the Hyper keeps its shape plus (1,)."""
    spread = [k for k, g in hp.gates.items() if k not in hp.law_gates and np.any(np.asarray(g.rho) > 0)]
    per = NODES_PER_GAUSSIAN.get(len(spread), 3)
    factors: list[tuple[dict[str, Array], Array]] = []
    for k in spread:
        x, w = hermite_nodes(per)
        g = hp.gates[k]
        factors.append(({k: np.asarray(g.mu, float)[..., None] + np.asarray(g.rho, float)[..., None] * x}, w))
    factors += [law.rule() for law in hp.laws]
    values: dict[str, Array] = {}
    weights = np.ones(1)
    for vals, w in factors:  # outer product of the factors, node axis last
        k_old, k_new = weights.size, w.size
        values = {g: np.repeat(v, k_new, axis=-1) for g, v in values.items()}
        values.update({g: np.tile(np.asarray(v, float), np.ones(np.ndim(v), int).tolist()[:-1] + [k_old])
                       for g, v in vals.items()})
        weights = np.repeat(weights, k_new) * np.tile(w, k_old)
    gates = {}
    for k, g in hp.gates.items():
        mu = values[k] if k in values else np.asarray(g.mu, float)[..., None]
        gates[k] = Gate(mu=mu, rho=np.zeros(1), sigma=np.asarray(g.sigma, float)[..., None],
                        nu=np.asarray(g.nu, float)[..., None])
    return replace(hp, gates=gates, laws=()), weights


# ----------------------------------------------------------------------------- config adapter
def _glorot_nu2(n_in: int, rows: int) -> float:
    """nu^2 of a Glorot-uniform input kernel of shape (rows, n_in): entry variance 2 / (n_in + rows)."""
    return 2.0 * n_in / (n_in + rows)


def _adapt_meanfield(cell: str, init, hidden: int, n_in: int, seq_len: int) -> tuple[dict, bool, tuple]:
    gates = {k: Gate(**{a: float(getattr(getattr(init.gates, k), a)) for a in PARAMS}) for k in GATES[cell]}
    return gates, init.recurrent.value == "orthogonal", ()


def _adapt_pytorch(cell: str, init, hidden: int, n_in: int, seq_len: int) -> tuple[dict, bool, tuple]:
    # U(-k, k), k = 1/sqrt(H), for every entry: variance 1/(3H), so sigma^2 = 1/3 and nu^2 = n_in/(3H);
    # each gate's effective bias b_ih + b_hh is a sum of two such uniforms. The GRU's b_hn sits inside
    # the reset product, r * (U_n h + b_hn); the theory keeps b_in only (|b_hn| <= 1/sqrt(H)).
    k = 1.0 / math.sqrt(hidden)
    gates = {g: Gate(sigma=math.sqrt(1 / 3), nu=math.sqrt(n_in / (3 * hidden))) for g in GATES[cell]}
    laws = tuple(UniformLaw(g, k, terms=1 if (cell != "lstm" and g == "n") else 2) for g in GATES[cell])
    return gates, False, laws


def _adapt_standard(cell: str, init, hidden: int, n_in: int, seq_len: int) -> tuple[dict, bool, tuple]:
    # Glorot-uniform input kernel over all gates (rows G*H), an orthogonal H x H block per gate
    # (sigma = 1), zero biases but the LSTM's forget bias 1.
    nu = math.sqrt(_glorot_nu2(n_in, len(GATES[cell]) * hidden))
    gates = {g: Gate(mu=1.0 if (cell == "lstm" and g == "f") else 0.0, sigma=1.0, nu=nu) for g in GATES[cell]}
    return gates, True, ()


def _adapt_chrono(cell: str, init, hidden: int, n_in: int, seq_len: int) -> tuple[dict, bool, tuple]:
    gates, orthogonal, _ = _adapt_standard(cell, init, hidden, n_in, seq_len)
    t_max = init.t_max if init.t_max is not None else seq_len
    law = ChronoLaw(KEEP[cell], float(t_max), ("i",) if cell == "lstm" else ())
    for g in law.gates:
        gates[g] = replace(gates[g], mu=0.0, rho=0.0)
    return gates, orthogonal, (law,)


ADAPTERS: dict[str, Callable] = {
    "meanfield": _adapt_meanfield,
    "pytorch": _adapt_pytorch,
    "standard": _adapt_standard,
    "chrono": _adapt_chrono,
}


def hyper_from_config(cell_kind, init, hidden: int, input_size: int, seq_len: int,
                      gru_form: Union[str, object] = "reset_after",
                      drive: Optional[tuple[Optional[float], Optional[float]]] = None) -> Hyper:
    """The mean-field description of layer 0 of `cell_kind` (CellKind or name) initialized by `init`
    (an InitConfig of any scheme but critical, which is solved into a meanfield one first), for
    hidden size `hidden`, input size `input_size` and a task of `seq_len` steps (chrono's T_max),
    eq. (T30), with the init's drive (init.drive: the gates' and the candidate's input scales, None
    for the scheme's own; `drive` = (gates, candidate) as resolved, for init.drive.theory=true).
    `gru_form` (GruForm or name) selects the paper's reset-before GRU for cell=gru."""
    cell = getattr(cell_kind, "value", cell_kind)
    scheme = getattr(init.scheme, "value", init.scheme)
    if getattr(gru_form, "value", gru_form) == "reset_before" and cell == "gru":
        cell = "gru_reset_before"
    if scheme not in ADAPTERS:
        raise ValueError(f"init={scheme} has no mean-field description; known: {sorted(ADAPTERS)}")
    gates, orthogonal, laws = ADAPTERS[scheme](cell, init, hidden, input_size, seq_len)
    if drive is None:
        given = getattr(init, "drive", None)
        if given is not None and given.theory:
            raise ValueError("init.drive.theory=true: the drive is solved from the task's inputs; pass drive=(gates, "
                             "candidate) as resolved (mftrnn.inits.theory_drive)")
        drive = (given.gates, given.candidate) if given is not None else (None, None)
    for g in gates:  # the drive replaces the scheme's input scales (mftrnn.inits.apply_drive)
        nu = drive[1] if g == CANDIDATE[cell] else drive[0]
        if nu is not None:
            gates[g] = replace(gates[g], nu=float(nu))
    return Hyper(cell, gates, orthogonal, laws, source={"init": scheme, "hidden": hidden, "input_size": input_size,
                                                        "seq_len": seq_len}, phase=getattr(init, "phase", math.pi))



def for_config(conf, gru_form="reset_after", drive=None) -> Hyper:
    """The adapter for a whole config (TrainConfig or TheoryConfig: cell, init, model, task): the
    input size and length come from the task (no data is loaded); `drive` as for hyper_from_config."""
    from mftrnn.tasks import build_task

    task = build_task(conf.task)
    return hyper_from_config(conf.cell.kind, conf.init, conf.model.hidden, task.input_size, task.seq_len, gru_form,
                             drive)
