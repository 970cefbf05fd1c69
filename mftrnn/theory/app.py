"""`mftrnn theory`: the mean-field theory for one set of hyperparameters (and optionally a grid),
written to theory.json with plots; with theory.simulate=true, beside simulations of real networks.

Which method computes what (docs/theory.md §2.5): closed forms where they are exact (GRU, rho = 0),
the population solver elsewhere (LSTM, any rho > 0); grids of xi use the closed forms, grids of the
memory horizon the batched population of mftrnn.theory.tied (§7.6).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mftrnn.errors import ConfigError, run_or_exit
from mftrnn.gpus import pin_for_hydra_job
from mftrnn.schema import (CellKind, GruForm, InputSource, TheoryConfig, TheoryMethod, TheoryWeights, register_configs,
                           to_objects)
from mftrnn.seeding import pick_device
from mftrnn.theory import closed, population
from mftrnn.theory.closed import Gate, Hyper

log = logging.getLogger(__name__)
register_configs()


def hyper_from(conf: TheoryConfig) -> Hyper:
    """The theory's hyperparameters from the `meanfield` init config (same gate names as PyTorch)."""
    cell = conf.cell.kind.value
    if conf.cell.kind is CellKind.gru and conf.theory.gru_form is GruForm.reset_before:
        cell = "gru_reset_before"
    gates = {k: Gate(mu=hp.mu, rho=hp.rho, sigma=hp.sigma, nu=hp.nu) for k, hp in vars(conf.init.gates).items()}
    return Hyper(cell, gates, orthogonal=conf.init.recurrent.value == "orthogonal")


def closed_is_exact(hp: Hyper) -> bool:
    """Closed forms are exact (untied weights) for the GRU with no bias spread."""
    return hp.cell != "lstm" and all(float(np.max(g.rho)) == 0 for g in hp.gates.values())


def _floats(d: dict) -> dict:
    def conv(v):
        if isinstance(v, dict):
            return _floats(v)
        if isinstance(v, np.ndarray):
            return [None if not np.isfinite(x) else float(x) for x in v.ravel()] if v.ndim else conv(float(v))
        if isinstance(v, (float, np.floating)):
            return None if not np.isfinite(v) else float(v)
        return v
    return {k: conv(v) for k, v in d.items()}


@dataclass
class TwoInputs:
    """The two input sequences of the trajectory, in the forms the theories need."""

    steps: int  # T
    split: int  # the sequences' inputs are identical after this step
    R: float  # input second moment of the stationary quantities (fixed point, xi, spectra)
    moments: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per step R_a, R_b, R_ab; None = scenario
    x: Optional[torch.Tensor]  # (T, 2, n_in) task sequences, float64; None = scenario
    info: dict


def two_inputs(conf: TheoryConfig) -> TwoInputs:
    """theory/input=scenario: i.i.d. inputs of second moment R, independent up to theory.split.
    theory/input=task: two test examples of the configured task, built by the task itself; a noise
    padding is made the same for both (the question is whether the network still tells the two
    images apart). T is the task's length, the split the last step at which the inputs differ, and
    R (for the stationary quantities) the mean |x_t|^2 / n_in after the split (the padding)."""
    th = conf.theory
    if th.input.source is InputSource.scenario:
        return TwoInputs(th.steps, th.split, th.input.R, None, None, {"source": "scenario", "R": th.input.R})
    from mftrnn.data import load_splits
    from mftrnn.tasks import build_task

    if conf.task is None:
        raise ConfigError("theory/input=task needs a task (task=padded_mnist, ...)")
    task = build_task(conf.task)
    splits = load_splits(task.dataset, conf.data)
    task.fit(splits)
    idx = list(th.input.examples)
    if max(idx) >= len(splits.test_x):
        raise ConfigError(f"theory.input.examples={idx} is not allowed: the test split has {len(splits.test_x)} examples")
    gen = torch.Generator().manual_seed(conf.seed)
    x = task.sequences(splits.test_x[idx], gen).to(torch.float64)  # (T, 2, n_in)
    content = getattr(task, "image_steps", task.seq_len)
    x[content:, 1] = x[content:, 0]  # the same padding for both
    differ = (x[:, 0] != x[:, 1]).any(-1).nonzero()
    split = int(differ.max()) + 1 if len(differ) else 0
    n_in = x.shape[2]
    r = (x[:, 0] ** 2).sum(-1) / n_in, (x[:, 1] ** 2).sum(-1) / n_in, (x[:, 0] * x[:, 1]).sum(-1) / n_in
    moments = tuple(v.numpy() for v in r)
    R = float(moments[0][split:].mean()) if split < len(x) else float(moments[0].mean())
    info = {"source": "task", "task": conf.task.name.value, "examples": idx,
            "labels": [int(v) for v in splits.test_y[idx]], "steps": len(x), "split": split, "input_size": n_in,
            "R_stationary": R, "R_a": moments[0], "R_b": moments[1], "R_ab": moments[2]}
    log.info("inputs: %s test examples %s (labels %s), T = %d, split = %d", info["task"], idx, info["labels"],
             len(x), split)
    return TwoInputs(len(x), split, R, moments, x, info)


