"""Initialization schemes: named functions that write gate slices of nn.LSTM / nn.GRU in place.

PyTorch layout (docs/theory.md §1; gate names in mftrnn/cells.py): weight_ih_l{k} (G*H, n_in), weight_hh_l{k} (G*H, H), bias_ih_l{k} and
bias_hh_l{k} (G*H,), gate blocks LSTM (i, f, g, o) and GRU (r, z, n), each H rows. The effective
bias of a gate is bias_ih + bias_hh, so every scheme below writes one vector and zeroes the other
(writing both doubles the bias). In nn.GRU the n gate's bias_hh sits inside the reset product,
r * (W_hn h + b_hn), so it is not interchangeable with b_in; every scheme leaves b_hn = 0.

Every function writes under torch.no_grad() into the existing parameters (views of cuDNN's flat
weight buffer on the GPU), so the buffer stays valid.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from mftrnn.cells import CANDIDATE
from mftrnn.errors import ConfigError
from mftrnn.models import GATES, RNNClassifier
from mftrnn.schema import (ChronoInitConfig, CriticalInitConfig, DriveConfig, GateHP, GruGates, InitConfig, InitScheme,
                           LstmGates, MeanFieldInitConfig, Recurrent)

log = logging.getLogger(__name__)


# The theory of the write (docs/theory.md §10.8) reads pairs of training examples: the informative steps
# and this many steps of zero padding after them; where every step carries input, the whole sequences of
# at most WRITE_PAIRS_UNPADDED pairs, the tied kernel over their last init.drive.window steps (its cost
# grows as the cube of the indices), fresh recurrent fields before (eq. (T41))
WRITE_RELAX = 16
WRITE_PAIRS_UNPADDED = 2
WRITE_MAX_STEPS = 4096  # longer sequences: their last WRITE_MAX_STEPS steps, from the zero state
R_LAW_NODES = 32  # equal-mass nodes of the empirical law of |x_t|^2 / n_in over the long stretch


@dataclass
class TaskShape:
    """What an init may know of the task: its length T, the informative steps 1..content_steps (the
    rest is padding), the input second moment R_op over the long stretch (the padding's, or the
    whole sequence's without padding), its empirical law (nodes, weights), and pairs of the task's
    sequences for the theory of the write. Chrono needs T; critical, and any init whose drive the
    theory chooses, all of it."""

    seq_len: int
    content_steps: Optional[int] = None  # None: the whole sequence
    R_op: Optional[float] = None  # None: unknown (init=critical then refuses)
    r_law: tuple = ()  # (nodes, weights) of |x_t|^2 / n_in over the long stretch; (): all at R_op
    write_inputs: Optional[object] = None  # mftrnn.theory.write.WriteInputs


def layer_params(rnn: nn.RNNBase, layer: int) -> dict[str, torch.Tensor]:
    """The four parameters of one layer, keyed weight_ih, weight_hh, bias_ih, bias_hh."""
    return {name: getattr(rnn, f"{name}_l{layer}") for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}


def gate_block(param: torch.Tensor, gates: tuple[str, ...], gate: str) -> torch.Tensor:
    """The rows of `param` that belong to `gate` (a view: writes go into the parameter)."""
    h = param.shape[0] // len(gates)
    j = gates.index(gate)
    return param[j * h:(j + 1) * h]


def _glorot_head(model: RNNClassifier) -> None:
    # The readout (docs/theory.md §1) is Glorot-initialized, its bias zero.
    nn.init.xavier_uniform_(model.head.weight)
    nn.init.zeros_(model.head.bias)


@torch.no_grad()
def init_pytorch(model: RNNClassifier, cfg: InitConfig, task: TaskShape) -> None:
    """PyTorch's default (docs/theory.md §2.7, eq. (T30)): every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H))."""
    model.rnn.reset_parameters()
    model.head.reset_parameters()


@torch.no_grad()
def init_standard(model: RNNClassifier, cfg: InitConfig, task: TaskShape) -> None:
    """The TF/Keras default of the paper's era (docs/theory.md §2.7), with per-gate orthogonality.

    Input kernel: Glorot-uniform over the stacked (n_in, G*H) kernel, as Keras does. Recurrent: an
    orthogonal H x H block per gate (Keras orthogonalizes the stacked kernel instead).
    Biases zero; LSTM forget bias +1 (Jozefowicz et al. 2015), as the sum of the two vectors.
    """
    gates = GATES[model.cell]
    for layer in range(model.rnn.num_layers):
        p = layer_params(model.rnn, layer)
        nn.init.xavier_uniform_(p["weight_ih"])
        for gate in gates:
            nn.init.orthogonal_(gate_block(p["weight_hh"], gates, gate))
        nn.init.zeros_(p["bias_ih"])
        nn.init.zeros_(p["bias_hh"])
        if "f" in gates:
            gate_block(p["bias_ih"], gates, "f").fill_(1.0)
    _glorot_head(model)


@torch.no_grad()
def init_chrono(model: RNNClassifier, cfg: ChronoInitConfig, task: TaskShape) -> None:
    """Chrono initialization (Tallec & Ollivier 2018; docs/theory.md §2.7) on top of `standard`.

    Per unit, b_keep ~ log U[1, T_max - 1], so that 1 - sigma(b_keep) spreads forgetting times over
    [2, T_max]. LSTM: the forget gate f keeps, and b_i = -b_f. GRU: z is the keep gate
    (h' = (1 - z) n + z h), so b_z gets the draw. T_max defaults to the task's sequence length.
    """
    init_standard(model, cfg, task)
    t_max = cfg.t_max if cfg.t_max is not None else task.seq_len
    if t_max < 3:
        raise ConfigError(f"init=chrono needs T_max >= 3 (the sequence has {task.seq_len} steps); set init.t_max")
    gates = GATES[model.cell]
    keep = "f" if "f" in gates else "z"
    for layer in range(model.rnn.num_layers):
        p = layer_params(model.rnn, layer)
        b_keep = gate_block(p["bias_ih"], gates, keep)
        b_keep.uniform_(1.0, t_max - 1.0).log_()
        if keep == "f":
            gate_block(p["bias_ih"], gates, "i").copy_(-b_keep)


@torch.no_grad()
def phase_limited_orthogonal_(w: torch.Tensor, gain: float, phase: float,
                              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """w (H, H) <- gain * Q R Q^T: Q Haar-orthogonal, R block-diagonal 2 x 2 rotations by the angles
    theta_j = (j + 1/2) phase / (H // 2), j < H // 2 (and a 1 for odd H). Its eigenvalues are
    gain * e^{+-i theta_j}, spread evenly over |theta| < phase (docs/theory.md §10.6, eq. (T37));
    phase = pi spreads them over the whole circle, as Haar-orthogonal weights do on average."""
    h = w.shape[0]
    q = torch.empty(h, h, dtype=torch.float64, device=w.device)
    nn.init.orthogonal_(q, generator=generator)
    r = torch.eye(h, dtype=torch.float64, device=w.device)
    theta = (torch.arange(h // 2, dtype=torch.float64, device=w.device) + 0.5) * phase / max(h // 2, 1)
    idx = torch.arange(h // 2, device=w.device) * 2
    r[idx, idx] = r[idx + 1, idx + 1] = torch.cos(theta)
    r[idx, idx + 1], r[idx + 1, idx] = -torch.sin(theta), torch.sin(theta)
    return w.copy_((gain * q @ r @ q.T).to(w.dtype))


@torch.no_grad()
def recurrent_block_(w: torch.Tensor, sigma: float, orthogonal: bool, phase: float = math.pi,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One gate's recurrent block w (H, H) from the mean-field law (docs/theory.md §1): N(0, sigma^2 / H)
    entries, or sigma x Haar-orthogonal, its eigen-angles limited to |theta| < phase where phase < pi
    (§10.6). `generator`: None draws from the global generator (the inits), else from it (the theory's
    simulated networks)."""
    if orthogonal and phase < math.pi:
        return phase_limited_orthogonal_(w, sigma, phase, generator=generator)
    if orthogonal:
        return nn.init.orthogonal_(w, gain=sigma, generator=generator)  # QR with sign fix: Haar-distributed
    return w.normal_(0.0, sigma / math.sqrt(w.shape[1]), generator=generator)


@torch.no_grad()
def init_meanfield(model: RNNClassifier, cfg: MeanFieldInitConfig, task: TaskShape) -> None:
    """Explicit mean-field hyperparameters per gate k (docs/theory.md §1).

    weight_hh block  <- N(0, sigma_k^2 / H) entries, or sigma_k x Haar-orthogonal (recurrent=orthogonal),
                        its eigen-angles limited to |theta| < phase where phase < pi (recurrent_block_)
    weight_ih block  <- N(0, nu_k^2 / n_in) entries (n_in = H for layers above the first)
    bias_ih block    <- N(mu_k, rho_k^2), drawn once per unit;  bias_hh <- 0 (GRU: b_hn = 0)
    """
    gates = GATES[model.cell]
    for layer in range(model.rnn.num_layers):
        p = layer_params(model.rnn, layer)
        n_in = p["weight_ih"].shape[1]
        nn.init.zeros_(p["bias_hh"])
        for gate in gates:
            hp = getattr(cfg.gates, gate)
            recurrent_block_(gate_block(p["weight_hh"], gates, gate), hp.sigma,
                             cfg.recurrent is Recurrent.orthogonal, cfg.phase)
            gate_block(p["weight_ih"], gates, gate).normal_(0.0, hp.nu / math.sqrt(n_in))
            gate_block(p["bias_ih"], gates, gate).normal_(hp.mu, hp.rho)
    _glorot_head(model)


def needs_theory(init: InitConfig) -> bool:
    """Whether `init` solves from the task's inputs: init=critical, or a drive chosen by the theory."""
    return init.scheme is InitScheme.critical or init.drive.theory


def empirical_law(r: torch.Tensor, nodes: int = R_LAW_NODES) -> tuple[tuple, tuple]:
    """Per-step input second moments r (any shape) as a quadrature rule of at most `nodes` equal-mass nodes
    (each the mean of its share of the sorted values), for the gate means of eq. (T40)."""
    v = torch.sort(r.double().flatten()).values
    chunks = [c for c in torch.tensor_split(v, min(nodes, v.numel())) if c.numel()]
    means = [float(c.mean()) for c in chunks]
    weights = [c.numel() / v.numel() for c in chunks]
    if max(means) == min(means):  # one value (zero padding): one node
        return (means[0],), (1.0,)
    return tuple(means), tuple(weights)


def write_inputs_of(task, splits, pairs: int, window: int):
    """Pairs of training examples with different labels as the task builds them (the same padding for
    both), for the theory of the write (docs/theory.md §10.8); see `write_inputs`."""
    from mftrnn.diagnose import pairs_of_examples

    try:
        found = pairs_of_examples(task, splits.train_x, splits.train_y, pairs, seed=0)
    except ValueError as exc:
        raise ConfigError(f"init.drive.pairs={pairs}: {exc} (the training split)") from None
    return write_inputs(found.x, task, window)


def write_inputs(x, task, window: int):
    """The theory of the write's view of pairs of the task's sequences x (T, 2P, n_in), a = x[:, 0::2]
    (docs/theory.md §10.8): the informative steps and WRITE_RELAX steps of zero padding; for a task without
    padding, or with noise padding, the whole sequences (at most their last WRITE_MAX_STEPS steps) of the
    first WRITE_PAIRS_UNPADDED pairs, with a burn-in (eq. (T41)) before their last `window` steps."""
    from mftrnn.theory.write import WriteInputs

    x = x.double().cpu()
    content = task.content_steps
    if content < task.seq_len and not x[content:].any():  # zero padding: its start, then the linear tail
        return WriteInputs(x[:min(task.seq_len, content + WRITE_RELAX)], content, task.seq_len)
    # every step carries input (noise padding too): the whole sequence
    x = x[-WRITE_MAX_STEPS:, :2 * WRITE_PAIRS_UNPADDED]
    return WriteInputs(x, len(x), task.seq_len, burn_in=max(0, len(x) - window))


def task_shape(task, splits, init: InitConfig) -> TaskShape:
    """What an init needs of a task (a SequenceTask, fitted) and its data splits: the input statistics
    and the pairs of the theory of the write are read only where the init solves from them."""
    if not needs_theory(init):
        return TaskShape(task.seq_len, task.content_steps)
    r = task.long_stretch_r(splits)  # (steps, examples) of |x_t|^2 / n_in
    return TaskShape(task.seq_len, task.content_steps, float(r.double().mean()), empirical_law(r),
                     write_inputs_of(task, splits, init.drive.pairs, init.drive.window))


def critical_spec(cell: str, cfg: CriticalInitConfig, task: TaskShape):
    """The critical solver's input for this cell, init config and task (docs/theory.md §10.1)."""
    from mftrnn.theory.critical import CANDIDATE_NU, CriticalSpec, resolve_isometry

    if task.R_op is None:
        raise ConfigError("init=critical needs the task's input statistics (TaskShape.R_op); "
                          "`mftrnn train` and `mftrnn diagnose` provide them")
    steps = cfg.t if cfg.t is not None else task.seq_len
    content = task.content_steps if task.content_steps is not None else task.seq_len
    drive = cfg.drive
    if drive.gates is None and task.write_inputs is None:
        raise ConfigError("init=critical chooses the gates' input scale from pairs of the task's examples "
                          "(TaskShape.write_inputs); give init.drive.gates, or build the TaskShape with task_shape")
    nodes, weights = task.r_law if task.r_law else ((), ())
    return CriticalSpec(cell=cell, steps=steps, content_steps=min(content, steps), R_op=float(task.R_op),
                        criterion=cfg.criterion.value, log10_gain=cfg.log10_gain,
                        orthogonal=cfg.recurrent is Recurrent.orthogonal, gate_sigma=cfg.gate_sigma,
                        gate_nu=drive.gates, candidate_nu=CANDIDATE_NU if drive.candidate is None else drive.candidate,
                        open_bias=cfg.open_bias,
                        isometry=resolve_isometry(cell, cfg.isometry.value, cfg.criterion.value,
                                                  cfg.recurrent is Recurrent.orthogonal),
                        write=cfg.write, log10_min_gain=cfg.log10_min_gain, r_nodes=nodes, r_weights=weights,
                        inputs_key=task.write_inputs.key() if task.write_inputs is not None else "",
                        drive_population=drive.population)


def solve_critical(cell: str, cfg: CriticalInitConfig, task: TaskShape):
    """The critical solution for this run (cached on disk): (CriticalSolution, came from the cache)."""
    from mftrnn.theory.critical import solve_cached

    return solve_cached(critical_spec(cell, cfg, task), cache=cfg.cache, inputs=task.write_inputs)


def meanfield_from_solution(cell: str, solution) -> MeanFieldInitConfig:
    """The `init=meanfield` config that writes a critical solution's hyperparameters."""
    gates_cls = LstmGates if cell == "lstm" else GruGates
    gates = gates_cls(**{k: GateHP(**v) for k, v in solution.gates.items()})
    return MeanFieldInitConfig(recurrent=Recurrent.orthogonal if solution.orthogonal else Recurrent.gaussian,
                               gates=gates, phase=solution.phase)


def init_critical(model: RNNClassifier, cfg: CriticalInitConfig, task: TaskShape) -> dict:
    """The critical initialization (docs/theory.md §10): solve the meanfield hyperparameters for the
    task's T and inputs (mftrnn.theory.critical, eqs. (T34), (T35), the drive of §10.8), then write them
    as init_meanfield does. Returns the solution (critical.json's content) for the run's logs and summary."""
    solution, cached = solve_critical(model.cell.value, cfg, task)
    init_meanfield(model, meanfield_from_solution(model.cell.value, solution), task)
    info = solution.as_dict()
    info["cached"] = cached
    log.info("init=critical (%s, %s): %s", "cached" if cached else "solved", cfg.criterion.value,
             " ".join(solution.overrides()[1:]))
    return info


@torch.no_grad()
def apply_drive(model: RNNClassifier, gates: Optional[float], candidate: Optional[float]) -> None:
    """The drive (docs/theory.md §10.8) on top of any init: every layer's input weights of every gate but
    the candidate <- N(0, gates^2 / n_in), the candidate's <- N(0, candidate^2 / n_in); None leaves a part
    as the init wrote it. Biases and recurrent weights are untouched."""
    names, cand = GATES[model.cell], CANDIDATE[model.cell.value]
    for layer in range(model.rnn.num_layers):
        w_ih = layer_params(model.rnn, layer)["weight_ih"]
        n_in = w_ih.shape[1]
        for gate in names:
            nu = candidate if gate == cand else gates
            if nu is not None:
                gate_block(w_ih, names, gate).normal_(0.0, nu / math.sqrt(n_in))


def theory_drive(cell: str, drive: DriveConfig, task: TaskShape) -> dict:
    """The drive init=critical chooses for this cell and task (its defaults, this drive's pairs, population
    and window): the record of CriticalSolution.drive."""
    same = DriveConfig(pairs=drive.pairs, population=drive.population, window=drive.window)
    return solve_critical(cell, CriticalInitConfig(drive=same), task)[0].drive


INITS: dict[InitScheme, Callable[[RNNClassifier, InitConfig, TaskShape], Optional[dict]]] = {
    InitScheme.pytorch: init_pytorch,
    InitScheme.standard: init_standard,
    InitScheme.chrono: init_chrono,
    InitScheme.meanfield: init_meanfield,
    InitScheme.critical: init_critical,
}


def initialize(model: RNNClassifier, cfg: InitConfig, task) -> dict:
    """Apply the configured scheme, then its drive (init.drive). `task`: a TaskShape, or the task's length T
    alone (an int: enough for every scheme but critical and a theory-chosen drive). Returns {"drive": the
    gates' and candidate's input scales and where they come from, "solution": the critical solution
    (init=critical only)}: what summary.json and the W&B config record."""
    if not isinstance(task, TaskShape):
        task = TaskShape(seq_len=int(task))
    solution = INITS[cfg.scheme](model, cfg, task)
    drive = cfg.drive
    if cfg.scheme is InitScheme.critical:  # the solver wrote its drive (given or chosen)
        record = dict(solution["drive"])
    elif drive.theory:
        if task.write_inputs is None:
            raise ConfigError("init.drive.theory=true needs the task's inputs: build the TaskShape with task_shape")
        chosen = theory_drive(model.cell.value, drive, task)
        apply_drive(model, chosen["gates"], chosen["candidate"])
        record = {**chosen, "source": "theory (init=critical's choice)"}
    else:
        apply_drive(model, drive.gates, drive.candidate)
        record = {"gates": drive.gates, "candidate": drive.candidate,
                  "source": "own" if drive.gates is None and drive.candidate is None else "given"}
    record.update(measured_drive(model))
    if record["source"] != "own":
        log.info("init=%s drive: gates' input scale %s, candidate's %s (%s)", cfg.scheme.value,
                 record["gates_measured"], record["candidate_measured"], record["source"])
    if hasattr(model.rnn, "flatten_parameters"):
        model.rnn.flatten_parameters()
    out = {"drive": record}
    if cfg.scheme is InitScheme.critical:
        out["solution"] = solution
    return out


@torch.no_grad()
def measured_drive(model: RNNClassifier) -> dict[str, float]:
    """The first layer's input scales as written: sqrt(n_in x the mean square) of the gates' input weights
    (all gates but the candidate) and of the candidate's, rounded to 4 significant digits."""
    names, cand = GATES[model.cell], CANDIDATE[model.cell.value]
    w = layer_params(model.rnn, 0)["weight_ih"]
    scale = lambda rows: float(f"{math.sqrt(w.shape[1] * float(rows.double().pow(2).mean())):.4g}")  # noqa: E731
    gates = torch.cat([gate_block(w, names, g) for g in names if g != cand])
    return {"gates_measured": scale(gates), "candidate_measured": scale(gate_block(w, names, cand))}


@torch.no_grad()
def effective_gate_biases(model: RNNClassifier) -> dict[str, dict[str, float]]:
    """Mean and std over units of each gate's effective bias b_ih + b_hh, per layer (for the logs).

    GRU n gate: b_in only, since b_hn acts inside the reset product.
    """
    gates = GATES[model.cell]
    out = {}
    for layer in range(model.rnn.num_layers):
        p = layer_params(model.rnn, layer)
        for gate in gates:
            b = gate_block(p["bias_ih"], gates, gate)
            if gate != "n":
                b = b + gate_block(p["bias_hh"], gates, gate)
            out[f"l{layer}.{gate}"] = {"mean": b.mean().item(), "std": b.std().item() if b.numel() > 1 else 0.0}
    return out
