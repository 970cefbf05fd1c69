"""`mftrnn theory`: the mean-field theory of one initialization (any scheme), written to theory.json
with plots; with theory.simulate=true beside simulated networks; with theory.grid.* over a slice.

A thin app: the config becomes the theory's hyperparameters (mftrnn.theory.hyper) and inputs
(mftrnn.theory.inputs); the library computes the stationary quantities (stationary), the
two-sequence trajectories (trajectories), the spectra (spectrum) and grids (grid). The fields of
theory.json are listed in docs/theory.md §9.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Optional

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mftrnn import __version__
from mftrnn.errors import ConfigError, run_or_exit
from mftrnn.gpus import pin_for_hydra_job
from mftrnn.schema import InitScheme, TheoryConfig, TheoryWeights, register_configs, to_objects
from mftrnn.seeding import pick_device
from mftrnn.theory import hyper, inputs, plots
from mftrnn.theory.hyper import Hyper
from mftrnn.theory.stationary import stationary
from mftrnn.theory.trajectories import Trajectory, memory, two_sequences

log = logging.getLogger(__name__)
register_configs()


def theory_hyper(conf: TheoryConfig) -> Hyper:
    """The hyperparameters of the configured init (any scheme) for the configured cell, width and task."""
    critical = conf.init.scheme is InitScheme.critical
    if not (critical or conf.init.drive.theory):
        return hyper.for_config(conf, conf.theory.gru_form)
    # solved for the task's T and inputs (docs/theory.md §10), or a drive the theory chooses (§10.8)
    if conf.theory.gru_form.value == "reset_before" and conf.cell.kind.value == "gru":
        raise ConfigError("init=critical and init.drive.theory are solved for nn.GRU (theory.gru_form=reset_after) only")
    from mftrnn.data import load_splits
    from mftrnn.inits import solve_critical, task_shape, theory_drive
    from mftrnn.tasks import build_task

    task = build_task(conf.task)
    splits = load_splits(task.dataset, conf.data)
    task.fit(splits)
    shape = task_shape(task, splits, conf.init)
    if critical:
        return solve_critical(conf.cell.kind.value, conf.init, shape)[0].hyper()
    chosen = theory_drive(conf.cell.kind.value, conf.init.drive, shape)
    return hyper.for_config(conf, conf.theory.gru_form, drive=(chosen["gates"], chosen["candidate"]))


def to_json(d):
    """Arrays and numpy scalars as lists and floats; non-finite numbers as null."""
    if isinstance(d, dict):
        return {k: to_json(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [to_json(v) for v in d]
    if isinstance(d, np.ndarray):
        return to_json(d.tolist()) if d.ndim else to_json(float(d))
    if isinstance(d, (float, np.floating)):
        return float(d) if np.isfinite(d) else None
    if isinstance(d, np.integer):
        return int(d)
    return d


def trajectory_json(tr: Trajectory) -> dict:
    out = {"theory": tr.theory, "method": tr.method, "t": tr.t, "Q_h_a": tr.q_h_a, "Q_h_b": tr.q_h_b, "C_h": tr.c_h,
           "distance": tr.d_h, "one_minus_c": tr.one_minus_c, "steps": tr.steps, "split": tr.split}
    if tr.d_h_se is not None:
        out["distance_se"] = tr.d_h_se
    if tr.q_s_a is not None:
        out.update(Q_s_a=tr.q_s_a, C_s=tr.c_s)
    return out


def run_theory(cfg: DictConfig, out_dir: Path) -> dict:
    """Compute everything `cfg` asks for; write theory.json and the plots into out_dir."""
    conf: TheoryConfig = to_objects(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    th = conf.theory
    hp = theory_hyper(conf)
    device = str(pick_device(conf.device))
    if th.grid.x is not None:  # check the grid's keys at the door, before any work
        from mftrnn.theory.grid import check_grid

        check_grid(hp, th.grid, th.input.source.value)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    inp = inputs.from_config(conf)
    seconds["inputs"] = time.perf_counter() - clock
    if inp.info.get("source") == "task":
        log.info("inputs: %s test examples %s (labels %s), T = %d, split = %d", inp.info["task"],
                 inp.info["examples"], inp.info["labels"], inp.steps, inp.split)

    clock = time.perf_counter()
    st = stationary(hp, inp.R, th.method, th.population, conf.seed, device)
    seconds["stationary"] = time.perf_counter() - clock
    result: dict = {"mftrnn": __version__, "hyperparameters": hp.describe(), "inputs": _inputs_json(inp),
                    "stationary": {**st.as_dict(), "R": inp.R, "bias_spread": st.spread,
                                   "window": _window() if st.spread else None}}

    clock = time.perf_counter()
    traj = two_sequences(hp, inp, th.weights, th.method, th.population, conf.seed, device)
    result["trajectory"] = trajectory_json(traj)
    untied = None
    if th.weights is TheoryWeights.tied:  # the paper's theory beside it
        untied = two_sequences(hp, inp, TheoryWeights.untied, th.method, th.population,
                               conf.seed, device)
        result["trajectory_untied"] = trajectory_json(untied)
        if hp.orthogonal:
            result["trajectory"]["note"] = "orthogonal recurrent weights treated as Gaussian (docs/theory.md §7.8)"
        if hp.phase_limited:
            result["trajectory"]["note"] += ("; their eigen-angles are limited (docs/theory.md §10.6), which "
                                             "neither population theory describes")
    seconds["trajectories"] = time.perf_counter() - clock
    mem = memory(traj, th.horizon_eps)
    if untied is not None and "horizon" in mem:
        mem["horizon_untied"] = memory(untied, th.horizon_eps)["horizon"]
    result["memory"] = mem

    clock = time.perf_counter()
    result["jacobian"] = _spectrum(hp, conf, inp.R, device)
    seconds["spectrum"] = time.perf_counter() - clock
    if th.grid.x is not None:
        clock = time.perf_counter()
        result["grid"] = _grid(hp, conf, inp, out_dir, device)
        seconds["grid"] = time.perf_counter() - clock
    if th.simulate:
        from mftrnn.theory.app_sim import simulate_all  # deferred: only with theory.simulate=true

        clock = time.perf_counter()
        result["simulation"] = simulate_all(hp, conf, inp, device)
        seconds["simulation"] = time.perf_counter() - clock
    result["seconds"] = seconds
    result = to_json(result)
    result["plots"] = plots.theory_plots(result, out_dir)
    (out_dir / "theory.json").write_text(json.dumps(result, indent=1) + "\n")
    _log_summary(hp, conf, result, out_dir)
    return result


def _window() -> int:
    from mftrnn.theory.closed import WINDOW

    return WINDOW


def _inputs_json(inp: inputs.TwoInputs) -> dict:
    info = {k: v for k, v in inp.info.items() if not k.startswith("R_")}  # per-step moments: see trajectory
    info.update(steps=inp.steps, split=inp.split, R_stationary=inp.R)
    return info


def _log_summary(hp: Hyper, conf: TheoryConfig, res: dict, out_dir: Path) -> None:
    st, mem = res["stationary"], res["memory"]
    xi_c = st["xi_C"] if st["xi_C"] is not None else float("inf")
    horizon = "n/a" if mem.get("note") else (f"> {mem['steps_after_split']} steps" if mem["horizon"] is None
                                             else f"{mem['horizon']:.0f} steps")
    extra = ""
    if "horizon_untied" in mem:
        hu = mem["horizon_untied"]
        extra = f" (untied theory: {'> %d' % mem['steps_after_split'] if hu is None else '%.0f' % hu} steps)"
    log.info("%s, init=%s: Q_h* = %.4g, m1 = %.4g, xi_C = %.4g (untied theory, %s); memory horizon (%s theory) = %s%s"
             " -> %s", hp.cell, conf.init.scheme.value, st["Q_h"], st["m1"], xi_c, st["method"],
             conf.theory.weights.value, horizon, extra, out_dir / "theory.json")
    if res["jacobian"].get("error"):
        log.warning("spectrum: %s", res["jacobian"]["error"])


def _spectrum(hp: Hyper, conf: TheoryConfig, r_in: float, device: str) -> dict:
    """m_2 and the densities of squared singular values (one step, product of T), eqs. (T22)-(T24),
    from the units' Jacobian diagonals at stationarity. A failure is reported, not raised: the rest
    of the result stands without it."""
    from mftrnn.theory import population, spectrum

    sp = conf.theory.spectrum
    try:
        a, b, c, sig = population.jacobian_diagonals(hp, r_in, sp.population, seed=conf.seed, device=device)
    except NotImplementedError as exc:
        return {"m2": None, "note": str(exc)}
    m1_pop, m2 = spectrum.moments(a, b, c, sig, hp.orthogonal)
    T = sp.product_steps
    pm1, pm2 = spectrum.product_moments_exact(a, b, c, sig, hp.orthogonal, T)
    out: dict = {"m1": m1_pop, "m2": m2, "product": {"steps": T, "m1": pm1, "m2": pm2}}
    try:
        if sp.density:
            hi = max(4 * m2 / max(m1_pop, 1e-12), 4 * m1_pop, 1e-6)
            lam = np.linspace(hi / sp.points, hi, sp.points)
            out["density_one_step"] = {"lambda": lam, "rho": spectrum.density(a, b, c, sig, hp.orthogonal, lam),
                                       "zero_atom": spectrum.zero_atom(a, b, c, sig, hp.orthogonal), "steps": 1}
        if sp.product:
            grid = _product_grid(pm1, pm2, sp.product_points)
            rho = spectrum.density(a, b, c, sig, hp.orthogonal, grid, steps=T, method=sp.product_method)
            out["density_product"] = {"lambda": grid, "rho": rho, "steps": T, "method": sp.product_method}
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as exc:
        out["error"] = f"density not computed ({str(exc).splitlines()[0]}); moments are exact"
    return out


def _product_grid(m1: float, m2: float, points: int) -> np.ndarray:
    """A log-spaced lambda grid for a product of Jacobians, from its exact first two moments: around
    the mean m1, over a range set by the normalized second moment."""
    spread = max(m2 / max(m1, 1e-300) ** 2, 1.0 + 1e-6)
    m1 = max(m1, 1e-300)
    s = math.sqrt(math.log(spread))  # sd of ln(lambda) were it log-normal with these two moments
    if 5 * s < math.log(10):  # narrow (near-isometric products): +-5 sd, so the grid resolves the peak
        mu = math.log(m1) - s * s / 2
        return np.exp(np.linspace(mu - 5 * s - 1e-3, mu + 5 * s + 1e-3, points))
    return np.geomspace(m1 / (100 * spread), m1 * 10 * spread, points)


def _grid(hp: Hyper, conf: TheoryConfig, inp: inputs.TwoInputs, out_dir: Path, device: str) -> dict:
    """xi_C etc. on the slice (closed forms) and, with theory.grid.horizon=true, the memory horizon of
    the untied and (theory.weights=tied) tied theories; one memory level marks both plots."""
    from mftrnn.theory.grid import axis_values, compute_grid, horizon_grid, plot_grid, plot_horizon

    th, g = conf.theory, conf.theory.grid
    x, y = axis_values(g.x, "x", hp.cell), axis_values(g.y, "y", hp.cell)
    level = g.T if g.T is not None else inp.steps - inp.split
    t0 = time.perf_counter()
    res = compute_grid(hp, inp.R, x, y)
    out = {"x_key": x[0], "y_key": y[0], "shape": [len(y[1]), len(x[1])], "seconds": time.perf_counter() - t0,
           "memory_level": level, "file": "grid.npz", "plot": "grid_xi_C.png"}
    plot_grid(res, x[0], y[0], level, g.c, out_dir / "grid_xi_C.png",
              title=f"{hp.cell}: xi_C (untied theory), contours c * xi_C = {level} steps")
    if g.horizon:
        if inp.x is None:  # the scenario: resolve horizons up to the level
            inp = inputs.scenario(inp.split + level, inp.split, inp.R)
        elif level > inp.steps - inp.split:
            raise ConfigError(f"theory.grid.T={level} is not allowed with theory/input=task: the task has "
                              f"{inp.steps - inp.split} steps after the split")
        with_tied = th.weights is TheoryWeights.tied
        hz = horizon_grid(hp, inp.R, x, y, inp.features(), inp.split, th.horizon_eps, with_tied, g.population,
                          conf.seed, device, g.chunk_gb)
        plot_horizon(hz, x[0], y[0], level, out_dir / "grid_horizon.png",
                     title=f"{hp.cell}: memory horizon (eps = {th.horizon_eps:g}), contours at {level} steps")
        res.update({k: v for k, v in hz.items() if k.startswith("horizon_")})
        out.update(horizon_plot="grid_horizon.png", population=hz["population"], chunk=hz["chunk"],
                   **{k: v for k, v in hz.items() if k.startswith("seconds_")})
        log.info("horizon grid %dx%d (%s; %d units per point) in %s -> %s", len(y[1]), len(x[1]),
                 "untied + tied" if with_tied else "untied", g.population,
                 ", ".join(f"{k[8:]} {v:.2f} s" for k, v in hz.items() if k.startswith("seconds_")),
                 out_dir / "grid_horizon.png")
    np.savez(out_dir / "grid.npz", **res, x_key=x[0], y_key=y[0])
    log.info("grid %dx%d in %.2f s -> %s", len(y[1]), len(x[1]), out["seconds"], out_dir / "grid_xi_C.png")
    return out


@hydra.main(version_base="1.3", config_path="pkg://mftrnn.conf", config_name="theory")
def main(cfg: DictConfig) -> Optional[float]:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    pin_for_hydra_job(out_dir)  # hydra/launcher=gpus: this worker's own GPU, before CUDA starts
    res = run_or_exit("theory", run_theory, cfg, out_dir)
    return res["stationary"]["xi_C"]
