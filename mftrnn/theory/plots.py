"""Plots of a theory.json result: the two-sequence trajectories (always) and the Jacobian spectra
(when a density or simulated spectra exist). Both read only the JSON-ready result dict."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _arr(v) -> np.ndarray:
    return np.asarray([np.nan if x is None else x for x in v], float)


def _setting(res: dict) -> str:
    hp, inp = res["hyperparameters"], res["inputs"]
    src = hp.get("source", {})
    # meanfield and critical laws do not depend on the width: no hidden size to name
    what = f"{hp['cell']}, init={src.get('init', '?')}" + (f", hidden {src['hidden']}" if "hidden" in src else "")
    if inp.get("source") == "task":
        return f"{what}; two {inp['task']} test examples (labels {inp['labels']}), T = {inp['steps']}"
    return f"{what}; two sequences, R = {inp['R']:g}, identical after t = {inp['split']}"


def theory_plots(res: dict, out_dir: Path) -> list[str]:
    """Write trajectories.png and (if there is a spectrum to show) spectrum.png; return their names."""
    names = [plot_trajectories(res, out_dir / "trajectories.png")]
    jac = res.get("jacobian", {})
    sim = res.get("simulation", {})
    if "density_one_step" in jac or "density_product" in jac or any("jacobian" in sim.get(k, {}) for k in ("tied", "untied")):
        names.append(plot_spectra(res, out_dir / "spectrum.png"))
    return names


def plot_trajectories(res: dict, path: Path) -> str:
    """Q_h^t and the distance of the two sequences over t, relative to its value at the split:
    theory (lines) against tied and untied networks (markers), with the memory horizon."""
    plt = _plt()
    tr = res["trajectory"]
    t, split = np.asarray(tr["t"]), tr["split"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.5, 4.0), dpi=110)
    curves = [(tr, "k-", f"{tr['theory']} theory")]
    if "trajectory_untied" in res:
        curves.append((res["trajectory_untied"], "k:", "untied theory"))
    for cur, style, label in curves:
        ax1.plot(t, _arr(cur["Q_h_a"]), style, label=label)
        d = _arr(cur["distance"])
        ax2.semilogy(t, np.clip(d / max(d[split], 1e-300), 1e-16, None) if split else np.clip(d, 1e-16, None),
                     style, label=label)
    sim = res.get("simulation", {})
    for name, style in (("untied", "o"), ("tied", "x")):
        if name in sim:
            ax1.plot(t, _arr(sim[name]["Q_h_a"]), style, ms=3, label=f"{name} networks (n = {sim['width']})")
            d = _arr(sim[name]["distance"])
            ax2.semilogy(t, np.clip(d / max(d[split], 1e-300), 1e-16, None) if split else np.clip(d, 1e-16, None),
                         style, ms=3, label=f"{name} networks")
    mem = res.get("memory", {})
    if split:
        for ax in (ax1, ax2):
            ax.axvline(split, color="grey", lw=0.8, ls="--")
        ax2.axhline(mem.get("eps", 0.01), color="tab:red", lw=0.8, ls=":", label=f"eps = {mem.get('eps', 0.01):g}")
        if mem.get("horizon") is not None:
            ax2.axvline(split + mem["horizon"], color="tab:red", lw=0.8, label=f"horizon {mem['horizon']:.0f} steps")
    for ax in (ax1, ax2):
        ax.set_xlabel("step t")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_ylabel("Q_h = |h|^2 / n")
    ax2.set_ylabel("distance |h_a - h_b|^2 / 2n, relative to the split" if split else "distance |h_a - h_b|^2 / 2n")
    ax1.set_title("length of the state", fontsize=9)
    ax2.set_title("how far apart the two sequences' states are", fontsize=9)
    fig.suptitle(_setting(res), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def plot_spectra(res: dict, path: Path) -> str:
    """Density of squared singular values of the one-step Jacobian and of a product of T of them:
    theory against histograms of simulated networks."""
    plt = _plt()
    jac, sim = res.get("jacobian", {}), res.get("simulation", {})
    steps = (jac.get("product") or {}).get("steps", "T")
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.0), dpi=110)
    for ax, key, title in ((axes[0], "one_step", "one step"),
                           (axes[1], "product", f"product of {steps} steps")):
        dens = jac.get(f"density_{key}", {})
        span: list[float] = []  # where the histograms and the theory's density are: the product's x range
        for name, color in (("untied", "tab:blue"), ("tied", "tab:orange")):
            vals = sim.get(name, {}).get("jacobian", {}).get(key)
            if vals is not None and len(vals):
                v = _arr(vals)
                if key == "product":
                    v = np.log10(np.clip(v, 1e-300, None))
                    span += [float(np.nanmin(v)), float(np.nanmax(v))]
                ax.hist(v, bins=60, density=True, alpha=0.45, color=color, label=f"{name} networks")
        if "rho" in dens:
            lam, rho = _arr(dens["lambda"]), _arr(dens["rho"])
            if key == "product":  # density of log10(lambda): rho(lambda) lambda ln 10
                d = rho * lam * np.log(10)
                ax.plot(np.log10(lam), d, "k-", label="theory (untied)")
                ok = np.isfinite(d) & (d > 1e-3 * np.nanmax(d))
                if ok.any():
                    span += [float(np.log10(lam[ok].min())), float(np.log10(lam[ok].max()))]
            else:
                ax.plot(lam, rho, "k-", label="theory (untied)")
                ok = np.isfinite(rho) & (rho > 1e-3 * np.nanmax(rho))
                if ok.any():
                    ax.set_xlim(0, 1.1 * lam[ok].max())
        elif key == "one_step" and jac.get("error"):
            ax.text(0.02, 0.95, "theory: " + jac["error"][:90], transform=ax.transAxes, fontsize=6, va="top")
        if key == "product" and span:
            lo, hi = min(span), max(span)
            pad = 0.1 * max(hi - lo, 1e-3)
            ax.set_xlim(lo - pad, hi + pad)
        ax.set_xlabel("squared singular value" if key == "one_step" else "log10 squared singular value")
        ax.set_ylabel("density" if key == "one_step" else "density of log10")
        ax.set_title(title, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not computed (theory.spectrum.product=true,\nor theory.simulate=true)",
                    transform=ax.transAxes, ha="center", va="center", fontsize=8, color="grey")
    fig.suptitle("Jacobian spectra at stationarity (R = %g): %s" % (res["stationary"]["R"], _setting(res)), fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name
