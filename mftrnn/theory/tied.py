"""Tied-weight mean field (dynamical mean field) as a population solver (docs/theory.md §7).

Real networks reuse one recurrent matrix U_k at every step. For i.i.d. Gaussian weights in the
wide limit, the recurrent field one unit receives from U_k, over every (sequence s, step t) index
pair, is a zero-mean Gaussian process whose covariance is read off the population:

    Cov[(U_k v)(s,t), (U_k v)(s',t')] = sigma_k^2 K_v[(s,t),(s',t')],   K_v = <v_s^t v_s'^t'>      (T25)

where v^t is what U_k multiplies at step t (h^{t-1} for every LSTM gate and every gate of the
reset-after GRU, its U_n h included; for the reset-before GRU h^{t-1} for z and r, r^t * h^{t-1}
for n) and <.> is the mean over units. Fields of different matrices are independent processes.
The input field is an independent Gaussian process with

    Cov[(W_k x)(s,t), (W_k x)(s',t')] = nu_k^2 X[s,t] . X[s',t'],   X = x / sqrt(n_in)             (T26)

and the bias b_k ~ N(mu_k, rho_k^2) is a persistent per-unit offset. Both covariances are
causal: the rows of step t need states up to t-1 only (and r^t, computed first). So P units
are advanced step by step. Each unit holds one standard-normal vector eps_k over all N = S*T
indices per recurrent matrix, and its field is sigma_k (L_v eps_k), with L_v the lower Cholesky
factor of K_v, grown by the S rows of each new step:

    K12 = V_old^T V_new / P,  L21 = (L11^{-1} K12)^T,  L22 = chol(K22 - L21 L21^T + jitter)        (T27)

The units then update as the cell does (eqs. (T1), (T2)), with pre-activations

    u_k(s,t) = b_k + nu_k eps_in,k . X[s,t] + sigma_k (L_v eps_k)(s,t)                             (T28)

(reset-after GRU: u_n = b_n + nu_n eps_in,n . X + r * sigma_n (L_h eps_n)). The cost is
O(N^3 + P N^2) per kernel. The jitter of (T27) (JITTER = 1e-12 of the new kernel diagonal) keeps
nearly dependent rows (h^0 = 0; sequences that have merged) factorizable, but it is also a tiny
independent field: it puts a floor of ~JITTER/10 under 1 - C/Q, and in the chaotic regime that
seed grows like any small difference (sequences identical from t = 1 then drift apart, where a
network keeps them equal). Hyperparameters may be arrays of one (broadcastable) shape: the
grid is flattened to a leading batch dim B. All grid points share one draw of the unit noise
(biases' standard normals, eps_in, eps_k), so a batched call reproduces scalar calls with the
same seed to rounding, and grids are smooth in the hyperparameters. Float64 throughout.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch

from mftrnn.cells import GATES
from mftrnn.theory.hyper import Hyper
from mftrnn.theory.population import cpu_threads

Tensor = torch.Tensor
F64 = torch.float64
PARAMS = ("mu", "rho", "sigma", "nu")
JITTER, FLOOR = 1e-12, 1e-30  # relative jitter on the Schur complement, absolute floor under its scale
STATS = ("q_h_a", "q_h_b", "c_h", "d_h", "q_s_a", "c_s")


def recurrent_groups(cell: str) -> dict[str, tuple[str, ...]]:
    """Which gates' matrices multiply which vector: one shared kernel (and Cholesky factor) per key."""
    if cell == "lstm":
        return {"h": ("i", "f", "g", "o")}
    if cell == "gru":
        return {"h": ("r", "z", "n")}  # n: the field U_n h that the reset gate scales
    return {"h": ("r", "z"), "rh": ("n",)}  # reset-before: U_n multiplies r * h


