"""Finite-width simulation of randomly initialized LSTMs and GRUs: the ground truth for the mean field.

Two measurements on real networks of width n:

* `simulate_trajectory`: two input sequences that differ up to a split step and coincide afterwards
  are fed to one network from the zero state; per step it records the lengths Q_h of both hidden
  states, their overlap C_h and distance d_h = |h_a - h_b|^2 / 2n and, for the LSTM, Q_s and C_s of
  the cell state (the quantities of eqs. (T5)-(T12) and of the memory horizon (T29)).
* `jacobian_spectra`: after a burn-in that brings one input-driven sequence to stationarity, the
  squared singular values of the state-to-state Jacobian (eqs. (T19)-(T21)) and of the product of
  several consecutive ones, by autograd.

Networks are drawn for a `Hyper` (docs/theory.md §1): tied ones (what real networks do: one draw,
reused at every step) are the actual torch.nn.LSTM / nn.GRU initialized by mftrnn.inits, either by
the init config given (`init=`, any scheme: exactly what `mftrnn train` builds) or by the meanfield
scheme with the Hyper's values; untied ones (the untied theory's exact regime, docs/theory.md §2.1, assumption 2)
get fresh input and recurrent weights from the Hyper's law at every step. Biases are drawn once per
network in both. The paper-form GRU ("gru_reset_before") has no torch module: its tied network is
one draw from the law. The cells' step functions are public for `mftrnn diagnose`.

The state is simulated in float64 by default: in float32, rounding puts a floor of about 5e-15
under 1 - C/Q. Products of Jacobians are always taken in float64.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor, nn

from mftrnn.cells import GATES
from mftrnn.theory.hyper import Hyper

# Independent random streams, so that e.g. the inputs do not change when the weight law changes.
STREAMS: tuple[str, ...] = ("inputs", "weights", "biases")


# --------------------------------------------------------------------------- results
@dataclass
class Trajectory:
    """Two-sequence forward statistics at t = 0..T (t = 0 is the zero state), normalized by n."""

    t: np.ndarray  # (T+1,)
    q_h_a: np.ndarray  # (T+1,)  |h_a^t|^2 / n
    q_h_b: np.ndarray  # (T+1,)  |h_b^t|^2 / n
    c_h: np.ndarray  # (T+1,)  h_a^t . h_b^t / n
    d_h: np.ndarray  # (T+1,)  |h_a^t - h_b^t|^2 / 2n
    q_s_a: Optional[np.ndarray]  # (T+1,)  LSTM |s_a^t|^2 / n, else None
    c_s: Optional[np.ndarray]  # (T+1,)  LSTM s_a^t . s_b^t / n, else None


@dataclass
class Spectra:
    """Squared singular values of state-to-state Jacobians at stationarity (docs/theory.md §4)."""

    one_step: np.ndarray  # (n,) squared singular values of J at step burn_in + 1, descending
    product: np.ndarray  # (n,) squared singular values of J^{b+P} ... J^{b+1}, float64, descending
    m1: float  # mean of one_step = (1/n) tr J J^T
    m2: float  # mean of one_step**2 = (1/n) tr (J J^T)^2


# --------------------------------------------------------------------------- parameters
class CellWeights(NamedTuple):
    """One cell's parameters in PyTorch's layout: gate blocks stacked along the rows (cells.GATES).

    G = 4 (LSTM i, f, g, o) or 3 (GRU r, z, n). For the paper-form GRU the n block of w_hh is U_n,
    applied to r * h. b_hh is zero for every mean-field draw; in nn.GRU its n block (b_hn) sits
    inside the reset product.
    """

    w_ih: Tensor  # (G n, n_in)
    w_hh: Tensor  # (G n, n)
    b_ih: Tensor  # (G n,)
    b_hh: Tensor  # (G n,)


class StepOut(NamedTuple):
    """The state after one step; c and o (the output gate, needed by the LSTM Jacobian) are None for GRUs."""

    h: Tensor  # (..., n)
    c: Optional[Tensor]  # (..., n)
    o: Optional[Tensor]  # (..., n)


def check_hyper(hp: Hyper, width: int) -> None:
    """Scalar, finite, non-negative scales and a width >= 1."""
    if width < 1:
        raise ValueError(f"width={width} is not allowed: width must be an integer >= 1")
    for k, g in hp.gates.items():
        vals = [np.asarray(getattr(g, a), float) for a in ("mu", "rho", "sigma", "nu")]
        if any(v.size != 1 for v in vals):
            raise ValueError("simulated networks take scalar hyperparameters, not grids")
        mu, rho, sigma, nu = (float(v) for v in vals)
        if min(rho, sigma, nu) < 0 or not all(map(math.isfinite, (mu, rho, sigma, nu))):
            raise ValueError(f"gate {k}: mu={mu}, rho={rho}, sigma={sigma}, nu={nu} is not allowed: "
                             "rho, sigma, nu must be finite and >= 0")


def generators(seed: int, device: torch.device) -> dict[str, torch.Generator]:
    """One torch.Generator per random stream (inputs, weights, biases), all derived from `seed`.

    Inputs and biases are small and drawn on the CPU, so that they are the same on every device; only
    the per-step weight matrices, the bulk of the untied draws, come from a generator on `device`.
    """
    seeds = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: torch.Generator(device=device if name == "weights" else "cpu").manual_seed(
        int(s.generate_state(1, np.uint64)[0]) >> 1) for name, s in zip(STREAMS, seeds)}


@torch.no_grad()
def sample_biases(hp: Hyper, width: int, generator: torch.Generator,
                  dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Persistent biases (b_ih, b_hh) from the Hyper's law per unit (eq. (T31)); b_hh = 0 (the GRU's
    b_hn = 0)."""
    draws = hp.sample_biases(width, generator, generator.device)
    b_ih = torch.cat([draws[k].to(dtype) for k in GATES[hp.cell]])  # (G n,)
    return b_ih, torch.zeros_like(b_ih)


