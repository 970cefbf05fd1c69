"""Two sequences through a theory: the trajectory of their lengths and overlap, and the memory horizon.

One call for every theory: the untied one (the paper's: closed forms or the population solver,
mftrnn.theory.stationary.choose_method) and the tied one (mftrnn/theory/tied.py, the weights real
networks reuse at every step), on the inputs of mftrnn.theory.inputs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from mftrnn.theory import closed
from mftrnn.theory.hyper import Hyper
from mftrnn.theory.inputs import TwoInputs
from mftrnn.theory.stationary import DEFAULT_POPULATION, choose_method


@dataclass
class Trajectory:
    """Population statistics of two sequences at t = 0..T (arrays (T+1, *grid))."""

    t: np.ndarray
    q_h_a: np.ndarray  # |h_a|^2 / n
    q_h_b: np.ndarray
    c_h: np.ndarray  # h_a . h_b / n
    d_h: np.ndarray  # |h_a - h_b|^2 / 2n, the distance of eq. (T29)
    d_h_se: Optional[np.ndarray]  # its standard error (sampled solvers), else None
    q_s_a: Optional[np.ndarray]  # LSTM cell state
    c_s: Optional[np.ndarray]
    theory: str  # "untied" or "tied"
    method: str  # untied: "closed" or "population"; tied: "population"
    steps: int
    split: int

    @property
    def one_minus_c(self) -> np.ndarray:
        """1 - C/Q = d_h / sqrt(Q_a Q_b); NaN where both states are (still) zero: at t = 0, and while
        a task's inputs are zero."""
        q = np.sqrt(np.maximum(self.q_h_a * self.q_h_b, 1e-300))
        out = self.d_h / q
        top = np.nanmax(q, axis=0) if q.ndim > 1 else np.nanmax(q)
        out = np.where(q <= 1e-12 * np.maximum(top, 1e-300), np.nan, out)
        out[0] = np.nan
        return out

    def horizon(self, eps: float) -> np.ndarray:
        """The memory horizon, eq. (T29): steps after the split until the distance falls below eps
        times its value at the split (NaN: longer than the trajectory)."""
        return closed.memory_horizon(self.d_h, self.split, eps)


def two_sequences(hp: Hyper, inputs: TwoInputs, theory: str = "untied", method: str = "auto",
                  population: Optional[int] = None, seed: int = 0, device=None) -> Trajectory:
    """The two-sequence trajectory of `inputs` under the untied or the tied theory. `population`
    (sampled solvers) defaults to DEFAULT_POPULATION of the case."""
    theory = getattr(theory, "value", theory)
    if theory == "tied":
        from mftrnn.theory import tied

        pop = population or DEFAULT_POPULATION["tied"]
        raw, how = tied.trajectory(hp, inputs.features(), pop, seed, device), "population"
    else:
        how = choose_method(method, hp.cell, trajectory=True)
        if how == "closed":
            raw = closed.trajectory(hp, inputs.steps, inputs.split, inputs.R, inputs=inputs.moments)
        else:
            from mftrnn.theory import population as popmod

            explicit = getattr(method, "value", method) == "population"
            pop = population or DEFAULT_POPULATION["untied" if explicit else "untied_trajectory"]
            raw = popmod.trajectory(hp, inputs.steps, inputs.split, inputs.R, pop, seed, device, inputs=inputs.moments)
    lstm = "q_s_a" in raw
    return Trajectory(t=raw["t"], q_h_a=raw["q_h_a"], q_h_b=raw["q_h_b"], c_h=raw["c_h"], d_h=raw["d_h"],
                      d_h_se=raw.get("d_h_se"), q_s_a=raw["q_s_a"] if lstm else None,
                      c_s=raw["c_s"] if lstm else None, theory=theory, method=how, steps=inputs.steps,
                      split=inputs.split)


def memory(traj: Trajectory, eps: float) -> dict:
    """The memory of one trajectory, eq. (T29): the horizon (None: longer than the T - split steps
    shown) and the distance at the end relative to the split's."""
    out = {"eps": eps, "split": traj.split, "steps_after_split": traj.steps - traj.split}
    if traj.split == 0 or traj.split >= traj.steps:
        out.update(horizon=None, note="no step after the split, or identical inputs throughout: no horizon")
        return out
    h = float(traj.horizon(eps))
    d0 = float(traj.d_h[traj.split])
    out.update(horizon=None if np.isnan(h) else h,
               distance_at_split=d0, distance_at_end=float(traj.d_h[-1]),
               distance_ratio_at_end=float(traj.d_h[-1] / d0) if d0 > 0 else None)
    return out


def memory_of(hp: Hyper, inputs: TwoInputs, theory: str, eps: float, population: Optional[int] = None,
              seed: int = 0, device="cpu") -> tuple[Trajectory, dict]:
    """`two_sequences` and its `memory`, with 1 - C/Q at the last step, the method and the seconds it
    took: what `mftrnn critical` and `mftrnn diagnose` report of a theory beside a network."""
    t0 = time.perf_counter()
    tr = two_sequences(hp, inputs, theory, population=population, seed=seed, device=device)
    mem = memory(tr, eps)
    mem.update(one_minus_c_at_end=float(tr.one_minus_c[-1]), method=tr.method, seconds=time.perf_counter() - t0)
    return tr, mem