# ----------------------------------------------------------------------------- inputs
def scenario_features(steps: int, split: int, R: float, S: int = 2) -> Tensor:
    """(S, T, d) features of the two-sequence scenario with n_in -> inf (exact kernel): at 1-based
    step t <= split each sequence has its own direction, after the split all share one, and
    different steps are orthogonal; every entry has length sqrt(R). So R_a = R_b = R and
    R_ab = 0 (t <= split) or R (t > split), as in population.trajectory. d = S*split + T - split."""
    if not 0 <= split <= steps or steps < 1 or S < 1:
        raise ValueError(f"need steps >= 1, 0 <= split <= steps and S >= 1; got {steps=}, {split=}, {S=}")
    if not (math.isfinite(R) and R >= 0):
        raise ValueError(f"R={R} is not allowed: R must be finite and >= 0")
    x = torch.zeros(S, steps, S * split + steps - split, dtype=F64)  # (S, T, d)
    for t in range(steps):
        for s in range(S):
            x[s, t, t * S + s if t < split else S * split + t - split] = math.sqrt(R)
    return x


def sequence_features(x) -> Tensor:
    """(S, T, n_in) features of real inputs x of shape (T, S, n_in) (time first, as mftrnn tasks):
    X = x / sqrt(n_in), so that X[s,t] . X[s',t'] = x_s^t . x_s'^t' / n_in, eq. (T26)."""
    x = torch.as_tensor(x, dtype=F64)
    if x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"x must have shape (T, S, n_in) with every size >= 1; got {tuple(x.shape)}")
    return (x / math.sqrt(x.shape[2])).permute(1, 0, 2).contiguous()


# ----------------------------------------------------------------------------- kernels
def _cholesky(a: Tensor, scale: Tensor) -> Tensor:
    """Lower Cholesky factor of the (B, S, S) Schur complement `a` after symmetrizing it and adding
    the jitter JITTER * max(scale, FLOOR) (scale (B, S): the new kernel diagonal). Pivots are
    clamped at the jitter, so rank-deficient blocks (h = 0, identical sequences) never divide by 0."""
    eps = JITTER * scale.clamp(min=FLOOR)  # (B, S)
    a = 0.5 * (a + a.transpose(1, 2)) + torch.diag_embed(eps)
    l = torch.zeros_like(a)  # (B, S, S)
    for j in range(a.shape[1]):  # S is small (2): a column-by-column factorization
        piv = torch.maximum(a[:, j, j] - (l[:, j, :j] ** 2).sum(-1), eps[:, j])  # (B,)
        l[:, j, j] = piv.sqrt()
        below = a[:, j + 1:, j] - (l[:, j + 1:, :j] @ l[:, j, :j, None])[..., 0]  # (B, S-j-1)
        l[:, j + 1:, j] = below / l[:, j, j, None]
    return l


class Kernel:
    """The stored history V of what one recurrent matrix multiplies and the lower Cholesky factor
    L of its kernel K_v, eqs. (T25), (T27), preallocated for N indices (index t*S + s for 0-based
    step t); the standard normals eps of the gates using that matrix are shared by the batch."""

    def __init__(self, batch: int, n_idx: int, eps: Tensor, tied: bool = True) -> None:
        self.eps, self.tied = eps, tied  # eps: (N, G_v, P)
        pop, n = eps.shape[2], (n_idx if tied else 0)  # untied: no history, no factor of the past
        self.v = eps.new_zeros(batch, n, pop)  # (B, N, P)
        self.l = eps.new_zeros(batch, n, n)  # (B, N, N)

    def fields(self, v_new: Tensor, n0: int) -> Tensor:
        """Append v of the new step (B, S, P) at indices n0..n0+S-1, grow L (eq. (T27)) and return
        the new rows of L eps for every gate of this matrix, (B, S, G_v, P), before the sigma_k.
        Untied: the fields of the new step only, correlated between the sequences but independent
        of every earlier step (fresh weights, the paper's assumption)."""
        b, s, pop = v_new.shape
        n1 = n0 + s
        vt = v_new.transpose(1, 2)  # (B, P, S)
        k22 = v_new @ vt / pop  # (B, S, S)
        scale = k22.diagonal(dim1=1, dim2=2)  # (B, S) the new kernel diagonal, before the Schur step
        if not self.tied:
            l22 = _cholesky(k22, scale).reshape(b * s, s)  # (B S, S)
            return (l22 @ self.eps[n0:n1].reshape(s, -1)).view(b, s, -1, pop)
        self.v[:, n0:n1] = v_new
        if n0:
            k12 = self.v[:, :n0] @ vt / pop  # (B, n0, S)
            l21t = torch.linalg.solve_triangular(self.l[:, :n0, :n0], k12, upper=False)  # (B, n0, S)
            self.l[:, n0:n1, :n0] = l21t.transpose(1, 2)
            k22 = k22 - l21t.transpose(1, 2) @ l21t  # (B, S, S) Schur complement
        self.l[:, n0:n1, n0:n1] = _cholesky(k22, scale)
        rows = self.l[:, n0:n1, :n1].reshape(b * s, n1)  # (B S, n1)
        return (rows @ self.eps[:n1].reshape(n1, -1)).view(b, s, -1, pop)  # (B, S, G_v, P)


