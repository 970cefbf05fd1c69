"""Measurements of a real network, initialized or trained (docs/theory.md §10.4): what `mftrnn diagnose` reports.

On real examples of the task, through the network's own nn.LSTM / nn.GRU (the module `mftrnn train`
builds and initializes):

* gains of the product of the state-to-state Jacobians over the task's padding (all steps for a task
  without padding): |J^T u| / |u| for random unit u over the final state (h, c for the LSTM; h for the
  GRU), J = d state_T / d state_start, by one backward pass through the module (what training sees);
  and the gain curve |delta h_t| / |delta s_start| at every step from a small perturbation (float64);
* how well the final state still tells two different inputs apart: for pairs of test examples of
  different labels with the same padding, 1 - C/Q at the last step (C = h_a.h_b / n, Q = sqrt(Q_a Q_b)),
  the distance d = |h_a - h_b|^2 / 2n at the end relative to its value where the padding began (the
  ratio of eq. (T29)) and relative to the state's size Q there;
* the empirical memory horizon: steps after the split until the pairs' mean distance falls below eps
  times its value at the split, eq. (T29);
* the spectral radius of the one-step Jacobian at the zero state with zero input, eq. (T34).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

Tensor = torch.Tensor
UNDERFLOW = 1e-300  # gains below this (float64 underflow of the backward pass) are reported as this


@dataclass
class Pairs:
    """Pairs of task sequences: x (T, 2P, n_in) with a = x[:, 0::2], b = x[:, 1::2], identical after
    `split` (the same padding); their labels (2P,)."""

    x: Tensor
    labels: list
    split: int


def pairs_of_examples(task, test_x: Tensor, test_y: Tensor, n_pairs: int, seed: int = 0) -> Pairs:
    """The first n_pairs pairs of consecutive test examples with different labels, as task sequences
    (T, 2 n_pairs, n_in) with the padding of a copied into b. For a task without padding the split is
    the last step at which some pair differs."""
    idx, j = [], 0
    while len(idx) < 2 * n_pairs and j + 1 < len(test_y):
        if int(test_y[j]) != int(test_y[j + 1]):
            idx += [j, j + 1]
            j += 2
        else:
            j += 1
    if len(idx) < 2 * n_pairs:
        raise ValueError(f"fewer than {n_pairs} pairs of consecutive examples with different labels")
    gen = torch.Generator(device=test_x.device).manual_seed(seed)
    x = task.sequences(test_x[idx], gen)  # (T, 2P, n_in)
    content = task.content_steps
    x[content:, 1::2] = x[content:, 0::2]
    differ = (x[:, 0::2] != x[:, 1::2]).flatten(1).any(-1).nonzero()
    split = int(differ.max()) + 1 if len(differ) else 0
    return Pairs(x, [int(test_y[i]) for i in idx], split)


@torch.no_grad()
def run_to(rnn: nn.RNNBase, x: Tensor, steps: int):
    """The module's state after the first `steps` steps of x (zero state if steps = 0)."""
    if steps == 0:
        b, n = x.shape[1], rnn.hidden_size
        z = x.new_zeros(1, b, n)
        return (z, z.clone()) if isinstance(rnn, nn.LSTM) else z
    return rnn(x[:steps])[1]


def jacobian_gains(rnn: nn.RNNBase, x: Tensor, start: int, probes: int, seed: int = 0) -> np.ndarray:
    """log10 |J^T u| / |u| for `probes` random unit u per sequence of x (T, B, n_in): J is the product
    of the module's Jacobians from the state after `start` steps to the final state (LSTM (h, c),
    GRU h), by one backward pass. Returns (B, probes)."""
    state0 = run_to(rnn, x, start)
    rep = lambda t: t.repeat_interleave(probes, dim=1)  # noqa: E731  (1, B K, n)
    leaves = [rep(s).detach().requires_grad_(True) for s in (state0 if isinstance(state0, tuple) else (state0,))]
    state = tuple(leaves) if len(leaves) == 2 else leaves[0]
    with torch.enable_grad():
        _, final = rnn(x[start:].repeat_interleave(probes, dim=1), state)  # (T - start, B K, n_in)
        finals = final if isinstance(final, tuple) else (final,)
        gen = torch.Generator().manual_seed(seed)
        us = [torch.randn(f.shape, generator=gen, dtype=torch.float64).to(f) for f in finals]
        norm = torch.sqrt(sum((u ** 2).sum(-1) for u in us))  # (1, B K)
        us = [u / norm[..., None] for u in us]
        grads = torch.autograd.grad(sum((f * u).sum() for f, u in zip(finals, us)), leaves)
    gain = torch.sqrt(sum((g ** 2).sum(-1) for g in grads))[0]  # (B K,)
    # a gain below float64's range comes out 0: it is reported at the floor (see `measure`'s underflow)
    return torch.log10(gain.clamp(min=UNDERFLOW)).reshape(-1, probes).detach().cpu().numpy()


@torch.no_grad()
def gain_curve(rnn: nn.RNNBase, x: Tensor, start: int, eps: float = 1e-7, seed: int = 0) -> np.ndarray:
    """log10 |delta h_t| / |delta s_start| at t = start..T for a random perturbation of size eps of the
    full state after `start` steps, per sequence (float64 finite differences): (T - start + 1, B)."""
    state0 = run_to(rnn, x, start)
    parts = state0 if isinstance(state0, tuple) else (state0,)
    gen = torch.Generator().manual_seed(seed)
    dirs = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for p in parts]
    norm = torch.sqrt(sum((d ** 2).sum(-1) for d in dirs))[..., None]
    moved = [p + eps * d / norm for p, d in zip(parts, dirs)]
    both = tuple(torch.cat([p, m], 1) for p, m in zip(parts, moved))
    out, _ = rnn(torch.cat([x[start:], x[start:]], 1), both if len(both) == 2 else both[0])
    b = x.shape[1]
    delta = (out[:, b:] - out[:, :b]).norm(dim=-1) / eps  # (T - start, B)
    first = (moved[0] - parts[0])[0].norm(dim=-1) / eps  # |delta h| at the start
    curve = torch.cat([first[None], delta], 0)
    return torch.log10(curve.clamp(min=1e-300)).cpu().numpy()


