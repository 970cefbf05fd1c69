"""Reporting: read run dirs (metrics.jsonl, summary.json) and draw learning curves."""
from __future__ import annotations

import json

import numpy as np
from pathlib import Path
from typing import Iterable, Optional

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402


CELL_COLORS = {"lstm": "tab:blue", "gru": "tab:orange"}
INIT_STYLES = {"critical": "-", "chrono": "-.", "meanfield": "--", "standard": ":", "pytorch": ":"}


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(summary, metrics records) of one run dir; summary is {} for an unfinished run."""
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return summary, records


def find_runs(roots: Iterable[Path]) -> list[Path]:
    """Every run dir (a folder with metrics.jsonl) under the given folders, sorted."""
    found = set()
    for root in roots:
        found |= {p.parent for p in Path(root).rglob("metrics.jsonl")}
    return sorted(found)


def plot_curves(run_dirs: list[Path], out: Path, metric: str = "val/acc", title: Optional[str] = None,
                chance: Optional[float] = 0.1) -> Path:
    """One line per run: `metric` against training step; the label names cell and init."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for run_dir in run_dirs:
        summary, records = read_run(run_dir)
        pts = [(r["step"], r[metric]) for r in records if r.get(metric) is not None]
        if not pts:
            continue
        cell, init = summary.get("cell", "?"), summary.get("init", "?")
        label = f"{cell.upper()}, {init} init" if summary else run_dir.name
        style = {"color": CELL_COLORS.get(cell), "ls": INIT_STYLES.get(init, "-")}
        ax.plot(*zip(*pts), marker="o", ms=3, label=label, **style)
    if chance is not None:
        ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric.replace("/", " "))
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def steps_to(records: list[dict], level: float, metric: str = "val/acc") -> Optional[int]:
    """The first logged step at which `metric` reached `level` (None: never)."""
    for r in records:
        if r.get(metric) is not None and r[metric] >= level:
            return int(r["step"])
    return None


def summary_table(run_dirs: list[Path]) -> str:
    """A Markdown table of each run: steps to 50 % and 90 % validation accuracy, final metrics."""
    rows = ["| run | steps | to 50 % val | to 90 % val | val acc | test acc | diverged |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for run_dir in run_dirs:
        s, records = read_run(run_dir)
        fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        to = lambda lv: "-" if steps_to(records, lv) is None else str(steps_to(records, lv))  # noqa: E731
        rows.append(f"| {s.get('cell', '?')} / {s.get('init', '?')} | {s.get('steps', '-')} | {to(0.5)} | {to(0.9)} | "
                    f"{fmt(s.get('val_acc'))} | {fmt(s.get('test_acc'))} | {s.get('diverged', '-')} |")
    return "\n".join(rows)


def plot_diagnose(res: dict, out: Path) -> Path:
    """diagnose.png: the network's gain curve log10 |delta h_t| / |delta s_start| (mean +- std over
    sequences) and its pairs' distance ratio d_t / d_split, beside the theories' distance-based
    curves (sqrt of the ratio for the gain; untied m_1^(t/2) too)."""
    net, th = res["network"], res.get("theory") or {}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    c = net["curves"]
    t = np.arange(len(c["log10_gain_mean"]))
    mean, std = np.asarray(c["log10_gain_mean"]), np.asarray(c["log10_gain_std"])
    ax1.plot(t, mean, color="k", label=f"network (hidden {res['hidden']})")
    ax1.fill_between(t, mean - std, mean + std, color="k", alpha=0.15, lw=0)
    if "untied_m1" in th:
        ax1.plot(t, 0.5 * t * np.log10(max(th["untied_m1"], 1e-300)), color="tab:red", ls=":", label="untied m1^(t/2)")
    for name, color in (("untied", "tab:red"), ("tied", "tab:blue")):
        curve = (th.get(name) or {}).get("distance_ratio_curve")
        if curve:
            r = np.asarray(curve, float)
            ax1.plot(np.arange(len(r)), 0.5 * np.log10(np.maximum(r, 1e-300)), color=color, ls="--",
                     label=f"{name} theory, sqrt(d_t / d_start)")
    ax1.axhspan(-1, 1, color="tab:green", alpha=0.06, lw=0)
    ax1.set_xlabel("steps after the padding began" if net["start"] else "step")
    ax1.set_ylabel("log10 gain")
    ax1.set_ylim(max(ax1.get_ylim()[0], -12), min(ax1.get_ylim()[1], 12))
    ax1.legend(fontsize=7)
    ax1.grid(alpha=0.3)
    ratio = c.get("distance_ratio")
    if ratio:
        r = np.asarray(ratio, float)
        ax2.semilogy(np.arange(len(r)), np.maximum(r, 1e-300), color="k", label=f"network, {net['pairs']} pairs")
    for name, color in (("untied", "tab:red"), ("tied", "tab:blue")):
        th_t = th.get(name) or {}
        curve = th_t.get("distance_ratio_curve")
        if curve:
            ax2.semilogy(np.arange(len(curve)), np.maximum(np.asarray(curve, float), 1e-300), color=color, ls="--",
                         label=f"{name} theory (first pair)")
    ax2.axhline(net["eps"], color="grey", ls=":", lw=0.8, label=f"horizon level eps = {net['eps']}")
    ax2.set_xlabel("steps after the split")
    ax2.set_ylabel("distance d_t / d_split")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    what = f"checkpoint {Path(res['ckpt']).name}" if res.get("ckpt") else f"init={res['init']}"
    fig.suptitle(f"{res['cell'].upper()} {what}, {res['task']} T = {net['steps']}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def sweep_table(sweep_dir: Path) -> str:
    """A Markdown table of a sweep's runs: each run's dir (relative), the overrides that tell it from the
    other runs, its steps and final validation and test accuracy (or how it ended)."""
    runs = []
    for run_dir in sorted(p.parent.parent for p in Path(sweep_dir).rglob(".hydra/overrides.yaml")):
        text = (run_dir / ".hydra" / "overrides.yaml").read_text()
        runs.append((run_dir, [ln[2:].strip() for ln in text.splitlines() if ln.startswith("- ")]))
    common = set.intersection(*(set(o) for _, o in runs)) if len(runs) > 1 else set()
    rows = ["| run | overrides | steps | val acc | test acc |", "| --- | --- | ---: | ---: | ---: |"]
    fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    for run_dir, overrides in runs:
        summary = read_run(run_dir)[0] if (run_dir / "metrics.jsonl").exists() else {}
        if summary:
            steps, val, test = summary.get("steps", "-"), fmt(summary.get("val_acc")), fmt(summary.get("test_acc"))
        else:
            steps, val, test = "-", "failed" if (run_dir / "failed.txt").exists() else "unfinished", "-"
        key = " ".join(o for o in overrides if o not in common) or "-"
        rows.append(f"| {run_dir.relative_to(sweep_dir)} | {key} | {steps} | {val} | {test} |")
    return "\n".join(rows)


try:  # a Hydra callback (conf/train.yaml, hydra.callbacks): the table at the end of every sweep
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - Hydra is a dependency; this keeps report usable without it
    Callback = object


class SweepTable(Callback):
    """At the end of a sweep (-m), print its runs' table and write it to <sweep dir>/sweep.md."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        table = sweep_table(sweep_dir)
        (sweep_dir / "sweep.md").write_text(table + "\n")
        print(f"sweep {sweep_dir}:\n{table}", flush=True)