# ----------------------------------------------------------------------------- the solver
def _batch(hp: Hyper, device) -> tuple[dict[str, dict[str, Tensor]], tuple]:
    """Every gate parameter as a (B, 1, 1) tensor over the flattened grid, and the grid's shape."""
    gates = {k: hp.gates[k] for k in GATES[hp.cell]}
    shape = np.broadcast_shapes(*(np.shape(getattr(g, a)) for g in gates.values() for a in PARAMS))

    def flat(v) -> Tensor:  # (B, 1, 1)
        grid = np.broadcast_to(np.asarray(v, float), shape).reshape(-1, 1, 1)
        return torch.tensor(grid, dtype=F64, device=device)

    return {k: {a: flat(getattr(g, a)) for a in PARAMS} for k, g in gates.items()}, tuple(shape)


def _check_features(features, device) -> Tensor:
    x = torch.as_tensor(features, dtype=F64)
    if x.ndim != 3 or min(x.shape) < 1:
        raise ValueError(f"features must have shape (S, T, d) with every size >= 1; got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("features must be finite")
    return x.to(device)


def untie_inputs(x: Tensor) -> Tensor:
    """Features whose steps use disjoint columns: what fresh input weights at every step see. (S, T, d)
    -> itself when no column is shared by two steps (the scenario), else (S, T, T d), step t in
    block t. The equal-time kernel is unchanged; the kernel between different steps becomes 0."""
    used = (x != 0).any(0)  # (T, d)
    if int(used.sum(0).max()) <= 1:
        return x
    n_seq, steps, d = x.shape
    out = x.new_zeros(n_seq, steps, steps * d)
    for t in range(steps):
        out[:, t, t * d:(t + 1) * d] = x[:, t]
    return out


def self_coupling(hp: Hyper) -> float:
    """a = E cos(theta) of the recurrent weights' eigen-angles: 0 for Gaussian and Haar-orthogonal weights,
    sin(phase) / phase for phase-limited ones (eigen-angles uniform on |theta| < phase, docs/theory.md §10.6).
    The write theory models such a matrix as O = a I + sqrt(1 - a^2) G, G a tied Gaussian field (eq. (T39))."""
    if not (hp.orthogonal and hp.phase_limited):
        return 0.0
    return math.sin(hp.phase) / hp.phase if hp.phase > 0 else 1.0


def states(hp: Hyper, features: Tensor, population: int = 20_000, seed: int = 0,
           device: Optional[Union[str, torch.device]] = None, tied: bool = True, coupling: float = 0.0,
           burn_in: int = 0):
    """The tied (or untied) population of eqs. (T25)-(T28) advanced through features (S, T, d) from the
    zero state: yields, after each step t = 1..T, (h, s) of shape (B, S, P) for every grid point B,
    sequence S and unit P (s: the LSTM's cell state; the GRU's h again). `trajectory` reports its
    two-sequence statistics; mftrnn.theory.write those of many pairs. The draws depend only on seed,
    cell, population, S, T, d and the device.

    coupling = a in [0, 1): each recurrent field is sigma_k (a v_i + sqrt(1 - a^2) (L_v eps_k)_i), the
    unit's own input v_i plus a tied Gaussian field (eq. (T39), phase-limited weights; a = 0: eq. (T28)).
    burn_in: the first burn_in steps draw fresh recurrent fields (no history, as untied weights) while the
    input fields stay tied (the units' own input weights), and the tied kernel starts after them: the cost
    of a long sequence's first steps is O(P) each instead of growing with the history (eq. (T41))."""
    if population < 2:
        raise ValueError(f"population={population} is not allowed: need at least 2 units")
    if not 0.0 <= coupling < 1.0:
        raise ValueError(f"coupling={coupling} is not allowed: the self-coupling must be in [0, 1)")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    x = _check_features(features, device)  # (S, T, d)
    if not tied:
        x = untie_inputs(x)
    n_seq, steps, d = x.shape
    if not 0 <= burn_in < steps:
        raise ValueError(f"burn_in={burn_in} is not allowed: need 0 <= burn_in < {steps} steps")
    p, shape = _batch(hp, device)
    names, groups = GATES[hp.cell], recurrent_groups(hp.cell)
    n_b, n_idx, pop, lstm = int(np.prod(shape)), n_seq * (steps - burn_in), population, hp.cell == "lstm"
    gen = torch.Generator(device=device).manual_seed(seed)

    def normal(*size: int) -> Tensor:
        return torch.randn(size, generator=gen, device=device, dtype=F64)

    bias = hp.sample_biases(pop, gen, device, batch=p)  # (B, 1, P) per gate; bias laws too, eq. (T31)
    eps_in = normal(d, len(names), pop)  # (d, G, P) the units' input weights, shared by the batch
    kernels = {v: Kernel(n_b, n_idx, normal(n_idx, len(gs), pop), tied) for v, gs in groups.items()}
    fresh = {v: Kernel(n_b, n_seq, normal(n_seq, len(gs), pop), tied=False) for v, gs in groups.items()}
    # Columns of the features used at each step (scenario features are sparse): one host read, here.
    used = (x != 0).any(0).cpu().numpy()  # (T, d)
    cols = [(int(c[0]), int(c[-1]) + 1) if c.size else (0, 0) for c in map(np.flatnonzero, used)]
    spread = math.sqrt(1.0 - coupling ** 2)

    def pre(k: str, inp: Tensor, rec_k: Tensor) -> Tensor:
        """Pre-activation of gate k, eq. (T28): bias + input field + recurrent field, (B, S, P)."""
        return bias[k] + p[k]["nu"] * inp[:, names.index(k)] + rec_k

    def field(k: str, own: Tensor, gaussian: Tensor) -> Tensor:
        """sigma_k (a own + sqrt(1 - a^2) gaussian): eq. (T28), with the self-coupling of eq. (T39)."""
        return p[k]["sigma"] * (coupling * own + spread * gaussian if coupling else gaussian)

    h = torch.zeros(n_b, n_seq, pop, dtype=F64, device=device)  # (B, S, P)
    s = torch.zeros_like(h)  # (B, S, P) LSTM cell state
    for t in range(steps):
        n0 = max(t - burn_in, 0) * n_seq
        lo, hi = cols[t]
        inp = x[:, t, lo:hi] @ eps_in[lo:hi].reshape(hi - lo, len(names) * pop)  # (S, G P)
        inp = inp.view(n_seq, len(names), pop)  # (S, G, P) input fields before the nu_k, eq. (T26)
        if t < burn_in:  # fresh recurrent fields: a new standard normal draw for every step
            for v, gs in groups.items():
                fresh[v].eps = normal(n_seq, len(gs), pop)
        active = fresh if t < burn_in else kernels
        fh = active["h"].fields(h, 0 if t < burn_in else n0)  # (B, S, G_h, P)
        rec = {k: field(k, h, fh[:, :, j]) for j, k in enumerate(groups["h"])}  # (B, S, P) each
        if lstm:  # eq. (T1)
            i, f, o = (torch.sigmoid(pre(k, inp, rec[k])) for k in "ifo")
            s = f * s + i * torch.tanh(pre("g", inp, rec["g"]))
            h = o * torch.tanh(s)
        else:  # eq. (T2)
            z, r = (torch.sigmoid(pre(k, inp, rec[k])) for k in "zr")
            if hp.cell == "gru":  # reset-after: u_n = b_n + W_n x + r * (U_n h)
                rec_n = r * rec["n"]
            else:  # reset-before: U_n multiplies r * h, which has its own kernel
                rh = r * h
                rec_n = field("n", rh, active["rh"].fields(rh, 0 if t < burn_in else n0)[:, :, 0])
            h = z * h + (1 - z) * torch.tanh(pre("n", inp, rec_n))
            s = h
        yield h, s


@cpu_threads
def trajectory(hp: Hyper, features: Tensor, population: int = 20_000, seed: int = 0,
               device: Optional[Union[str, torch.device]] = None, tied: bool = True) -> dict[str, np.ndarray]:
    """Two-sequence statistics under tied i.i.d. Gaussian weights, eqs. (T25)-(T28), from the zero
    state; same keys as population.trajectory: t (0..T), q_h_a, q_h_b, c_h and d_h = |h_a - h_b|^2
    / 2n from the differences (1 - C/Q = d_h / Q without cancellation), and q_s_a, c_s for the
    LSTM. Sequences a, b are features[0], features[1] (features[0] twice if S = 1); more are
    simulated but not reported. Arrays are (T+1,) for scalar hyperparameters, (T+1, *grid) else.

    features: (S, T, d), the input kernel is X[s,t] . X[s',t'] (scenario_features,
    sequence_features). `population` units, float64 on `device` (default: CUDA if available). The
    draws depend only on seed, cell, population, S, T, d and the device: every grid point sees the
    same units' noise, so a grid point equals the scalar call with the same seed (to rounding).

    Orthogonal recurrent weights (hp.orthogonal) are treated as Gaussian of the same scale: the two
    agree on the mean-square growth of tied products, sum_k C(t,k)^2 f^(2(t-k)) c^(2k) for
    J = f I + c U in the linear regime (docs/theory.md §7.8); the per-init table of §2.7 measures the
    difference on real networks.

    tied=False gives the untied mean field by the same machinery (fresh recurrent and input fields
    at every step, persistent biases): the exact untied theory, batched over a grid like the tied
    one, used for the untied side of memory-horizon grids."""
    lstm, rows = hp.cell == "lstm", []
    for h, s in states(hp, features, population, seed, device, tied):
        b_idx = min(1, h.shape[1] - 1)
        ha, hb = h[:, 0], h[:, b_idx]  # (B, P)
        row = [(ha * ha).mean(-1), (hb * hb).mean(-1), (ha * hb).mean(-1), 0.5 * ((ha - hb) ** 2).mean(-1)]
        if lstm:
            row += [(s[:, 0] ** 2).mean(-1), (s[:, 0] * s[:, b_idx]).mean(-1)]
        rows.append(torch.stack(row, -1))  # (B, 4 or 6), no host sync
    out = torch.stack([torch.zeros_like(rows[0])] + rows)  # (T+1, B, 4 or 6); t = 0: zeros
    arr, steps, shape = out.cpu().numpy(), len(rows), tuple(hp.shape())
    res = {"t": np.arange(steps + 1)}
    for j, key in enumerate(STATS[:6 if lstm else 4]):
        res[key] = arr[:, :, j].reshape((steps + 1,) + shape)
    return res


def scenario_trajectory(hp: Hyper, steps: int, split: int, r_in: float, population: int = 20_000,
                        seed: int = 0, device: Optional[Union[str, torch.device]] = None
                        ) -> dict[str, np.ndarray]:
    """`trajectory` for the two-sequence scenario (the signature of population.trajectory)."""
    return trajectory(hp, scenario_features(steps, split, r_in), population, seed, device)


def memory_bytes(hp_cell: Union[Hyper, str], steps: int, S: int, population: int, batch: int = 1,
                 features_dim: Optional[int] = None) -> int:
    """Estimated device memory of `trajectory` in bytes (float64): the shared noise (biases, eps_in
    with d = features_dim, default S*steps, and eps over N = S*steps indices per gate), per kernel
    and grid point V (N x P) and L (N x N), and the per-step states and fields."""
    cell = hp_cell.cell if isinstance(hp_cell, Hyper) else hp_cell
    n_gates, n_idx = len(GATES[cell]), S * steps
    d = S * steps if features_dim is None else features_dim
    shared = n_gates * population * (1 + d + n_idx)
    per_point = (len(recurrent_groups(cell)) * (n_idx * population + n_idx * n_idx)  # V and L
                 + S * population * (2 * n_gates + 8))  # states, fields and temporaries
    return 8 * (shared + batch * per_point)
