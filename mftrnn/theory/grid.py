"""Hyperparameter grids over a 2-D slice, with heat maps: the closed-form theory's time scales
(docs/theory.md §5), and, when asked, the memory horizon of the untied and tied theories (one
batched population, on the GPU when there is one; §7.6)."""
from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from mftrnn.errors import ConfigError
from mftrnn.cells import GATES
from mftrnn.theory.closed import fixed_point, length_slope, memory_horizon, tangent, xi
from mftrnn.theory.hyper import Gate, Hyper

AXIS_KEY = re.compile(r"^init\.gates\.(\w+)\.(mu|rho|sigma|nu)$")


def axis_values(axis: list, name: str, cell: str) -> tuple[str, np.ndarray]:
    """[key, min, max, points] -> (key, evenly spaced values); the key must name a gate of the cell."""
    key = str(axis[0])
    m = AXIS_KEY.match(key)
    if key != "theory.input.R" and not (m and m.group(1) in GATES[cell]):
        raise ConfigError(f"theory.grid.{name}: {key!r} is not a grid key; use init.gates.<gate>.<mu|rho|sigma|nu> "
                          f"with a gate of {cell} ({', '.join(GATES[cell])}) or theory.input.R")
    return key, np.linspace(float(axis[1]), float(axis[2]), int(axis[3]))


def _set(hp: Hyper, r_in, key: str, values: np.ndarray):
    if key == "theory.input.R":
        return hp, values
    gate, attr = AXIS_KEY.match(key).groups()
    gates = dict(hp.gates)
    gates[gate] = replace(gates[gate], **{attr: values})
    return replace(hp, gates=gates), r_in


def check_grid(hp: Hyper, grid, source: str) -> None:
    """Fail at the door on keys that are not a gate parameter of this cell, on gates whose bias
    follows a non-Gaussian law (chrono, pytorch), and on theory.input.R with task inputs."""
    for name in ("x", "y"):
        key, _ = axis_values(getattr(grid, name), name, hp.cell)
        m = AXIS_KEY.match(key)
        if m and m.group(1) in hp.law_gates and m.group(2) in ("mu", "rho"):
            raise ConfigError(f"theory.grid.{name}: {key} is not a parameter of init={hp.source.get('init')} "
                              f"(gate {m.group(1)}'s bias follows its own law); use init=meanfield")
        if key == "theory.input.R" and source == "task":
            raise ConfigError("theory.input.R is a grid key of the scenario inputs, not of theory/input=task")


# A key that moves with one axis of a grid: (key, "x" or "y", its value at each point of that axis); e.g.
# the LSTM heat map's init.gates.i.mu = -init.gates.f.mu along x.
Linked = tuple[str, str, np.ndarray]


def compute_grid(hp: Hyper, r_in: float, x: tuple[str, np.ndarray], y: tuple[str, np.ndarray],
                 linked: tuple[Linked, ...] = ()) -> dict[str, np.ndarray]:
    """Q_h*, m_1, lambda_C and xi_C = -1/ln lambda_C, and xi_Q on the grid; arrays are (len(y), len(x)).
    xi_Q is left out (NaN) where a bias spread makes it cost d K map evaluations per point. `linked`:
    keys that move with an axis."""
    vx, vy = x[1], y[1]
    hp, r = _grid_hyper(hp, r_in, x, y, linked)
    fp = fixed_point(hp, r)
    m_1, lam = tangent(hp, fp, r)
    spread = fp.rule[1].size > 1
    xi_q = np.full(np.shape(fp.q_h), np.nan) if spread else xi(length_slope(hp, fp, r))
    return {"x": vx, "y": vy, "q_h": fp.q_h, "m1": m_1, "lambda_C": lam, "xi_C": xi(lam), "xi_Q": xi_q}


def _grid_hyper(hp: Hyper, r_in, x: tuple[str, np.ndarray], y: tuple[str, np.ndarray],
                linked: tuple[Linked, ...] = ()) -> tuple[Hyper, np.ndarray]:
    (kx, vx), (ky, vy) = x, y
    hp, r = _set(hp, r_in, kx, vx[None, :])
    hp, r = _set(hp, r, ky, vy[:, None])
    for key, axis, values in linked:
        values = np.asarray(values, float)
        hp, r = _set(hp, r, key, values[None, :] if axis == "x" else values[:, None])
    return hp, np.broadcast_to(np.asarray(r, float), (len(vy), len(vx)))


def _scaled_inputs(hp: Hyper, r: np.ndarray, r_ref: float) -> Hyper:
    """Input second moment R on a grid, for the tied solver whose features are shared by the grid:
    the input field is nu * (eps . X), so R -> R' is nu -> nu sqrt(R'/R) for every gate."""
    if np.all(r == r_ref):
        return hp
    f = np.sqrt(r / r_ref)
    return replace(hp, gates={k: replace(g, nu=g.nu * f) for k, g in hp.gates.items()})