def two_sequences(hp: Hyper, conf: TheoryConfig, weights: TheoryWeights, method: TheoryMethod, inp: TwoInputs,
                  device: str) -> tuple[dict, np.ndarray]:
    """The two-sequence trajectory of one theory, and its 1 - C/Q (NaN at t = 0, where both states are 0)."""
    if weights is TheoryWeights.tied:
        from mftrnn.theory import tied

        feats = (tied.scenario_features(inp.steps, inp.split, inp.R) if inp.x is None
                 else tied.sequence_features(inp.x))
        traj = tied.trajectory(hp, feats, conf.population(weights), conf.seed, device)
    elif method is TheoryMethod.closed:
        traj = closed.trajectory(hp, inp.steps, inp.split, inp.R, inputs=inp.moments)
    else:
        traj = population.trajectory(hp, inp.steps, inp.split, inp.R, conf.population(weights), conf.seed, device,
                                     inputs=inp.moments)
    omc = closed.one_minus_c(traj)
    # Undefined while both states are (still) zero: at t = 0, and while a task's inputs are zero.
    q = np.sqrt(np.maximum(traj["q_h_a"] * traj["q_h_b"], 1e-300))
    omc[q <= 1e-12 * max(float(q.max()), 1e-300)] = np.nan
    omc[0] = np.nan
    return traj, omc


