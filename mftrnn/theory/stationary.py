"""The stationary quantities of the untied theory (the paper's): one call for any cell, any init,
one point or a batch, and the one place that chooses how they are computed.

Methods (docs/theory.md §2.5):

* "closed": the deterministic per-unit quadrature of mftrnn/theory/closed.py. Exact for the GRU
  under any bias law; for the LSTM the cell state's law is closed by a Gaussian of its exact mean
  and variance (error measured in docs/theory.md §2.6). Vectorized: hyperparameters may be arrays.
* "population": the sampled exact untied mean field of mftrnn/theory/population.py (scalars only).

"auto" is "closed" for everything but the LSTM's two-sequence trajectories: there the cell-state
closure's error on 1 - C/Q reaches 15 % (docs/theory.md §2.6), more than a population of 20,000
units makes (3 %, reported as a standard error), so those use the population.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from mftrnn.theory import closed
from mftrnn.theory.hyper import Hyper

METHODS = ("auto", "closed", "population")
# units of the sampled solvers: the untied population when asked for (noise ~0.2 %), the LSTM's
# trajectories under "auto" (~3 % on 1 - C/Q), the tied theory (cost ~ P N^2)
DEFAULT_POPULATION = {"untied": 200_000, "untied_trajectory": 20_000, "tied": 20_000}


def choose_method(requested: str = "auto", cell: str = "", trajectory: bool = False) -> str:
    """The method that computes the untied theory (docs/theory.md §2.5): 'population' when asked
    for, or for an LSTM's two-sequence trajectory under 'auto'; else 'closed'."""
    requested = getattr(requested, "value", requested)
    if requested not in METHODS:
        raise ValueError(f"method={requested!r} is not allowed: method must be one of {METHODS}")
    if requested == "auto":
        return "population" if (trajectory and cell == "lstm") else "closed"
    return requested


@dataclass
class Stationary:
    """Population values at the fixed point (arrays of the hyperparameters' shape)."""

    q_h: np.ndarray  # Q_h*, eqs. (T6), (T10)
    m_h: np.ndarray  # mean of h (GRU)
    q_s: Optional[np.ndarray]  # LSTM cell state: second moment and mean
    m_s: Optional[np.ndarray]
    m1: np.ndarray  # one-step (1/n) E tr(J J^T), eq. (T23)
    lambda_c: np.ndarray  # growth of a small distance per step, eq. (T18); xi_C = -1/ln lambda_C
    lambda_q: np.ndarray  # relaxation of the length per step; xi_Q = -1/ln lambda_Q
    method: str
    spread: bool  # True when some gate's bias varies across units (lambda_C then averages a window)

    @property
    def xi_c(self) -> np.ndarray:
        return closed.xi(self.lambda_c)

    @property
    def xi_q(self) -> np.ndarray:
        return closed.xi(self.lambda_q)

    def as_dict(self) -> dict:
        out = {"Q_h": self.q_h, "M_h": self.m_h, "m1": self.m1, "lambda_C": self.lambda_c, "xi_C": self.xi_c,
               "lambda_Q": self.lambda_q, "xi_Q": self.xi_q, "method": self.method}
        if self.q_s is not None:
            out.update(Q_s=self.q_s, M_s=self.m_s)
        return out


def has_spread(hp: Hyper) -> bool:
    return bool(hp.laws) or any(np.any(np.asarray(g.rho) > 0) for g in hp.gates.values())


def stationary(hp: Hyper, R=0.0, method: str = "auto", population: Optional[int] = None, seed: int = 0,
               device: Optional[str] = None, with_length: bool = True) -> Stationary:
    """Fixed point, m_1, lambda_C (xi_C) and lambda_Q (xi_Q) of the untied theory at input second
    moment R. 'population' replaces the fixed point and lambda_C by the sampled solver's; m_1 and
    lambda_Q stay closed-form. `with_length=False` skips lambda_Q (NaN), the costliest part with a
    bias spread."""
    method = choose_method(method)
    fp = closed.fixed_point(hp, R)
    lam_q = closed.length_slope(hp, fp, R) if with_length else np.full(np.shape(fp.q_h), np.nan)
    m_1, lam_c = closed.tangent(hp, fp, R)
    out = Stationary(q_h=fp.q_h, m_h=fp.m_h, q_s=fp.q_s if hp.cell == "lstm" else None,
                     m_s=fp.m_s if hp.cell == "lstm" else None, m1=m_1, lambda_c=lam_c, lambda_q=lam_q,
                     method=method, spread=has_spread(hp))
    if method == "population":
        from mftrnn.theory import population as pop

        population = population or DEFAULT_POPULATION["untied"]
        pfp = pop.fixed_point(hp, float(R), population, seed=seed, device=device)
        out.q_h, out.m_h = np.asarray(pfp["q_h"]), np.asarray(pfp["m_h"])
        if hp.cell == "lstm":
            out.q_s, out.m_s = np.asarray(pfp["q_s"]), np.asarray(pfp["m_s"])
        out.lambda_c = np.asarray(pop.tangent_growth(hp, float(R), population, seed=seed, device=device,
                                                     steps=closed.WINDOW))
    return out