@torch.no_grad()
def sample_weights(hp: Hyper, width: int, input_size: int, generator: torch.Generator,
                   dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """One draw of (w_ih, w_hh) from the mean-field law, gate by gate (docs/theory.md §1): w_hh block k
    N(0, sigma_k^2 / n) entries, or sigma_k x Haar-orthogonal (phase-limited where hp.phase < pi), as
    the inits draw it (mftrnn.inits.recurrent_block_); w_ih block k N(0, nu_k^2 / n_in) entries."""
    from mftrnn.inits import recurrent_block_

    names = GATES[hp.cell]
    device = generator.device
    w_ih = torch.empty(len(names) * width, input_size, dtype=dtype, device=device)  # (G n, n_in)
    w_hh = torch.empty(len(names) * width, width, dtype=dtype, device=device)  # (G n, n)
    for j, gate in enumerate(names):
        g, rows = hp.gates[gate], slice(j * width, (j + 1) * width)
        w_ih[rows].normal_(0.0, float(g.nu) / math.sqrt(input_size), generator=generator)
        recurrent_block_(w_hh[rows], float(g.sigma), hp.orthogonal, hp.phase, generator=generator)
    return w_ih, w_hh


def meanfield_init(hp: Hyper):
    """The MeanFieldInitConfig with the Hyper's Gaussian values (no other bias law)."""
    from mftrnn.schema import GateHP, GruGates, LstmGates, MeanFieldInitConfig, Recurrent

    if hp.laws:
        raise ValueError("a Hyper with a non-Gaussian bias law has no meanfield init; pass init=")
    gates = {k: GateHP(**{a: float(getattr(g, a)) for a in ("mu", "rho", "sigma", "nu")}) for k, g in hp.gates.items()}
    kind = LstmGates if hp.cell == "lstm" else GruGates
    return MeanFieldInitConfig(recurrent=Recurrent.orthogonal if hp.orthogonal else Recurrent.gaussian,
                               gates=kind(**gates), phase=hp.phase)


def tied_module(hp: Hyper, width: int, input_size: int, seed: int, device, dtype: torch.dtype = torch.float64,
                init=None, seq_len: int = 1) -> nn.RNNBase:
    """The nn.LSTM / nn.GRU of an RNNClassifier initialized as `mftrnn train` does (mftrnn.inits) with
    `init` (any scheme; default: meanfield with the Hyper's values), for a task of `seq_len` steps.

    The inits draw from the global CPU generator, so the draw happens on the CPU inside a forked RNG
    state seeded with `seed` (reproducible; the caller's global RNG is left untouched), in `dtype`;
    the module is then moved to `device` (moving re-flattens cuDNN's weight buffer)."""
    from mftrnn.inits import initialize
    from mftrnn.models import RNNClassifier
    from mftrnn.schema import CellKind, ModelConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Cast before drawing, so that a float64 network holds float64 draws (exact orthogonality).
        model = RNNClassifier(CellKind(hp.cell), input_size, ModelConfig(hidden=width)).to(dtype)
        initialize(model, init if init is not None else meanfield_init(hp), seq_len)
    rnn = model.rnn.to(device=device)
    rnn.requires_grad_(False)  # only the state is differentiated (jacobian_spectra)
    return rnn


def module_weights(rnn: nn.RNNBase, layer: int = 0) -> CellWeights:
    """One layer's parameters of an nn.LSTM / nn.GRU as CellWeights (detached views, no copy)."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    return CellWeights(*(getattr(rnn, f"{name}_l{layer}").detach() for name in names))


# --------------------------------------------------------------------------- one step of each cell
def lstm_step(p: CellWeights, x: Tensor, h: Tensor, c: Tensor) -> StepOut:
    """nn.LSTM's step, eq. (T1): c' = f*c + i*g, h' = o*tanh(c'); also returns o."""
    u = x @ p.w_ih.T + p.b_ih + h @ p.w_hh.T + p.b_hh  # (..., 4n)
    u_i, u_f, u_g, u_o = u.chunk(4, dim=-1)  # (..., n) each
    c_new = torch.sigmoid(u_f) * c + torch.sigmoid(u_i) * torch.tanh(u_g)  # (..., n)
    o = torch.sigmoid(u_o)  # (..., n)
    return StepOut(o * torch.tanh(c_new), c_new, o)


def gru_step(p: CellWeights, x: Tensor, h: Tensor) -> StepOut:
    """nn.GRU's reset-after step, eq. (T2): r, z = sigmoid(W x + b_i + U h + b_h),
    n = tanh(W_in x + b_in + r*(W_hn h + b_hn)), h' = (1-z) n + z h."""
    gi_r, gi_z, gi_n = (x @ p.w_ih.T + p.b_ih).chunk(3, dim=-1)  # (..., n) each
    gh_r, gh_z, gh_n = (h @ p.w_hh.T + p.b_hh).chunk(3, dim=-1)  # (..., n) each
    r = torch.sigmoid(gi_r + gh_r)  # (..., n)
    z = torch.sigmoid(gi_z + gh_z)  # (..., n)
    n = torch.tanh(gi_n + r * gh_n)  # (..., n)
    return StepOut((1 - z) * n + z * h, None, None)