@torch.no_grad()
def pair_distances(rnn: nn.RNNBase, pairs: Pairs) -> dict[str, np.ndarray]:
    """Per step t = 0..T and pair: d = |h_a - h_b|^2 / 2n, Q_a, Q_b, C = h_a.h_b / n (h_0 = 0)."""
    out, _ = rnn(pairs.x)  # (T, 2P, n)
    out = torch.cat([out.new_zeros(1, *out.shape[1:]), out], 0)  # (T+1, 2P, n)
    ha, hb = out[:, 0::2], out[:, 1::2]
    n = out.shape[-1]
    return {"d": (((ha - hb) ** 2).sum(-1) / (2 * n)).cpu().numpy(), "q_a": ((ha ** 2).sum(-1) / n).cpu().numpy(),
            "q_b": ((hb ** 2).sum(-1) / n).cpu().numpy(), "c": ((ha * hb).sum(-1) / n).cpu().numpy()}


def one_minus_c(dist: dict[str, np.ndarray], t: int) -> np.ndarray:
    """1 - C/sqrt(Q_a Q_b) of each pair at step t, from `pair_distances` (the quantity of eq. (T38)): (P,)."""
    return 1.0 - dist["c"][t] / np.sqrt(np.maximum(dist["q_a"][t] * dist["q_b"][t], 1e-300))


def zero_state_radius(rnn: nn.RNNBase) -> float:
    """The spectral radius of the module's one-step state Jacobian at the zero state with zero input
    (the operating point of zero padding, docs/theory.md eq. (T34)): max |eigenvalue| of d(h', c') /
    d(h, c) (LSTM) or d h' / d h (GRU), by autograd through one step of the module."""
    n, lstm = rnn.hidden_size, isinstance(rnn, nn.LSTM)
    dt, dev = rnn.weight_hh_l0.dtype, rnn.weight_hh_l0.device
    x = torch.zeros(1, 1, rnn.input_size, dtype=dt, device=dev)

    def step(s: Tensor) -> Tensor:  # (D,) -> (D,)
        if lstm:
            _, (h, c) = rnn(x, (s[:n].view(1, 1, n), s[n:].view(1, 1, n)))
            return torch.cat([h.reshape(-1), c.reshape(-1)])
        return rnn(x, s.view(1, 1, n))[1].reshape(-1)

    with torch.enable_grad():
        jac = torch.autograd.functional.jacobian(step, torch.zeros((2 if lstm else 1) * n, dtype=dt, device=dev))
    return float(torch.linalg.eigvals(jac.cpu()).abs().max())


def horizon(d: np.ndarray, split: int, eps: float) -> Optional[int]:
    """Eq. (T29) on a measured mean distance d (T+1,): the first tau >= 1 with d(split + tau) < eps
    d(split); None when it does not happen within the sequence."""
    if split >= len(d) - 1 or d[split] <= 0:
        return None
    below = np.flatnonzero(d[split + 1:] < eps * d[split])
    return int(below[0]) + 1 if below.size else None


def measure(rnn: nn.RNNBase, pairs: Pairs, start: int, probes: int, eps: float, seed: int = 0) -> dict:
    """Every measurement of the module docstring on `pairs` (gains on the a-sequences): a JSON-ready
    dict, with the curves for plotting (gain_curve: mean and std over sequences, distance ratio)."""
    xa = pairs.x[:, 0::2]
    logs = jacobian_gains(rnn, xa, start, probes, seed)  # (P, K)
    curve = gain_curve(rnn, xa, start, seed=seed)  # (T - start + 1, P)
    dist = pair_distances(rnn, pairs)
    d, split, T = dist["d"], pairs.split, pairs.x.shape[0]
    omc_end, omc_split = one_minus_c(dist, -1), one_minus_c(dist, split)  # (P,) each
    d_mean = d.mean(1)  # (T+1,)
    q_split = 0.5 * (dist["q_a"][split] + dist["q_b"][split])
    return {
        "steps": T, "start": start, "split": split, "pairs": int(d.shape[1]), "probes": probes,
        "log10_gain": {"mean": float(logs.mean()), "std": float(logs.std()), "min": float(logs.min()),
                       "max": float(logs.max()), "per_sequence_mean": logs.mean(1).tolist(),
                       "underflow": float((logs <= np.log10(UNDERFLOW)).mean())},
        "one_minus_c_end": {"mean": float(omc_end.mean()), "min": float(omc_end.min()),
                            "max": float(omc_end.max()), "per_pair": omc_end.tolist()},
        "one_minus_c_split": float(omc_split.mean()),
        "distance_end": float(d_mean[-1]),
        "distance_ratio_end": float(d_mean[-1] / d_mean[split]) if d_mean[split] > 0 else None,
        "distance_end_over_Q_at_split": float(d_mean[-1] / q_split.mean()) if q_split.mean() > 0 else None,
        "horizon": horizon(d_mean, split, eps), "eps": eps,
        "zero_state_radius": zero_state_radius(rnn),
        "curves": {"log10_gain_mean": curve.mean(1).tolist(), "log10_gain_std": curve.std(1).tolist(),
                   "distance_ratio": (d_mean[split:] / d_mean[split]).tolist() if d_mean[split] > 0 else None},
    }