def run_theory(cfg: DictConfig, out_dir: Path) -> dict:
    """Compute everything `cfg` asks for, write theory.json (and plots, grid.npz) into out_dir."""
    conf: TheoryConfig = to_objects(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    th = conf.theory
    hp = hyper_from(conf)
    device = str(pick_device(conf.device))
    if th.grid.x is not None:  # check the grid's keys at the door, before any work
        from mftrnn.theory.grid import axis_values

        axis_values(th.grid.x, "x", hp.cell), axis_values(th.grid.y, "y", hp.cell)
    if th.weights is TheoryWeights.tied and hp.orthogonal:
        raise ConfigError("theory.weights=tied assumes i.i.d. Gaussian recurrent weights; use init.recurrent=gaussian")
    inp = two_inputs(conf)
    r_in = inp.R
    exact = closed_is_exact(hp)
    method = th.method if th.method is not TheoryMethod.auto else (TheoryMethod.closed if exact else TheoryMethod.population)
    t0 = time.perf_counter()

    fp = closed.fixed_point(hp, r_in)
    lam_closed = float(closed.m1(hp, fp, r_in))
    result: dict = {
        "cell": hp.cell, "recurrent": "orthogonal" if hp.orthogonal else "gaussian", "weights": th.weights.value,
        "method": method.value, "closed_form_exact": exact, "input": inp.info,
        "gates": {k: vars(g) for k, g in hp.gates.items()},
        "closed_form": {"Q_h": float(fp.q_h), "m1": lam_closed, "xi_C": float(closed.xi(lam_closed)),
                        "xi_Q": float(closed.xi(closed.length_slope(hp, fp, r_in)))},
    }
    # The stationary quantities (fixed point, m1, xi, spectra) are the untied theory's (the paper's).
    if method is TheoryMethod.closed:
        fixed = {"Q_h": float(fp.q_h), "M_h": float(fp.m_h)}
        if hp.cell == "lstm":
            fixed.update(Q_s=float(fp.q_s), M_s=float(fp.m_s))
        lam = lam_closed
    else:
        pop = conf.population(TheoryWeights.untied)
        pfp = population.fixed_point(hp, r_in, pop, seed=conf.seed, device=device)
        fixed = {"Q_h": pfp["q_h"], "M_h": pfp["m_h"]}
        if hp.cell == "lstm":
            fixed.update(Q_s=pfp["q_s"], M_s=pfp["m_s"])
        lam = population.tangent_growth(hp, r_in, pop, seed=conf.seed, device=device)
    traj, one_minus_c = two_sequences(hp, conf, th.weights, method, inp, device)
    result["fixed_point"] = fixed
    result["xi"] = {"C": float(closed.xi(lam)), "Q": result["closed_form"]["xi_Q"]}
    result["trajectory"] = {"t": traj["t"].tolist(), "Q_h": traj["q_h_a"], "Q_h_b": traj["q_h_b"], "C_h": traj["c_h"],
                            "one_minus_c": one_minus_c, "steps": inp.steps, "split": inp.split}
    if "q_s_a" in traj:
        result["trajectory"].update(Q_s=traj["q_s_a"], C_s=traj["c_s"])
    omc_untied = None
    if th.weights is TheoryWeights.tied:  # the paper's theory beside it, for the horizon and the plots
        traj_u, omc_untied = two_sequences(hp, conf, TheoryWeights.untied, method, inp, device)
        result["trajectory_untied"] = {"Q_h": traj_u["q_h_a"], "one_minus_c": omc_untied, "method": method.value}
    result["memory"] = _memory(conf, inp, one_minus_c, omc_untied)
    result["jacobian"] = {"m1": lam, **_spectrum(hp, conf, r_in, device, out_dir)}
    if th.grid.x is not None:
        result["grid"] = _grid(hp, conf, inp, out_dir, device)
    result["theory_seconds"] = time.perf_counter() - t0
    if th.simulate:
        from mftrnn.theory.app_sim import simulate_all  # deferred: only with theory.simulate=true

        result["simulation"] = simulate_all(hp, conf, result, device, out_dir, inputs=inp.x)
    result = _floats(result)
    (out_dir / "theory.json").write_text(json.dumps(result, indent=1) + "\n")
    mem = result["memory"]
    log.info("%s (%s weights): Q_h* = %.4g, xi_C = %.4g, memory horizon = %s, xi_Q = %.4g, m1 = %.4g, m2 = %s (%s) -> %s",
             hp.cell, th.weights.value, fixed["Q_h"], result["xi"]["C"] or float("inf"), _horizon_text(mem),
             result["xi"]["Q"] or float("inf"), lam, result["jacobian"].get("m2"), method.value, out_dir / "theory.json")
    return result


def _memory(conf: TheoryConfig, inp: TwoInputs, one_minus_c: np.ndarray, omc_untied: Optional[np.ndarray]) -> dict:
    """The memory horizon (eq. (T29)) of the theory in use and, given its 1 - C/Q, of the untied one."""
    th = conf.theory
    out = {"eps": th.horizon_eps, "split": inp.split, "steps_after_split": inp.steps - inp.split,
           "one_minus_c_at_split": float(one_minus_c[inp.split]) if inp.split else None}
    if inp.split == 0 or inp.split >= inp.steps:
        out.update(horizon=None, note="no step after the split, or identical inputs throughout: no horizon")
        return out
    out["horizon"] = _steps_or_none(closed.memory_horizon(one_minus_c, inp.split, th.horizon_eps))
    if omc_untied is not None:
        out["horizon_untied"] = _steps_or_none(closed.memory_horizon(omc_untied, inp.split, th.horizon_eps))
    return out


def _steps_or_none(h) -> Optional[float]:
    """A horizon in steps; None (JSON null) where it is longer than the trajectory shows."""
    h = float(h)
    return None if np.isnan(h) else h


def _horizon_text(mem: dict) -> str:
    if mem.get("note"):
        return "n/a"
    h = mem["horizon"]
    return f"> {mem['steps_after_split']} steps" if h is None else f"{h:.0f} steps"


def _spectrum(hp: Hyper, conf: TheoryConfig, r_in: float, device: str, out_dir: Path) -> dict:
    """m_2 and the densities of squared singular values (one step, product of T), eqs. (T22)-(T24)."""
    from mftrnn.theory import spectrum

    sp = conf.theory.spectrum
    out: dict = {}
    try:
        a, b, c, sig = population.jacobian_diagonals(hp, r_in, sp.population, seed=conf.seed, device=device)
    except NotImplementedError as exc:
        return {"m2": None, "spectrum_note": str(exc)}
    m1_pop, m2 = spectrum.moments(a, b, c, sig, hp.orthogonal)
    T = sp.product_steps
    pm1, pm2 = spectrum.product_moments_exact(a, b, c, sig, hp.orthogonal, T)
    out.update(m2=m2, m1_from_population=m1_pop, product={"steps": T, "m1": pm1, "m2": pm2})
    if sp.density:
        hi = max(4 * m2 / max(m1_pop, 1e-12), 4 * m1_pop, 1e-6)
        lam = np.linspace(hi / sp.points, hi, sp.points)
        out["density_one_step"] = {"lambda": lam, "rho": spectrum.density(a, b, c, sig, hp.orthogonal, lam),
                                   "zero_atom": spectrum.zero_atom(a, b, c, sig, hp.orthogonal), "steps": 1}
    if sp.product:
        grid = _product_grid(pm1, pm2, T, sp.product_points)
        rho = spectrum.density(a, b, c, sig, hp.orthogonal, grid, steps=T, method=sp.product_method)
        out["density_product"] = {"lambda": grid, "rho": rho, "steps": T, "method": sp.product_method}
    return out


def _product_grid(m1: float, m2: float, steps: int, points: int) -> np.ndarray:
    """A log-spaced lambda grid for the product of `steps` Jacobians, from its exact first two moments:
    around the mean m1 (= m1_step^T), over a range set by the normalized second moment."""
    spread = max(m2 / max(m1, 1e-300) ** 2, 1.0 + 1e-6)
    return np.geomspace(max(m1, 1e-300) / (100 * spread), max(m1, 1e-300) * 10 * spread, points)


def _grid(hp: Hyper, conf: TheoryConfig, inp: TwoInputs, out_dir: Path, device: str) -> dict:
    """xi_C etc. on the grid (closed forms), and the memory horizon: untied and, with
    theory.weights=tied, tied (batched population of theory.grid.population units per point)."""
    from mftrnn.theory import tied
    from mftrnn.theory.grid import axis_values, compute_grid, horizon_grid, plot_grid, plot_horizon

    th, g = conf.theory, conf.theory.grid
    x, y = axis_values(g.x, "x", hp.cell), axis_values(g.y, "y", hp.cell)
    t0 = time.perf_counter()
    res = compute_grid(hp, inp.R, x, y)
    seconds = time.perf_counter() - t0
    T = g.T if g.T is not None else inp.steps
    plot_grid(res, x[0], y[0], T, g.c, out_dir / "grid_xi_C.png", title=f"{hp.cell}: xi_C, contours c * xi_C = T = {T}")
    out = {"x_key": x[0], "y_key": y[0], "shape": [len(y[1]), len(x[1])], "seconds": seconds,
           "file": "grid.npz", "plot": "grid_xi_C.png"}
    if 0 < inp.split < inp.steps:
        feats = tied.scenario_features(inp.steps, inp.split, inp.R) if inp.x is None else tied.sequence_features(inp.x)
        with_tied = th.weights is TheoryWeights.tied
        hz = horizon_grid(hp, inp.R, x, y, feats, inp.split, th.horizon_eps, with_tied, g.population, conf.seed,
                          device, g.chunk_gb, task_inputs=inp.x is not None)
        level = g.T if g.T is not None else (inp.steps - inp.split) // 2
        plot_horizon(hz, x[0], y[0], level, out_dir / "grid_horizon.png",
                     title=f"{hp.cell}: memory horizon (eps = {th.horizon_eps:g}), contours at {level} steps")
        res.update({k: v for k, v in hz.items() if k.startswith("horizon_")})
        out.update(horizon_plot="grid_horizon.png", horizon_level=level, population=hz["population"],
                   chunk=hz["chunk"], **{k: v for k, v in hz.items() if k.startswith("seconds_")})
        log.info("horizon grid %dx%d (%s; %d units per point) in %s -> %s", len(y[1]), len(x[1]),
                 "untied + tied" if with_tied else "untied", g.population,
                 ", ".join(f"{k[8:]} {v:.2f} s" for k, v in hz.items() if k.startswith("seconds_")),
                 out_dir / "grid_horizon.png")
    np.savez(out_dir / "grid.npz", **res, x_key=x[0], y_key=y[0])
    log.info("grid %dx%d in %.2f s -> %s", len(y[1]), len(x[1]), seconds, out_dir / "grid_xi_C.png")
    return out


@hydra.main(version_base="1.3", config_path="pkg://mftrnn.conf", config_name="theory")
def main(cfg: DictConfig) -> Optional[float]:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    pin_for_hydra_job(out_dir)  # hydra/launcher=gpus: this worker's own GPU, before CUDA starts
    res = run_or_exit("theory", run_theory, cfg, out_dir)
    return res["xi"]["C"]
