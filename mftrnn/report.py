"""Reporting: read run dirs (metrics.jsonl, summary.json) and draw learning curves."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Optional

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402


CELL_COLORS = {"lstm": "tab:blue", "gru": "tab:orange"}


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
        style = {"color": CELL_COLORS.get(cell), "ls": "-" if init not in ("standard", "pytorch") else "--"}
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


def summary_table(run_dirs: list[Path]) -> str:
    """A Markdown table of the final metrics of each run."""
    rows = ["| run | steps | val acc | test acc | diverged |", "| --- | ---: | ---: | ---: | --- |"]
    for run_dir in run_dirs:
        s, _ = read_run(run_dir)
        fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        rows.append(f"| {s.get('cell', '?')} / {s.get('init', '?')} | {s.get('steps', '-')} | "
                    f"{fmt(s.get('val_acc'))} | {fmt(s.get('test_acc'))} | {s.get('diverged', '-')} |")
    return "\n".join(rows)