def horizon_grid(hp: Hyper, r_in: float, x: tuple[str, np.ndarray], y: tuple[str, np.ndarray], features,
                 split: int, eps: float, with_tied: bool = True, population: int = 2000, seed: int = 0,
                 device=None, chunk_gb: float = 4.0, linked: tuple[Linked, ...] = ()) -> dict[str, np.ndarray]:
    """The memory horizon (eq. (T29)) on the grid, (len(y), len(x)) arrays, NaN where it is longer
    than steps - split: `horizon_untied` and, with `with_tied`, `horizon_tied`. Both come from the
    batched population of mftrnn.theory.tied (untied: fresh fields at every step; the same units'
    noise for every grid point and both theories), `population` units per point, as many points at
    once as fit in chunk_gb of memory. features: (S, T, d) inputs (scenario_features at r_in, or
    task sequences); a theory.input.R axis scales them (scenario only). `linked`: keys that move with
    an axis."""
    import torch

    from mftrnn.theory import tied

    ghp, r = _grid_hyper(hp, r_in, x, y, linked)
    ghp = _scaled_inputs(ghp, r, r_in)
    shape, n = r.shape, r.size
    flat = {k: {a: np.broadcast_to(np.asarray(getattr(g, a), float), shape).ravel() for a in ("mu", "rho", "sigma", "nu")}
            for k, g in ghp.gates.items()}
    n_seq, steps, d = features.shape
    per_point = (tied.memory_bytes(hp.cell, steps, n_seq, population, batch=2, features_dim=d)
                 - tied.memory_bytes(hp.cell, steps, n_seq, population, batch=1, features_dim=d))
    chunk = int(max(1, min(n, chunk_gb * 1e9 // max(per_point, 1))))
    out = {"x": x[1], "y": y[1], "steps": steps, "split": split, "population": population, "chunk": chunk}
    for name, is_tied in (("untied", False),) + ((("tied", True),) if with_tied else ()):
        dist = np.empty((steps + 1, n))
        t0 = time.perf_counter()
        for lo in range(0, n, chunk):
            sl = slice(lo, min(n, lo + chunk))
            part = replace(ghp, gates={k: Gate(**{a: v[sl] for a, v in g.items()}) for k, g in flat.items()})
            res = tied.trajectory(part, features, population, seed, device, tied=is_tied)
            dist[:, sl] = res["d_h"]
        if device is not None and str(device).startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
        out[f"seconds_{name}"] = time.perf_counter() - t0
        out[f"horizon_{name}"] = memory_horizon(dist.reshape((steps + 1,) + shape), split, eps)
    return out


def plot_horizon(res: dict, x_key: str, y_key: str, level: float, out: Path, title: str = "") -> Path:
    """Heat map of log10 of the memory horizon (tied theory where computed, else untied; capped at
    the steps the trajectory shows after the split), with the boundary horizon = `level` of each
    theory: the regions predicted to remember for `level` steps (tied: solid, untied: dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cap = float(res["steps"] - res["split"])
    main = "horizon_tied" if "horizon_tied" in res else "horizon_untied"
    shown = lambda h: np.log10(np.clip(np.where(np.isnan(h), cap, h), 1, None))  # noqa: E731
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    mesh = ax.pcolormesh(res["x"], res["y"], shown(res[main]), shading="auto", cmap="viridis", vmin=0,
                         vmax=np.log10(cap))
    fig.colorbar(mesh, ax=ax, label=f"log10 memory horizon (steps), {main.split('_')[1]} theory; top: >= {cap:g}")
    handles = []
    for key, style, color in (("horizon_tied", "-", "white"), ("horizon_untied", "--", "tab:red")):
        if key in res:
            # NaN (longer than shown) counts as >= level; the boundary sits half a step below it
            z = np.where(np.isnan(res[key]), max(cap, level), res[key])
            if z.min() < level - 0.5 < z.max():
                ax.contour(res["x"], res["y"], z, levels=[level - 0.5], colors=color, linestyles=style)
            handles.append(plt.Line2D([], [], color=color, linestyle=style,
                                      label=f"{key.split('_')[1]} theory: horizon = {level:g}"))
    ax.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.6)
    return _save(fig, ax, x_key, y_key, title or f"memory horizon; contours at {level:g} steps", out)


def plot_grid(res: dict, x_key: str, y_key: str, T: int, cs: list[float], out: Path, title: str = "") -> Path:
    """Heat map of log10 xi_C with the contours c * xi_C = T (trainable where c * xi_C >= T)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xi_c = np.where(np.isfinite(res["xi_C"]), res["xi_C"], np.nan)
    top = np.nanmax(xi_c) if np.isfinite(np.nanmax(xi_c)) else 1e6
    shown = np.log10(np.clip(np.where(np.isfinite(res["xi_C"]), res["xi_C"], top), 1e-2, None))
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    mesh = ax.pcolormesh(res["x"], res["y"], shown, shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="log10 xi_C (steps)")
    for c, style in zip(cs, ["-", "--", ":", "-."] * 4):
        level = np.log10(T / c)
        if shown.min() < level < shown.max():
            cont = ax.contour(res["x"], res["y"], shown, levels=[level], colors="white", linestyles=style)
            ax.clabel(cont, fmt={level: f"{c:g} xi_C = {T}"}, fontsize=7)
    return _save(fig, ax, x_key, y_key, title or f"xi_C; contours c * xi_C = T = {T}", out)


def _save(fig, ax, x_key: str, y_key: str, title: str, out: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
