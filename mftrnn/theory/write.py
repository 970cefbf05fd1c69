"""The theory of the write: how well the state at the last step tells two inputs apart (docs/theory.md §10.8).

The critical conditions of §10.2 concern the long stretch of a task (the padding), where the gates sit at
their biases. What the network must carry across it is decided before, on the informative steps, where the
gates' input weights act: driven hard by the input, a gate opens or closes per unit and per step, and the
example is written into the state in a few input-selected steps instead of being integrated with the small
weight 1 - f. This module predicts the outcome from the task's own inputs:

    D_T = < 1 - C_ab / sqrt(Q_a Q_b) >_pairs  at the last step,   C_ab = h_a . h_b / n,  Q_a = |h_a|^2 / n   (T38)

for pairs (a, b) of examples with different labels, run through

* the informative steps (the image; for a task without padding, the whole sequence, its first steps with
  fresh recurrent fields where it is long, eq. (T41)), by the tied population of §7.2 (eqs. (T25)-(T28))
  fed the pairs' real sequences: the input field of a
  unit is W_k x with Gaussian W_k, exactly Gaussian across units whatever the law of x, with the Gram
  matrix of the real steps as its covariance (eq. (T26)), so 30 % blank rows and rows eight times brighter
  than the rms enter as they are, not through their second moment;
* a short relaxation into the padding (`relax` steps, zero input), where the strong write's large state
  shrinks towards the linear regime and the tanh compresses it;
* the rest of the padding in the linearized tied theory (eq. (T36)): J = f I + c O multiplies the
  difference of two states and the states themselves by the same mean-square gain, so D_T is held.

Phase-limited recurrent weights (§10.6) are modelled as O = a I + sqrt(1 - a^2) G with a = E cos(theta) =
sin(phase) / phase and G a tied Gaussian field (eq. (T39)): the unit's own state plus a small field. The
model is for the write and a short relaxation only: its linearization has a disk of eigenvalues where the
real matrix has an arc, so over a long padding it would grow where the arc does not.

Everything here is float64 on the CPU unless a device is given: `mftrnn.theory.critical` chooses the
gates' input scale from it, and the choice must be the same on every machine.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import torch

from mftrnn.theory import tied
from mftrnn.theory.hyper import Hyper

Tensor = torch.Tensor


@dataclass
class WriteInputs:
    """Pairs of a task's sequences for the theory of the write: x (T_w, 2P, n_in), pair j = (x[:, 2j],
    x[:, 2j+1]) of different labels, identical after `content` steps (the same zero padding), `relax` =
    T_w - content steps of padding in x; `steps` the task's T. A task without padding has x = the whole
    sequences (content = T_w = T) and `burn_in` > 0 where they are too long for the tied kernel: its first
    burn_in steps run with fresh recurrent fields (eq. (T41)). `r_content`: per-step input second moments
    |x_t|^2 / n_in of the informative steps, (content, 2P)."""

    x: Tensor  # (T_w, 2P, n_in) float64
    content: int
    steps: int
    burn_in: int = 0

    def __post_init__(self) -> None:
        if self.x.ndim != 3 or self.x.shape[1] < 2 or self.x.shape[1] % 2:
            raise ValueError(f"x must be (T_w, 2P, n_in) with P >= 1 pairs; got {tuple(self.x.shape)}")
        if not 1 <= self.content <= self.x.shape[0] <= self.steps:
            raise ValueError(f"need 1 <= content <= T_w <= steps; got {self.content}, {self.x.shape[0]}, {self.steps}")
        if not 0 <= self.burn_in < self.content:
            raise ValueError(f"need 0 <= burn_in < content; got {self.burn_in}, {self.content}")
        self.x = self.x.to(torch.float64).cpu()

    @property
    def pairs(self) -> int:
        return self.x.shape[1] // 2

    @property
    def relax(self) -> int:
        return self.x.shape[0] - self.content

    @property
    def r_content(self) -> np.ndarray:
        return (self.x[:self.content] ** 2).mean(-1).numpy()  # (content, 2P)

    def key(self) -> str:
        """A stable hash of the sequences and the layout: part of the critical solver's cache key."""
        h = hashlib.sha1(self.x.numpy().tobytes())
        h.update(f"{tuple(self.x.shape)}/{self.content}/{self.steps}/{self.burn_in}".encode())
        return h.hexdigest()[:16]

    def describe(self) -> dict:
        return {"pairs": self.pairs, "content_steps": self.content, "relax_steps": self.relax, "steps": self.steps,
                "burn_in": self.burn_in, "input_size": int(self.x.shape[2]), "key": self.key()}


def pair_statistics(h: Tensor) -> dict[str, Tensor]:
    """Per pair (2j, 2j+1) of h (..., 2P, n): 1 - C/sqrt(Q_a Q_b), d = |h_a - h_b|^2 / 2n and Q = (Q_a + Q_b)/2,
    each (..., P). Zero states give 1 - C/Q = 0 (nothing to tell apart)."""
    ha, hb = h[..., 0::2, :], h[..., 1::2, :]
    qa, qb = (ha * ha).mean(-1), (hb * hb).mean(-1)
    c = (ha * hb).mean(-1)
    root = torch.sqrt(qa * qb)
    omc = torch.where(root > 0, 1 - c / root.clamp(min=1e-300), torch.zeros_like(root))
    return {"one_minus_c": omc, "distance": 0.5 * ((ha - hb) ** 2).mean(-1), "q": 0.5 * (qa + qb)}


def separation(hp: Hyper, inputs: WriteInputs, population: int = 2000, seed: int = 0,
               device: Optional[Union[str, torch.device]] = "cpu") -> dict[str, np.ndarray]:
    """Eq. (T38) for `hp` (scalar or a grid of hyperparameters, shape G) on `inputs`: the tied population
    (eqs. (T25)-(T28), with the self-coupling of eq. (T39) for phase-limited weights) through the pairs'
    sequences. Returns, averaged over the pairs, arrays of shape (T_w + 1, *G) (t = 0: the zero state):
    `one_minus_c`, `distance`, `q`; and `one_minus_c_end` (*G), the prediction D_T (held over the rest of
    the padding, eq. (T36)), with `one_minus_c_split` at the end of the informative steps and the spread
    over pairs `one_minus_c_end_sd`."""
    coupling = tied.self_coupling(hp)
    feats = tied.sequence_features(inputs.x)  # (2P, T_w, n_in)
    shape = hp.shape()
    stats = []
    for h, _ in tied.states(hp, feats, population, seed, device, tied=True, coupling=coupling, burn_in=inputs.burn_in):
        stats.append(pair_statistics(h))  # each (B, P)
    out = {}
    for key in ("one_minus_c", "distance", "q"):
        per = torch.stack([torch.zeros_like(stats[0][key])] + [s[key] for s in stats])  # (T_w + 1, B, P)
        out[key] = per.mean(-1).cpu().numpy().reshape((len(stats) + 1,) + shape)
        if key == "one_minus_c":
            end = per[-1].cpu().numpy()  # (B, P)
    out["one_minus_c_end"] = out["one_minus_c"][-1]
    out["one_minus_c_split"] = out["one_minus_c"][inputs.content]
    out["one_minus_c_end_sd"] = end.std(-1).reshape(shape)
    return out
