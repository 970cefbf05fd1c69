"""`mftrnn theory`: the mean-field theory for one set of hyperparameters (and optionally a grid),
written to theory.json with plots; with theory.simulate=true, beside simulations of real networks.

Which method computes what (docs/theory.md §2.5): closed forms where they are exact (GRU, rho = 0),
the population solver elsewhere (LSTM, any rho > 0); grids always use the closed forms.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Optional

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mftrnn.errors import run_or_exit
from mftrnn.gpus import pin_for_hydra_job
from mftrnn.schema import CellKind, GruForm, TheoryConfig, TheoryMethod, register_configs, to_objects
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


def run_theory(cfg: DictConfig, out_dir: Path) -> dict:
    """Compute everything `cfg` asks for, write theory.json (and plots, grid.npz) into out_dir."""
    conf: TheoryConfig = to_objects(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    th = conf.theory
    hp = hyper_from(conf)
    r_in = th.input.R
    device = str(pick_device(conf.device))
    if th.grid.x is not None:  # check the grid's keys at the door, before any work
        from mftrnn.theory.grid import axis_values

        axis_values(th.grid.x, "x", hp.cell), axis_values(th.grid.y, "y", hp.cell)
    exact = closed_is_exact(hp)
    method = th.method if th.method is not TheoryMethod.auto else (TheoryMethod.closed if exact else TheoryMethod.population)
    t0 = time.perf_counter()

    fp = closed.fixed_point(hp, r_in)
    lam_closed = float(closed.m1(hp, fp, r_in))
    result: dict = {
        "cell": hp.cell, "recurrent": "orthogonal" if hp.orthogonal else "gaussian", "method": method.value,
        "closed_form_exact": exact, "input": {"R": r_in},
        "gates": {k: vars(g) for k, g in hp.gates.items()},
        "closed_form": {"Q_h": float(fp.q_h), "m1": lam_closed, "xi_C": float(closed.xi(lam_closed)),
                        "xi_Q": float(closed.xi(closed.length_slope(hp, fp, r_in)))},
    }
    if method is TheoryMethod.closed:
        fixed = {"Q_h": float(fp.q_h), "M_h": float(fp.m_h)}
        if hp.cell == "lstm":
            fixed.update(Q_s=float(fp.q_s), M_s=float(fp.m_s))
        lam = lam_closed
        traj = closed.trajectory(hp, th.steps, th.split, r_in)
        one_minus_c = 1 - traj["c_h"] / np.sqrt(np.maximum(traj["q_h_a"] * traj["q_h_b"], 1e-300))
    else:
        pfp = population.fixed_point(hp, r_in, th.population, seed=conf.seed, device=device)
        fixed = {"Q_h": pfp["q_h"], "M_h": pfp["m_h"]}
        if hp.cell == "lstm":
            fixed.update(Q_s=pfp["q_s"], M_s=pfp["m_s"])
        lam = population.tangent_growth(hp, r_in, th.population, seed=conf.seed, device=device)
        traj = population.trajectory(hp, th.steps, th.split, r_in, th.population, conf.seed, device)
        one_minus_c = traj["d_h"] / np.sqrt(np.maximum(traj["q_h_a"] * traj["q_h_b"], 1e-300))
    one_minus_c[0] = np.nan  # both start at h = 0: undefined
    result["fixed_point"] = fixed
    result["xi"] = {"C": float(closed.xi(lam)), "Q": result["closed_form"]["xi_Q"]}
    result["trajectory"] = {"t": traj["t"].tolist(), "Q_h": traj["q_h_a"], "Q_h_b": traj["q_h_b"], "C_h": traj["c_h"],
                            "one_minus_c": one_minus_c, "steps": th.steps, "split": th.split}
    if "q_s_a" in traj:
        result["trajectory"].update(Q_s=traj["q_s_a"], C_s=traj["c_s"])
    result["jacobian"] = {"m1": lam, **_spectrum(hp, conf, r_in, device, out_dir)}
    if th.grid.x is not None:
        result["grid"] = _grid(hp, conf, r_in, out_dir)
    result["theory_seconds"] = time.perf_counter() - t0
    if th.simulate:
        from mftrnn.theory.app_sim import simulate_all  # deferred: only with theory.simulate=true

        result["simulation"] = simulate_all(hp, conf, result, device, out_dir)
    result = _floats(result)
    (out_dir / "theory.json").write_text(json.dumps(result, indent=1) + "\n")
    log.info("%s: Q_h* = %.4g, xi_C = %.4g, xi_Q = %.4g, m1 = %.4g, m2 = %s (%s) -> %s", hp.cell, fixed["Q_h"],
             result["xi"]["C"] or float("inf"), result["xi"]["Q"] or float("inf"), lam,
             result["jacobian"].get("m2"), method.value, out_dir / "theory.json")
    return result


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


def _grid(hp: Hyper, conf: TheoryConfig, r_in: float, out_dir: Path) -> dict:
    from mftrnn.theory.grid import axis_values, compute_grid, plot_grid

    g = conf.theory.grid
    x, y = axis_values(g.x, "x", hp.cell), axis_values(g.y, "y", hp.cell)
    t0 = time.perf_counter()
    res = compute_grid(hp, r_in, x, y)
    seconds = time.perf_counter() - t0
    np.savez(out_dir / "grid.npz", **res, x_key=x[0], y_key=y[0])
    T = g.T if g.T is not None else conf.theory.steps
    plot_grid(res, x[0], y[0], T, g.c, out_dir / "grid_xi_C.png", title=f"{hp.cell}: xi_C, contours c * xi_C = T = {T}")
    log.info("grid %dx%d in %.2f s -> %s", len(y[1]), len(x[1]), seconds, out_dir / "grid_xi_C.png")
    return {"x_key": x[0], "y_key": y[0], "shape": [len(y[1]), len(x[1])], "seconds": seconds,
            "file": "grid.npz", "plot": "grid_xi_C.png"}


@hydra.main(version_base="1.3", config_path="pkg://mftrnn.conf", config_name="theory")
def main(cfg: DictConfig) -> Optional[float]:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    pin_for_hydra_job(out_dir)  # hydra/launcher=gpus: this worker's own GPU, before CUDA starts
    res = run_or_exit("theory", run_theory, cfg, out_dir)
    return res["xi"]["C"]