def gru_reset_before_step(p: CellWeights, x: Tensor, h: Tensor) -> StepOut:
    """The paper's reset-before GRU, eq. (T2): r, z = sigmoid(W x + U h + b),
    n = tanh(W_in x + U_n (r*h) + b_n), h' = (1-z) n + z h."""
    gi_r, gi_z, gi_n = (x @ p.w_ih.T + p.b_ih).chunk(3, dim=-1)  # (..., n) each
    u_r, u_z, u_n = p.w_hh.chunk(3, dim=0)  # (n, n) each
    b_r, b_z, b_n = p.b_hh.chunk(3, dim=0)  # (n,) each
    r = torch.sigmoid(gi_r + h @ u_r.T + b_r)  # (..., n)
    z = torch.sigmoid(gi_z + h @ u_z.T + b_z)  # (..., n)
    n = torch.tanh(gi_n + (r * h) @ u_n.T + b_n)  # (..., n); the reset gate acts before U_n
    return StepOut((1 - z) * n + z * h, None, None)


def cell_step(cell: str, p: CellWeights, x: Tensor, h: Tensor, c: Optional[Tensor] = None) -> StepOut:
    """One step of `cell` with weights `p`."""
    if cell == "lstm":
        return lstm_step(p, x, h, c)
    if cell == "gru":
        return gru_step(p, x, h)
    return gru_reset_before_step(p, x, h)


def module_step(rnn: nn.RNNBase, x: Tensor, h: Tensor, c: Optional[Tensor]) -> StepOut:
    """One step of the torch module itself (cuDNN on the GPU); x (B, n_in), h and c (B, n); o is hidden."""
    state = (h[None], c[None]) if c is not None else h[None]  # (1, B, n): one layer
    _, state = rnn(x[None], state)  # time-major input (1, B, n_in)
    if isinstance(state, tuple):
        return StepOut(state[0][0], state[1][0], None)
    return StepOut(state[0], None, None)


