"""Finite-width simulation of randomly initialized LSTMs and GRUs: the ground truth for the mean field.

Two measurements, both from real networks of width n drawn from the mean-field initialization law
(theory.md §2.2 and §5.4):

* `simulate_trajectory`: two input sequences that differ up to a split step and coincide afterwards
  are fed to one network from the zero state; per step it records the lengths Q_h of both hidden
  states, their overlap C_h and, for the LSTM, Q_s and C_s of the cell state (the quantities of the
  forward recursions (4)-(6) and (16), and of the memory time scale xi_C of theory.md §3.7).
* `jacobian_spectra`: after a burn-in that brings one input-driven sequence to stationarity, the
  squared singular values of the state-to-state Jacobian (theory.md §4.1, eqs. (9), (10), (17)) and
  of the product of several consecutive ones (theory.md §4.4), computed by autograd, not by hand.

Cells: "lstm" (nn.LSTM), "gru" (nn.GRU, the reset-after form of theory.md §5.2) and
"gru_reset_before" (the paper's form, theory.md eq. (3), written with PyTorch's gate names r, z, n).

Weights are either *tied* (what real networks do: one draw, reused at every step; "lstm" and "gru"
run the actual torch.nn.LSTM / nn.GRU initialized by `mftrnn.inits.init_meanfield`) or *untied* (the
mean-field theory's exact regime, theory.md §3.1 assumption 2: fresh input and recurrent weights at
every step, shared by the two sequences). Biases are drawn once per network in both variants.

Everything runs on `device` (CPU or CUDA). The state is simulated in float64 by default: in float32,
rounding puts a floor of about 5e-15 under 1 - C/Q (the mean field follows it down to 1e-16) and
makes the Jacobians less accurate. Pass dtype=torch.float32 to run in the precision of training.
Products of Jacobians are always taken in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor, nn

from mftrnn.inits import init_meanfield
from mftrnn.models import RNNClassifier
from mftrnn.schema import CellKind, GateHP, GruGates, LstmGates, MeanFieldInitConfig, ModelConfig, Recurrent

CELLS: tuple[str, ...] = ("lstm", "gru", "gru_reset_before")
# PyTorch's gate-block order (theory.md §5.1, §5.2); the paper-form GRU reuses the nn.GRU names.
_GATE_NAMES: dict[str, tuple[str, ...]] = {
    "lstm": ("i", "f", "g", "o"),
    "gru": ("r", "z", "n"),
    "gru_reset_before": ("r", "z", "n"),
}
# Independent random streams, so that e.g. the inputs do not change when the weight law changes.
_STREAMS: tuple[str, ...] = ("inputs", "weights", "biases")


# --------------------------------------------------------------------------- results
@dataclass
class Trajectory:
    """Two-sequence forward statistics at times t = 0..T (t = 0 is the zero state), theory.md §3.

    Per step: Q_h of each sequence, their overlap C_h and, for the LSTM, Q_s of sequence a and the
    cell-state overlap C_s (theory.md §3.2 notation); all normalized by the width n.
    """

    t: np.ndarray  # (T+1,)
    q_h_a: np.ndarray  # (T+1,)  |h_a^t|^2 / n
    q_h_b: np.ndarray  # (T+1,)  |h_b^t|^2 / n
    c_h: np.ndarray  # (T+1,)  h_a^t . h_b^t / n
    q_s_a: Optional[np.ndarray]  # (T+1,)  LSTM |s_a^t|^2 / n, else None
    c_s: Optional[np.ndarray]  # (T+1,)  LSTM s_a^t . s_b^t / n, else None


@dataclass
class Spectra:
    """Squared singular values of state-to-state Jacobians at stationarity (theory.md §4.2, §4.4)."""

    one_step: np.ndarray  # (n,) squared singular values of J at step burn_in + 1, descending
    product: np.ndarray  # (n,) squared singular values of J^{b+P} ... J^{b+1}, float64, descending
    m1: float  # mean of one_step = (1/n) tr J J^T
    m2: float  # mean of one_step**2 = (1/n) tr (J J^T)^2


# --------------------------------------------------------------------------- parameters
class _CellWeights(NamedTuple):
    """One cell's parameters in PyTorch's layout: gate blocks stacked along the rows (theory.md §5).

    G = 4 (LSTM i, f, g, o) or 3 (GRU r, z, n). For the paper-form GRU the n block of w_hh is U_n,
    applied to r * h; b_hh is zero for every mean-field draw, and kept only to mirror nn.GRU, where
    b_hn sits inside the reset product.
    """

    w_ih: Tensor  # (G n, n_in)
    w_hh: Tensor  # (G n, n)
    b_ih: Tensor  # (G n,)
    b_hh: Tensor  # (G n,)


class _StepOut(NamedTuple):
    """The state after one step; c and o (the output gate, needed by the LSTM Jacobian) are None for GRUs."""

    h: Tensor  # (..., n)
    c: Optional[Tensor]  # (..., n)
    o: Optional[Tensor]  # (..., n)


def _check_args(cell: str, gates: Mapping, recurrent: str, width: int) -> tuple[dict[str, GateHP], Recurrent]:
    """Validate the cell name, width and gate keys; return GateHPs keyed by gate and the Recurrent enum."""
    if cell not in CELLS:
        raise ValueError(f"cell={cell!r} is not allowed: cell must be one of {CELLS}")
    if width < 1:
        raise ValueError(f"width={width} is not allowed: width must be an integer >= 1")
    names = _GATE_NAMES[cell]
    if set(gates) != set(names):
        raise ValueError(f"gates has keys {sorted(gates)}; cell={cell} needs exactly {list(names)}")
    # Plain dicts (e.g. from a YAML file) are accepted as well as GateHP objects.
    hps = {k: v if isinstance(v, GateHP) else GateHP(**v) for k, v in gates.items()}
    for k, hp in hps.items():
        if min(hp.rho, hp.sigma, hp.nu) < 0 or not all(map(math.isfinite, (hp.mu, hp.rho, hp.sigma, hp.nu))):
            raise ValueError(f"gates[{k!r}]={hp} is not allowed: rho, sigma, nu must be finite and >= 0")
    return hps, Recurrent(getattr(recurrent, "value", recurrent))


def _generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """One torch.Generator per random stream (inputs, weights, biases), all derived from `seed`.

    Inputs and biases are small and drawn on the CPU, so that a tied torch module (drawn on the CPU
    too) sees the same realization on every device; only the per-step weight matrices, the bulk of
    the untied draws, come from a generator on `device` (untied results therefore depend on it).
    """
    seeds = np.random.SeedSequence(seed).spawn(len(_STREAMS))
    return {name: torch.Generator(device=device if name == "weights" else "cpu").manual_seed(
        int(s.generate_state(1, np.uint64)[0]) >> 1) for name, s in zip(_STREAMS, seeds)}


@torch.no_grad()
def _sample_biases(cell: str, gates: Mapping[str, GateHP], width: int, generator: torch.Generator,
                  dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Persistent biases (b_ih, b_hh): b_k ~ N(mu_k, rho_k^2) per unit, b_hh = 0 (theory.md §2.2, §5.4).

    b_hh = 0 also gives the GRU's b_hn = 0, the default under which the two GRU forms share the
    constant-gate theory (theory.md §5.3).
    """
    names = _GATE_NAMES[cell]
    b_ih = torch.empty(len(names) * width, dtype=dtype, device=generator.device)  # (G n,)
    for j, gate in enumerate(names):
        b_ih[j * width:(j + 1) * width].normal_(gates[gate].mu, gates[gate].rho, generator=generator)
    return b_ih, torch.zeros_like(b_ih)


