"""Hyperparameter grids: the closed-form theory over a 2-D slice, and its heat map (docs/theory.md §5)."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from mftrnn.errors import ConfigError
from mftrnn.theory.closed import GATES, Hyper, fixed_point, length_slope, m1, xi

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


def compute_grid(hp: Hyper, r_in: float, x: tuple[str, np.ndarray], y: tuple[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Q_h*, m_1, xi_C = -1/ln m_1 and xi_Q on the grid; arrays are (len(y), len(x))."""
    (kx, vx), (ky, vy) = x, y
    hp, r = _set(hp, r_in, kx, vx[None, :])
    hp, r = _set(hp, r, ky, vy[:, None])
    r = np.broadcast_to(np.asarray(r, float), (len(vy), len(vx)))
    fp = fixed_point(hp, r)
    lam = m1(hp, fp, r)
    slope = length_slope(hp, fp, r)
    return {"x": vx, "y": vy, "q_h": fp.q_h, "m1": lam, "xi_C": xi(lam), "xi_Q": xi(slope)}


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
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    ax.set_title(title or f"xi_C; contours c * xi_C = T = {T}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