# --------------------------------------------------------------------------- weights of each step
def weight_source(hp: Hyper, width: int, input_size: int, tied: bool, seed: int, gens: dict[str, torch.Generator],
                  device: torch.device, dtype: torch.dtype, init=None, seq_len: int = 1
                  ) -> tuple[Callable[[], CellWeights], Optional[nn.RNNBase]]:
    """A function returning the weights of the next step, and the torch module when there is one.

    tied lstm/gru: the initialized module's own parameters, every step. tied gru_reset_before: one
    draw from the law, every step. untied: fresh w_ih, w_hh at every call, persistent biases.
    """
    if tied and hp.cell != "gru_reset_before":
        rnn = tied_module(hp, width, input_size, seed, device, dtype, init, seq_len)
        weights = module_weights(rnn)
        return (lambda: weights), rnn
    b_ih, b_hh = (b.to(device) for b in sample_biases(hp, width, gens["biases"], dtype))  # (G n,)

    def draw() -> CellWeights:
        w_ih, w_hh = sample_weights(hp, width, input_size, gens["weights"], dtype)
        return CellWeights(w_ih, w_hh, b_ih, b_hh)

    if tied:
        fixed = draw()
        return (lambda: fixed), None
    return draw, None


# --------------------------------------------------------------------------- inputs
def two_sequence_inputs(steps: int, split: int, input_size: int, R: float, generator: torch.Generator,
                        device) -> torch.Tensor:
    """(T, 2, n_in) float64 inputs with entries i.i.d. N(0, R): the scenario of mftrnn.theory.inputs.

    The two sequences are independent for t <= split (1-based steps, R_ab = 0 in expectation) and
    identical for t > split (R_ab = R). Drawn on the generator's device, then moved to `device`.
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
def pair_moments(h: Tensor, c: Optional[Tensor]) -> Tensor:
    """(6,) float64: |h_a|^2, |h_b|^2, h_a.h_b, |h_a - h_b|^2 / 2, |s_a|^2, s_a.s_b (NaN for GRUs), all / n,
    of a (2, n) pair."""
    h = h.double()  # (2, n)
    d = h[0] - h[1]
    out = [h[0] @ h[0], h[1] @ h[1], h[0] @ h[1], 0.5 * (d @ d)]
    if c is not None:
        c = c.double()  # (2, n)
        out += [c[0] @ c[0], c[0] @ c[1]]
    else:
        out += [h.new_tensor(float("nan"))] * 2
    return torch.stack(out) / h.shape[1]


@torch.no_grad()
def simulate_trajectory(hp: Hyper, width: int, steps: int, split: int, R: float, input_size: int = 200,
                        tied: bool = True, seed: int = 0, device: str | torch.device = "cpu", *,
                        dtype: torch.dtype = torch.float64, inputs: Optional[Tensor] = None, init=None,
                        seq_len: Optional[int] = None) -> Trajectory:
    """Q_h, C_h, d_h (and Q_s, C_s for the LSTM) of one finite network driven by two input sequences.

    The scenario: entries i.i.d. N(0, R), independent up to step `split`, identical afterwards.
    `inputs` (T, 2, n_in) replaces it by given sequences (two task examples; steps, split, R and
    input_size are then ignored). Both sequences start from the zero state and run through the same
    network as a batch of two (untied: the same fresh weights at each step for both). Tied lstm/gru
    run the torch module (cuDNN on the GPU) one step per call. `init`: the InitConfig of a tied
    network (any scheme), drawn for a task of `seq_len` steps (default: the sequences' length).
    """
    check_hyper(hp, width)
    device = torch.device(device)
    gens = generators(seed, device)
    if inputs is None:
        x = two_sequence_inputs(steps, split, input_size, R, gens["inputs"], device).to(dtype)  # (T, 2, n_in)
    else:
        x = torch.as_tensor(inputs).to(device=device, dtype=dtype)  # (T, 2, n_in)
        steps, input_size = x.shape[0], x.shape[2]
    next_weights, rnn = weight_source(hp, width, input_size, tied, seed, gens, device, dtype, init,
                                      seq_len if seq_len is not None else steps)
    h = torch.zeros(2, width, dtype=dtype, device=device)  # (2, n)
    c = torch.zeros_like(h) if hp.cell == "lstm" else None  # (2, n)
    moments = [pair_moments(h, c)]
    for t in range(steps):
        if rnn is not None:
            h, c, _ = module_step(rnn, x[t], h, c)
        else:
            h, c, _ = cell_step(hp.cell, next_weights(), x[t], h, c)
        moments.append(pair_moments(h, c))  # kept on the device: one transfer at the end
    m = torch.stack(moments).cpu().numpy()  # (T+1, 6)
    lstm = hp.cell == "lstm"
    return Trajectory(t=np.arange(steps + 1), q_h_a=m[:, 0], q_h_b=m[:, 1], c_h=m[:, 2], d_h=m[:, 3],
                      q_s_a=m[:, 4] if lstm else None, c_s=m[:, 5] if lstm else None)


# --------------------------------------------------------------------------- Jacobians
def state_jacobian(cell: str, p: CellWeights, x: Tensor, prev: StepOut) -> tuple[Tensor, StepOut]:
    """The state-to-state Jacobian of one step by autograd (torch.func.jacrev), and the new state.

    GRUs (both forms): J = dh^t/dh^{t-1}, eqs. (T19), (T20). LSTM: the effective Jacobian on the cell
    state, eq. (T21): J = ds^t/ds^{t-1} with h^{t-1} = o^{t-1} * tanh(s^{t-1}) and o^{t-1} held at
    its value. x (n_in,), prev.h (n,).
    """
    if cell == "lstm":
        o_prev = prev.o  # (n,) the output gate that produced h^{t-1}; it does not depend on s^{t-1}

        def step_of_state(s: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
            out = lstm_step(p, x, o_prev * torch.tanh(s), s)
            return out.c, tuple(out)

        state = prev.c
    else:
        def step_of_state(h: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
            out = cell_step(cell, p, x, h)
            return out.h, (out.h,)  # jacrev's aux must hold tensors only (no None)

        state = prev.h
    jac, aux = torch.func.jacrev(step_of_state, has_aux=True)(state)  # (n, n)
    aux = tuple(v.detach() for v in aux)
    return jac, StepOut(*aux) if cell == "lstm" else StepOut(aux[0], None, None)


def squared_singular_values(m: Tensor) -> np.ndarray:
    """(n,) squared singular values of a square matrix, float64, descending."""
    return (torch.linalg.svdvals(m.double()) ** 2).cpu().numpy()


def jacobian_spectra(hp: Hyper, width: int, R: float, burn_in: int = 100, product_steps: int = 10,
                     input_size: int = 200, tied: bool = True, seed: int = 0, device="cpu", *,
                     dtype: torch.dtype = torch.float64, init=None, seq_len: int = 1) -> Spectra:
    """Spectra of J J^T for one step and for a product of steps, at the stationary state of one sequence.

    One sequence of i.i.d. N(0, R) inputs drives the network from the zero state for `burn_in` steps;
    then the Jacobians of steps burn_in+1 .. burn_in+product_steps are computed by `state_jacobian`
    (untied: each with that step's weights) and multiplied in float64, later steps on the left. The
    steps use the hand-written cell equations with the torch module's own parameters for tied
    lstm/gru (they reproduce the module's output, tests/test_simulate.py); the LSTM needs the output
    gate, which the module hides. With burn_in = 0 the LSTM's o^0 is taken as 0 (h^0 = 0 does not
    depend on s^0).
    """
    check_hyper(hp, width)
    if burn_in < 0 or product_steps < 1:
        raise ValueError(f"burn_in={burn_in}, product_steps={product_steps} are not allowed: "
                         "burn_in must be >= 0 and product_steps >= 1")
    device = torch.device(device)
    gens = generators(seed, device)
    steps = burn_in + product_steps
    x = two_sequence_inputs(steps, steps, input_size, R, gens["inputs"], device)[:, 0].to(dtype)  # (T, n_in)
    next_weights, _ = weight_source(hp, width, input_size, tied, seed, gens, device, dtype, init, seq_len)
    zero = torch.zeros(width, dtype=dtype, device=device)  # (n,)
    state = StepOut(zero, zero if hp.cell == "lstm" else None, zero if hp.cell == "lstm" else None)
    with torch.no_grad():
        for t in range(burn_in):
            state = cell_step(hp.cell, next_weights(), x[t], state.h, state.c)
    one_step, product = None, torch.eye(width, dtype=torch.float64, device=device)  # (n, n)
    for t in range(burn_in, steps):
        jac, state = state_jacobian(hp.cell, next_weights(), x[t], state)  # (n, n)
        product = jac.double() @ product  # float64: the product spans many orders of magnitude
        if one_step is None:
            one_step = squared_singular_values(jac)
    return Spectra(one_step=one_step, product=squared_singular_values(product),
                   m1=float(one_step.mean()), m2=float((one_step ** 2).mean()))
