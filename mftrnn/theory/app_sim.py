"""`mftrnn theory theory.simulate=true`: simulated networks beside the theory, and the plots."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from mftrnn.schema import GateHP, TheoryConfig
from mftrnn.theory.closed import Hyper

log = logging.getLogger(__name__)


def simulate_all(hp: Hyper, conf: TheoryConfig, theory: dict, device: str, out_dir: Path, inputs=None) -> dict:
    """Tied and untied networks of width theory.width, theory.seeds seeds each: the two-sequence
    trajectories (mean over seeds) and the Jacobian spectra (first seed). `inputs` (T, 2, n_in): the
    two task sequences of theory/input=task (else the scenario's)."""
    from mftrnn.theory.simulate import jacobian_spectra, simulate_trajectory

    th = conf.theory
    gates = {k: GateHP(mu=float(g.mu), rho=float(g.rho), sigma=float(g.sigma), nu=float(g.nu)) for k, g in hp.gates.items()}
    recurrent = "orthogonal" if hp.orthogonal else "gaussian"
    out: dict = {"width": th.width, "seeds": th.seeds}
    for tied in (True, False):
        name = "tied" if tied else "untied"
        runs = [simulate_trajectory(hp.cell, gates, recurrent, th.width, th.steps, th.split, th.input.R,
                                    tied=tied, seed=conf.seed + s, device=device, inputs=inputs)
                for s in range(th.seeds)]
        q = np.mean([r.q_h_a for r in runs], axis=0)
        qb = np.mean([r.q_h_b for r in runs], axis=0)
        c = np.mean([r.c_h for r in runs], axis=0)
        per_seed_omc = [1 - r.c_h / np.sqrt(np.maximum(r.q_h_a * r.q_h_b, 1e-300)) for r in runs]
        entry = {"Q_h": q, "Q_h_b": qb, "C_h": c, "one_minus_c": np.mean(per_seed_omc, axis=0),
                 "one_minus_c_per_seed": [list(map(float, x)) for x in per_seed_omc]}
        if runs[0].q_s_a is not None:
            entry["Q_s"] = np.mean([r.q_s_a for r in runs], axis=0)
        try:
            spec = jacobian_spectra(hp.cell, gates, recurrent, th.width, th.input.R,
                                    product_steps=th.spectrum.product_steps, tied=tied, seed=conf.seed, device=device)
            entry["jacobian"] = {"m1": spec.m1, "m2": spec.m2, "one_step": np.sort(spec.one_step),
                                 "product": np.sort(spec.product)}
        except NotImplementedError as exc:
            entry["jacobian"] = {"note": str(exc)}
        out[name] = entry
        log.info("simulated %s %s networks (width %d, %d seeds)", name, hp.cell, th.width, th.seeds)
    plot_trajectories(theory, out, out_dir / "trajectories.png")
    plot_spectra(theory, out, out_dir / "spectrum.png")
    return out


def plot_trajectories(theory: dict, sim: dict, path: Path) -> None:
    """Q_h^t and 1 - C/Q over t: theory (line) against tied and untied networks (markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = theory["trajectory"]
    t = np.asarray(tr["t"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    label = f"{theory['weights']} theory" + (f" ({theory['method']})" if theory['weights'] == "untied" else "")
    ax1.plot(t, tr["Q_h"], "k-", label=label)
    omc = np.asarray(tr["one_minus_c"], float)
    ax2.semilogy(t, np.clip(omc, 1e-16, None), "k-", label=label)
    if "trajectory_untied" in theory:  # theory.weights=tied: the paper's theory beside it
        tu = theory["trajectory_untied"]
        ax1.plot(t, tu["Q_h"], "k:", label="untied theory")
        ax2.semilogy(t, np.clip(np.asarray(tu["one_minus_c"], float), 1e-16, None), "k:", label="untied theory")
    for name, style in (("untied", "o"), ("tied", "x")):
        if name in sim:
            ax1.plot(t, sim[name]["Q_h"], style, ms=3, label=f"{name} net (n={sim['width']})")
            ax2.semilogy(t, np.clip(np.asarray(sim[name]["one_minus_c"], float), 1e-16, None), style, ms=3, label=name)
    for ax in (ax1, ax2):
        ax.axvline(tr["split"], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("step t")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_ylabel("Q_h")
    ax2.set_ylabel("1 - C_h / Q_h")
    fig.suptitle(f"{theory['cell']}: two sequences, identical after t = {tr['split']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_spectra(theory: dict, sim: dict, path: Path) -> None:
    """Density of squared singular values of the one-step Jacobian: theory vs histograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for ax, key, title in ((axes[0], "one_step", "one step"), (axes[1], "product", "product of T steps")):
        dens = theory["jacobian"].get(f"density_{key}", {})
        for name, color in (("untied", "tab:blue"), ("tied", "tab:orange")):
            vals = sim.get(name, {}).get("jacobian", {}).get(key)
            if vals is not None and len(vals):
                v = np.asarray(vals, float)
                if key == "product":
                    v = np.log10(np.clip(v, 1e-300, None))
                ax.hist(v, bins=60, density=True, alpha=0.45, color=color, label=f"{name} net")
        if "rho" in dens:
            lam, rho = np.asarray(dens["lambda"], float), np.asarray(dens["rho"], float)
            if key == "product":  # density of log10(lambda): rho(lambda) lambda ln 10
                ax.plot(np.log10(lam), rho * lam * np.log(10), "k-", label="theory")
            else:
                ax.plot(lam, rho, "k-", label="theory")
        elif "note" in dens:
            ax.text(0.02, 0.95, "theory: " + dens["note"][:80], transform=ax.transAxes, fontsize=6, va="top")
        if key == "one_step" and "rho" in dens:  # show the support, not the whole lambda grid
            rho = np.asarray(dens["rho"], float)
            lam = np.asarray(dens["lambda"], float)
            ax.set_xlim(0, 1.1 * lam[rho > 1e-3 * rho.max()].max())
        ax.set_xlabel("squared singular value" if key == "one_step" else "log10 squared singular value")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