@torch.no_grad()
def _sample_weights(cell: str, gates: Mapping[str, GateHP], recurrent: Recurrent, width: int, input_size: int,
                   generator: torch.Generator, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """One draw of (w_ih, w_hh) from the mean-field law, gate by gate (theory.md §2.2, §5.4).

    w_hh block k: N(0, sigma_k^2 / n) entries, or sigma_k x Haar-orthogonal (torch.nn.init.orthogonal_,
    QR with sign fix); w_ih block k: N(0, nu_k^2 / n_in) entries.
    """
    names = _GATE_NAMES[cell]
    device = generator.device
    w_ih = torch.empty(len(names) * width, input_size, dtype=dtype, device=device)  # (G n, n_in)
    w_hh = torch.empty(len(names) * width, width, dtype=dtype, device=device)  # (G n, n)
    for j, gate in enumerate(names):
        hp, rows = gates[gate], slice(j * width, (j + 1) * width)
        w_ih[rows].normal_(0.0, hp.nu / math.sqrt(input_size), generator=generator)
        if recurrent is Recurrent.orthogonal:
            nn.init.orthogonal_(w_hh[rows], gain=hp.sigma, generator=generator)
        else:
            w_hh[rows].normal_(0.0, hp.sigma / math.sqrt(width), generator=generator)
    return w_ih, w_hh


def _gate_config(cell: str, gates: Mapping[str, GateHP]) -> LstmGates | GruGates:
    """The schema's gate dataclass for `init_meanfield` (LstmGates or GruGates)."""
    return LstmGates(**gates) if cell == "lstm" else GruGates(**gates)


def _tied_module(cell: str, gates: Mapping[str, GateHP], recurrent: Recurrent, width: int, input_size: int,
                seed: int, device: torch.device, dtype: torch.dtype) -> nn.RNNBase:
    """The nn.LSTM / nn.GRU of an `RNNClassifier` initialized by `init_meanfield` (theory.md §5.4).

    init_meanfield draws from the global CPU generator, so the draw happens on the CPU inside a forked
    RNG state seeded with `seed` (reproducible, and the caller's global RNG is left untouched), in
    `dtype`; the module is then moved to `device` (moving re-flattens cuDNN's weight buffer).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Cast before drawing, so that a float64 network holds float64 draws (exact orthogonality).
        model = RNNClassifier(CellKind(cell), input_size, ModelConfig(hidden=width)).to(dtype)
        cfg = MeanFieldInitConfig(recurrent=recurrent, gates=_gate_config(cell, gates))
        init_meanfield(model, cfg, seq_len=1)  # seq_len is unused by the meanfield scheme
    rnn = model.rnn.to(device=device)
    rnn.requires_grad_(False)  # only the state is differentiated (jacobian_spectra)
    return rnn


def _module_weights(rnn: nn.RNNBase) -> _CellWeights:
    """The layer-0 parameters of an nn.LSTM / nn.GRU as _CellWeights (detached views, no copy)."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return _CellWeights(*(getattr(rnn, f"{name}_l0").detach() for name in names))


# --------------------------------------------------------------------------- one step of each cell
def _lstm_step(p: _CellWeights, x: Tensor, h: Tensor, c: Tensor) -> _StepOut:
    """nn.LSTM's step, theory.md eq. (2) / §5.1: c' = f*c + i*g, h' = o*tanh(c'); also returns o."""
    u = x @ p.w_ih.T + p.b_ih + h @ p.w_hh.T + p.b_hh  # (..., 4n)
    u_i, u_f, u_g, u_o = u.chunk(4, dim=-1)  # (..., n) each
    c_new = torch.sigmoid(u_f) * c + torch.sigmoid(u_i) * torch.tanh(u_g)  # (..., n)
    o = torch.sigmoid(u_o)  # (..., n)
    return _StepOut(o * torch.tanh(c_new), c_new, o)


def _gru_step(p: _CellWeights, x: Tensor, h: Tensor) -> _StepOut:
    """nn.GRU's reset-after step, theory.md §5.2.

    r, z = sigmoid(W x + b_i + U h + b_h), n = tanh(W_in x + b_in + r*(W_hn h + b_hn)), h' = (1-z) n + z h.
    """
    gi_r, gi_z, gi_n = (x @ p.w_ih.T + p.b_ih).chunk(3, dim=-1)  # (..., n) each
    gh_r, gh_z, gh_n = (h @ p.w_hh.T + p.b_hh).chunk(3, dim=-1)  # (..., n) each
    r = torch.sigmoid(gi_r + gh_r)  # (..., n)
    z = torch.sigmoid(gi_z + gh_z)  # (..., n)
    n = torch.tanh(gi_n + r * gh_n)  # (..., n)
    return _StepOut((1 - z) * n + z * h, None, None)


def _gru_reset_before_step(p: _CellWeights, x: Tensor, h: Tensor) -> _StepOut:
    """The paper's reset-before GRU, theory.md eq. (3) with PyTorch's names.

    r, z = sigmoid(W x + U h + b), n = tanh(W_in x + U_n (r*h) + b_n), h' = (1-z) n + z h.
    """
    gi_r, gi_z, gi_n = (x @ p.w_ih.T + p.b_ih).chunk(3, dim=-1)  # (..., n) each
    u_r, u_z, u_n = p.w_hh.chunk(3, dim=0)  # (n, n) each
    b_r, b_z, b_n = p.b_hh.chunk(3, dim=0)  # (n,) each
    r = torch.sigmoid(gi_r + h @ u_r.T + b_r)  # (..., n)
    z = torch.sigmoid(gi_z + h @ u_z.T + b_z)  # (..., n)
    n = torch.tanh(gi_n + (r * h) @ u_n.T + b_n)  # (..., n); the reset gate acts before U_n
    return _StepOut((1 - z) * n + z * h, None, None)


def _cell_step(cell: str, p: _CellWeights, x: Tensor, h: Tensor, c: Optional[Tensor] = None) -> _StepOut:
    """One step of `cell` with weights `p` (dispatch to _lstm_step, _gru_step, _gru_reset_before_step)."""
    if cell == "lstm":
        return _lstm_step(p, x, h, c)
    if cell == "gru":
        return _gru_step(p, x, h)
    return _gru_reset_before_step(p, x, h)


def _module_step(rnn: nn.RNNBase, x: Tensor, h: Tensor, c: Optional[Tensor]) -> _StepOut:
    """One step of the torch module itself (cuDNN on the GPU); x (B, n_in), h and c (B, n); o is hidden."""
    state = (h[None], c[None]) if c is not None else h[None]  # (1, B, n): one layer
    _, state = rnn(x[None], state)  # time-major input (1, B, n_in)
    if isinstance(state, tuple):
        return _StepOut(state[0][0], state[1][0], None)
    return _StepOut(state[0], None, None)


# --------------------------------------------------------------------------- weights of each step
def _weight_source(cell: str, gates: dict[str, GateHP], recurrent: Recurrent, width: int, input_size: int,
                   tied: bool, seed: int, gens: dict[str, torch.Generator], device: torch.device,
                   dtype: torch.dtype) -> tuple[Callable[[], _CellWeights], Optional[nn.RNNBase]]:
    """A function returning the weights of the next step, and the torch module when there is one.

    tied lstm/gru: the initialized module's own parameters, every step. tied gru_reset_before: one
    draw from the same law, every step. untied: fresh w_ih, w_hh at every call, persistent biases.
    """
    if tied and cell != "gru_reset_before":
        rnn = _tied_module(cell, gates, recurrent, width, input_size, seed, device, dtype)
        weights = _module_weights(rnn)
        return (lambda: weights), rnn
    b_ih, b_hh = (b.to(device) for b in _sample_biases(cell, gates, width, gens["biases"], dtype))  # (G n,)

    def draw() -> _CellWeights:
        w_ih, w_hh = _sample_weights(cell, gates, recurrent, width, input_size, gens["weights"], dtype)
        return _CellWeights(w_ih, w_hh, b_ih, b_hh)

    if tied:
        fixed = draw()
        return (lambda: fixed), None
    return draw, None


# --------------------------------------------------------------------------- inputs
def two_sequence_inputs(steps: int, split: int, input_size: int, R: float, generator: torch.Generator,
                        device) -> torch.Tensor:
    """(T, 2, n_in) float64 inputs with entries i.i.d. N(0, R), for R^t = R and R_ab^t of theory.md §2.3.

    The two sequences are independent for t <= split (1-based steps, R_ab = 0 in expectation) and
    identical for t > split (R_ab = R), the scenario of the memory time scale xi_C (theory.md §3.7).
    Drawn on the generator's device, then moved to `device`.
    """
    if not 0 <= split <= steps:
        raise ValueError(f"split={split} is not allowed: split must be in [0, steps={steps}]")
    if not (math.isfinite(R) and R >= 0):
        raise ValueError(f"R={R} is not allowed: R must be finite and >= 0")
    x = torch.randn(steps, 2, input_size, generator=generator, device=generator.device, dtype=torch.float64)
    x.mul_(math.sqrt(R))  # (T, 2, n_in)
    x[split:, 1] = x[split:, 0]  # index t-1 >= split  <=>  1-based step t > split
    return x.to(device)


# --------------------------------------------------------------------------- forward trajectory
def _pair_moments(h: Tensor, c: Optional[Tensor]) -> Tensor:
    """(5,) float64: |h_a|^2/n, |h_b|^2/n, h_a.h_b/n, |s_a|^2/n, s_a.s_b/n (NaN for GRUs) of a (2, n) pair."""
    h = h.double()  # (2, n)
    out = [h[0] @ h[0], h[1] @ h[1], h[0] @ h[1]]
    if c is not None:
        c = c.double()  # (2, n)
        out += [c[0] @ c[0], c[0] @ c[1]]
    else:
        out += [h.new_tensor(float("nan"))] * 2
    return torch.stack(out) / h.shape[1]


@torch.no_grad()
def simulate_trajectory(cell: str, gates: dict, recurrent: str, width: int, steps: int, split: int, R: float,
                        input_size: int = 200, tied: bool = True, seed: int = 0,
                        device: str | torch.device = "cpu", *,
                        dtype: torch.dtype = torch.float64, inputs: Optional[Tensor] = None) -> Trajectory:
    """Q_h, C_h (and Q_s, C_s for the LSTM) of one finite network driven by two input sequences.

    The measured counterpart of the forward mean-field recursions, theory.md eqs. (4)-(6) and (16),
    and of the population solver of §3.6 (untied), with the input scenario of §3.7: entries i.i.d.
    N(0, R), independent up to step `split`, identical afterwards. Both sequences start from the zero
    state (h = 0, and c = 0 for the LSTM); the same network (same biases; untied: the same fresh
    weights at each step for both sequences) processes both, as a batch of two. `inputs` (T, 2, n_in)
    replaces the scenario by given sequences (e.g. two task examples; steps, split, R and input_size
    are then ignored).
    Tied "lstm"/"gru" run the torch module (cuDNN on the GPU) one step per call, so that the cell
    state can be read after every step.
    """
    hps, rec = _check_args(cell, gates, recurrent, width)
    device = torch.device(device)
    gens = _generators(seed, device)
    if inputs is None:
        x = two_sequence_inputs(steps, split, input_size, R, gens["inputs"], device).to(dtype)  # (T, 2, n_in)
    else:
        x = torch.as_tensor(inputs).to(device=device, dtype=dtype)  # (T, 2, n_in)
        steps, input_size = x.shape[0], x.shape[2]
    next_weights, rnn = _weight_source(cell, hps, rec, width, input_size, tied, seed, gens, device, dtype)
    h = torch.zeros(2, width, dtype=dtype, device=device)  # (2, n)
    c = torch.zeros_like(h) if cell == "lstm" else None  # (2, n)
    moments = [_pair_moments(h, c)]
    for t in range(steps):
        if rnn is not None:
            h, c, _ = _module_step(rnn, x[t], h, c)
        else:
            h, c, _ = _cell_step(cell, next_weights(), x[t], h, c)
        moments.append(_pair_moments(h, c))  # kept on the device: one transfer at the end
    m = torch.stack(moments).cpu().numpy()  # (T+1, 5)
    lstm = cell == "lstm"
    return Trajectory(t=np.arange(steps + 1), q_h_a=m[:, 0], q_h_b=m[:, 1], c_h=m[:, 2],
                      q_s_a=m[:, 3] if lstm else None, c_s=m[:, 4] if lstm else None)


# --------------------------------------------------------------------------- Jacobians
def _state_jacobian(cell: str, p: _CellWeights, x: Tensor, prev: _StepOut) -> tuple[Tensor, _StepOut]:
    """The state-to-state Jacobian of one step by autograd (torch.func.jacrev), and the new state.

    theory.md §4.1. GRUs (both forms): J = dh^t/dh^{t-1}, eqs. (9) and (17). LSTM: the effective
    Jacobian on the cell state, J = ds^t/ds^{t-1} with h^{t-1} = o^{t-1} * tanh(s^{t-1}) and o^{t-1}
    held at its value, i.e. J = D_f + K D_{o tanh'(s)} with K of eq. (10). x (n_in,), prev.h (n,).
    """
    if cell == "lstm":
        o_prev = prev.o  # (n,) the output gate that produced h^{t-1}; it does not depend on s^{t-1}

        def step_of_state(s: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
            out = _lstm_step(p, x, o_prev * torch.tanh(s), s)
            return out.c, tuple(out)

        state = prev.c
    else:
        def step_of_state(h: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
            out = _cell_step(cell, p, x, h)
            return out.h, (out.h,)  # jacrev's aux must hold tensors only (no None)

        state = prev.h
    jac, aux = torch.func.jacrev(step_of_state, has_aux=True)(state)  # (n, n)
    aux = tuple(v.detach() for v in aux)
    return jac, _StepOut(*aux) if cell == "lstm" else _StepOut(aux[0], None, None)


def _squared_singular_values(m: Tensor) -> np.ndarray:
    """(n,) squared singular values of a square matrix, float64, descending."""
    return (torch.linalg.svdvals(m.double()) ** 2).cpu().numpy()


def jacobian_spectra(cell: str, gates: dict, recurrent: str, width: int, R: float, burn_in: int = 100,
                     product_steps: int = 10, input_size: int = 200, tied: bool = True, seed: int = 0,
                     device="cpu", *, dtype: torch.dtype = torch.float64) -> Spectra:
    """Spectra of J J^T for one step and for a product of steps, at the stationary state of one sequence.

    Measures what theory.md §4.2 predicts (m_1, m_2: eqs. (7), (8), (11), (18), (19)) and §4.4 for
    products (eq. (13); for tied weights see §4.5). One sequence of i.i.d. N(0, R) inputs drives the
    network from the zero state for `burn_in` steps; then the Jacobians of steps burn_in+1 ..
    burn_in+product_steps are computed by `_state_jacobian` (untied: each with that step's weights)
    and multiplied in float64, later steps on the left. The steps use the hand-written cell
    equations, with the torch module's own parameters for tied "lstm"/"gru" (they reproduce the
    module's output, tests/test_simulate.py); the LSTM needs the output gate, which the module hides.
    With burn_in = 0 the LSTM's o^0 is taken as 0 (h^0 = 0 does not depend on s^0).
    """
    hps, rec = _check_args(cell, gates, recurrent, width)
    if burn_in < 0 or product_steps < 1:
        raise ValueError(f"burn_in={burn_in}, product_steps={product_steps} are not allowed: "
                         "burn_in must be >= 0 and product_steps >= 1")
    device = torch.device(device)
    gens = _generators(seed, device)
    steps = burn_in + product_steps
    x = two_sequence_inputs(steps, steps, input_size, R, gens["inputs"], device)[:, 0].to(dtype)  # (T, n_in)
    next_weights, _ = _weight_source(cell, hps, rec, width, input_size, tied, seed, gens, device, dtype)
    zero = torch.zeros(width, dtype=dtype, device=device)  # (n,)
    state = _StepOut(zero, zero if cell == "lstm" else None, zero if cell == "lstm" else None)
    with torch.no_grad():
        for t in range(burn_in):
            state = _cell_step(cell, next_weights(), x[t], state.h, state.c)
    one_step, product = None, torch.eye(width, dtype=torch.float64, device=device)  # (n, n)
    for t in range(burn_in, steps):
        jac, state = _state_jacobian(cell, next_weights(), x[t], state)  # (n, n)
        product = jac.double() @ product  # float64: the product spans many orders of magnitude
        if one_step is None:
            one_step = _squared_singular_values(jac)
    return Spectra(one_step=one_step, product=_squared_singular_values(product),
                   m1=float(one_step.mean()), m2=float((one_step ** 2).mean()))
