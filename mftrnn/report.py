"""Reporting: read run dirs (metrics.jsonl, summary.json) and draw the figures and tables of
`mftrnn report` (learning curves, accuracy against sequence length, trainability heat maps with the
theory's contours, the generalization table). W&B is not needed: everything comes from the run dirs.

Runs are labelled by what tells them apart: the config keys whose values differ between the runs
(seeds aside); the runs that differ only in their seed are one group, drawn as a mean with a band.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from pathlib import Path
from typing import Iterable, Optional

from mftrnn.schema import VOLATILE_KEYS, flatten, under

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402


# one colour per init in every figure of a report, and one line style per cell
INIT_COLORS = {"critical": "tab:red", "chrono": "tab:green", "standard": "tab:blue", "pytorch": "tab:gray",
               "meanfield": "tab:purple"}
CELL_STYLES = {"lstm": "-", "gru": "--"}


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _style(i: int, run: "Run", keys: list[str], j: int = 0) -> dict:
    """Line colour, style and marker of a group: colour by init, line style by cell where those are
    among what differs; then the marker tells apart the j-th combination of the other keys (task.permute,
    task.name, ...). Without init among the keys, colour by the group's index."""
    init, cell = run.config.get("init.scheme"), run.config.get("cell.kind")
    ls = CELL_STYLES.get(cell, "-") if "cell.kind" in keys else "-"
    if "init.scheme" in keys and init in INIT_COLORS:
        return {"color": INIT_COLORS[init], "ls": ls, "marker": MARKERS[j % len(MARKERS)]}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {"color": colors[i % len(colors)], "ls": ls, "marker": "o"}


def _others_index(grouped: dict[str, list["Run"]], keys: list[str]) -> dict[str, int]:
    """Group label -> index of its combination of the keys other than init and cell (for the marker)."""
    others = [k for k in keys if k not in ("init.scheme", "cell.kind")]
    combos = {name: tuple(str(m[0].config.get(k)) for k in others) for name, m in grouped.items()}
    order = {c: n for n, c in enumerate(sorted(set(combos.values())))}
    return {name: order[c] for name, c in combos.items()}


def _legend_outside(fig, ax) -> None:
    """One legend for the figure, right of the panels, so that it never hides a curve."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)


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


# Config keys that never tell runs apart in a label: the seed (runs differing only in it are one group)
# and the keys that change nothing a run computes.
UNLABELLED = ("seed",) + VOLATILE_KEYS
SHORT = {"cell.kind": "cell", "init.scheme": "init", "task.name": "task", "optim.name": "optim"}


def _flat(d: dict) -> dict:
    """The config flattened, lists as JSON text (hashable, for grouping)."""
    return {k: json.dumps(v) if isinstance(v, list) else v for k, v in flatten(d).items()}


@dataclass
class Run:
    """One run dir: its summary (empty when unfinished), metrics records and flattened config."""

    dir: Path
    summary: dict
    records: list[dict]
    config: dict = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))


def load_runs(roots: Iterable[Path]) -> list[Run]:
    """Every run dir under `roots` (metrics.jsonl), with the config of its summary.json or, for an
    unfinished run, of its .hydra/config.yaml."""
    runs = []
    for d in find_runs(roots):
        summary, records = read_run(d)
        config = summary.get("config")
        if config is None and (d / ".hydra" / "config.yaml").exists():
            from omegaconf import OmegaConf

            config = OmegaConf.to_container(OmegaConf.load(d / ".hydra" / "config.yaml"), resolve=False)
        runs.append(Run(d, summary, records, _effective(_flat(config or {}), summary)))
    return runs


def _effective(config: dict, summary: dict) -> dict:
    """init=critical as it ran: init.isometry resolved (auto, or absent before the key existed, becomes the
    family the solution used), and the settings that family leaves unused dropped, so that runs of one
    family are not told apart by them."""
    if config.get("init.scheme") != "critical" or not summary:
        return config
    from mftrnn.theory.critical import UNUSED_BY, recorded_isometry

    family = recorded_isometry(summary.get("init_solution"))
    config["init.isometry"] = family
    for key in UNUSED_BY[family]:
        config.pop(f"init.{key}", None)
    return config


# A config group's choice: the keys below a group (init.gates..., task.pad) differ between two choices
# only because the choices have different fields; such keys label runs only within one choice.
CHOICE = {"init": "init.scheme", "task": "task.name", "optim": "optim.name", "cell": "cell.kind"}


def differing(runs: list[Run]) -> list[str]:
    """The config keys whose values differ between the runs, seeds, volatile keys and keys that follow
    an earlier one aside, in a fixed order (task, cell, init first). A key of a config group counts
    where it differs between runs of the same choice of that group (init.gates.f.mu between meanfield
    runs, not between meanfield and chrono, which has no such key). A run whose config lacks a key (recorded
    before the key existed) does not differ in it."""
    keys = set().union(*(r.config for r in runs)) if runs else set()

    def varies(k: str) -> bool:
        choice = CHOICE.get(k.split(".")[0])
        if choice is None or choice == k:
            parts = [runs]
        else:
            by: dict = {}
            for r in runs:
                by.setdefault(str(r.config.get(choice)), []).append(r)
            parts = list(by.values())
        # only runs that hold the key: one recorded before the key existed does not differ by lacking it
        return any(len({json.dumps(r.config[k], sort_keys=True, default=str) for r in part if k in r.config}) > 1
                   for part in parts)

    out = [k for k in keys if not under(k, UNLABELLED) and varies(k)]
    first = ["task.name", "cell.kind", "init.scheme"]
    # a key that follows an earlier one (a preset's i.mu = -f.mu) tells no runs apart that it does not
    return independent(runs, [k for k in first if k in out] + sorted(k for k in out if k not in first))


def label(run: Run, keys: list[str]) -> str:
    """`cell=gru, init=chrono`: the run's values of `keys` (what tells it from the others); keys the
    run's config does not have, or holds as null (task.repeats of an MNIST task), are left out."""
    if not keys:
        return f"{run.config.get('cell.kind', '?')}, {run.config.get('init.scheme', '?')}"
    return ", ".join(f"{SHORT.get(k, k)}={run.config[k]}" for k in keys if run.config.get(k) is not None)


def groups(runs: list[Run], keys: Optional[list[str]] = None) -> dict[str, list[Run]]:
    """Runs by label (runs differing only in their seed share one), in a stable order."""
    keys = differing(runs) if keys is None else keys
    out: dict[str, list[Run]] = {}
    for r in sorted(runs, key=lambda r: (label(r, keys), r.seed)):
        out.setdefault(label(r, keys), []).append(r)
    return out


def _curve(runs: list[Run], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, low, high) over the runs (seeds) at the steps every run logged `metric`."""
    per = [{int(r["step"]): r[metric] for r in run.records if r.get(metric) is not None} for run in runs]
    steps = sorted(set.intersection(*(set(p) for p in per))) if per else []
    vals = np.array([[p[s] for s in steps] for p in per], float).reshape(len(per), len(steps))
    return np.array(steps), vals.mean(0), vals.min(0), vals.max(0)


def plot_learning(runs: list[Run], out: Path, metrics: tuple[str, ...] = ("val/acc",), title: str = "",
                  chance: Optional[float] = 0.1) -> Path:
    """One panel per metric: a line per group (mean over seeds) with a band (min .. max over seeds);
    legends name what differs between the groups and how many seeds each has."""
    keys = differing(runs)
    grouped = groups(runs, keys)
    marker = _others_index(grouped, keys)
    fig, axes = plt.subplots(1, len(metrics), figsize=(6.4 * len(metrics), 4.4), dpi=120, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, (name, members) in enumerate(grouped.items()):
            steps, mean, lo, hi = _curve(members, metric)
            if not len(steps):
                continue
            style = _style(i, members[0], keys, marker[name])
            seeds = f" ({len(members)} seeds)" if len(members) > 1 else ""
            ax.plot(steps, mean, ms=3, label=name + seeds, **style)
            if len(members) > 1:
                ax.fill_between(steps, lo, hi, color=style["color"], alpha=0.15, lw=0)
        if chance is not None and metric.endswith("acc"):
            ax.axhline(chance, color="grey", lw=0.8, ls="--", label="chance")
        ax.set_xlabel("training step (optimizer updates)")
        ax.set_ylabel(metric.replace("/", " ").replace("acc", "accuracy (fraction)"))
        ax.grid(alpha=0.3)
    _legend_outside(fig, axes[0][0])
    fig.suptitle(title or "learning curves", fontsize=10)
    return _save_fig(fig, out)


def plot_accuracy_vs_length(runs: list[Run], out: Path, metric: str = "test_acc", title: str = "") -> Path:
    """Trainability against sequence length: `metric` of each group's final model against T (the
    task's total length), mean over seeds with min .. max bars; a line per group of the other keys."""
    keys = [k for k in differing(runs) if not k.startswith("task.pad")]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    grouped = groups(runs, keys)
    marker = _others_index(grouped, keys)
    for i, (name, members) in enumerate(grouped.items()):
        by_t: dict[int, list[float]] = {}
        for r in members:
            if r.summary.get(metric) is not None or r.summary.get("diverged"):
                by_t.setdefault(int(r.summary["seq_len"]), []).append(r.summary.get(metric) or 0.1)
        if not by_t:
            continue
        ts = sorted(by_t)
        mean = np.array([np.mean(by_t[t]) for t in ts])
        err = np.array([[mean[j] - min(by_t[t]), max(by_t[t]) - mean[j]] for j, t in enumerate(ts)]).T
        style = _style(i, members[0], keys, marker[name])
        ax.plot(ts, mean, ms=4, label=name, **style)
        ax.errorbar(ts, mean, yerr=err, fmt="none", ecolor=style["color"], capsize=3)
    ax.axhline(0.1, color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("sequence length T (steps)")
    ax.set_ylabel(metric.replace("_", " ").replace("acc", "accuracy (fraction)"))
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3, which="both")
    _legend_outside(fig, ax)
    ax.set_title(title or "trainability against sequence length", fontsize=10)
    return _save_fig(fig, out)


def generalization_table(runs: list[Run]) -> str:
    """Markdown: for every group (task x cell x init x what else differs), final test accuracy as mean
    ± std over seeds, train accuracy and the gap, the steps to 50 % and 90 % validation accuracy (mean
    over seeds), and how many seeds and diverged runs."""
    rows = ["| runs | seeds | test acc (mean ± std) | train acc | train − test | steps to 50 % / 90 % val | diverged |",
            "| --- | ---: | --- | --- | ---: | --- | ---: |"]
    for name, members in groups(runs).items():
        done = [r for r in members if r.summary.get("test_acc") is not None]
        div = sum(bool(r.summary.get("diverged")) for r in members)
        if not done:
            rows.append(f"| {name} | {len(members)} | - | - | - | - | {div} |")
            continue
        te = np.array([r.summary["test_acc"] for r in done])
        tr = np.array([r.summary["train_acc"] for r in done])
        std = f" ± {100 * te.std(ddof=1):.1f}" if len(te) > 1 else ""
        rows.append(f"| {name} | {len(members)} | {100 * te.mean():.1f} %{std} | {100 * tr.mean():.1f} % | "
                    f"{100 * (tr.mean() - te.mean()):.1f} | {_steps_to_mean(done, 0.5)} / {_steps_to_mean(done, 0.9)} | "
                    f"{div} |")
    return "\n".join(rows)


def _steps_to_mean(runs: list[Run], level: float) -> str:
    """Mean over seeds of the first evaluated step with validation accuracy >= level ('-': a seed never
    got there)."""
    steps = [steps_to(r.records, level) for r in runs]
    return "-" if any(s is None for s in steps) else f"{np.mean(steps):,.0f}"


def _save_fig(fig, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")  # a legend outside the axes is kept
    plt.close(fig)
    return out


def steps_to(records: list[dict], level: float, metric: str = "val/acc") -> Optional[int]:
    """The first logged step at which `metric` reached `level` (None: never)."""
    for r in records:
        if r.get(metric) is not None and r[metric] >= level:
            return int(r["step"])
    return None


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
    fig.savefig(out, bbox_inches="tight")  # a legend outside the axes is kept
    plt.close(fig)
    return out


def plot_drive(res: dict, out: Path) -> Path:
    """drive.png (`mftrnn critical`): the theory of the write's D_T = 1 - C/Q of the last states of pairs of
    the task's examples (eq. (T38)) against the gates' input scale, at the end of the informative steps and
    at T, with the rule's levels and the chosen drive (docs/theory.md §10.8)."""
    d = res["drive"]
    curve = d["curve"]
    nu = np.asarray(curve["nu"], float)
    fig, ax = plt.subplots(figsize=(5.6, 3.8), dpi=120)
    for key, style, name in (("one_minus_c_split", ":", "after the informative steps"), ("one_minus_c_end", "-", "at T")):
        y = np.array([np.nan if v is None else v for v in curve[key]], float)
        ax.semilogx(nu, y, style, marker="o", ms=3, color="tab:blue", label=f"1 - C/Q {name}")
    why = d["reason"]
    for level, name in ((why["D_lo"], "quietest"), (why["D_hi"], "largest")):
        ax.axhline(level, color="0.6", lw=0.8, ls="--")
        ax.annotate(name, (nu[0], level), fontsize=7, color="0.4", va="bottom")
    ax.axvline(d["gates"], color="tab:red", lw=1, label=f"chosen: {d['gates']:g}")
    spec = res["spec"]
    ax.set_title(f"{spec['cell']}, T = {spec['steps']}: the drive the theory of the write chooses", fontsize=9)
    ax.set_xlabel("gates' input scale nu")
    ax.set_ylabel("1 - C/Q of two examples' states")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save_fig(fig, out)


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


# ----------------------------------------------------------------------------- trainability heat maps
def follows(runs: list[Run], key: str, other: str) -> bool:
    """Every value of `other` among the runs comes with one value of `key`: key is a function of other."""
    per: dict = {}
    for r in runs:
        per.setdefault(json.dumps(r.config.get(other)), set()).add(json.dumps(r.config.get(key)))
    return all(len(v) == 1 for v in per.values())


def independent(runs: list[Run], keys: list[str]) -> list[str]:
    """`keys` without those that follow an earlier kept one (a preset's linked key, i.mu = -f.mu)."""
    kept: list[str] = []
    for k in keys:
        if not any(follows(runs, k, j) for j in kept):
            kept.append(k)
    return kept


def linked_keys(runs: list[Run], x_key: str, y_key: str, xs: list[float], ys: list[float]) -> tuple:
    """Gate hyperparameters that differ between the runs of a heat map and follow one of its axes (the
    LSTM preset's i.mu = -f.mu), as (key, "x" or "y", value at each point of the axis), so that the
    theory's grid moves them as the runs did."""
    out = []
    for key in sorted(k for k in runs[0].config if k.startswith("init.gates.") and k not in (x_key, y_key)):
        if len({json.dumps(r.config.get(key)) for r in runs}) < 2:
            continue
        for axis, axis_key, values in (("x", x_key, xs), ("y", y_key, ys)):
            if follows(runs, key, axis_key):
                at = {float(r.config[axis_key]): float(r.config[key]) for r in runs}
                out.append((key, axis, np.array([at[v] for v in values])))
                break
    return tuple(out)


def run_config(run: Run):
    """The run's config as objects (mftrnn.schema), composed again from its .hydra/overrides.yaml, as
    the command line composed it; its init section as the run recorded it (summary.json), so that a
    preset changed since then does not change what the theory is computed for."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    import mftrnn.train  # noqa: F401  registers the schemas and resolvers the composition needs
    from mftrnn.schema import to_objects

    text = (run.dir / ".hydra" / "overrides.yaml").read_text()
    overrides = [ln[2:].strip() for ln in text.splitlines() if ln.startswith("- ")]
    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    recorded = (run.summary.get("config") or {}).get("init")
    if recorded:
        cfg = OmegaConf.merge(cfg, {"init": recorded})
    return to_objects(cfg)


def fit_c(trainable: np.ndarray, xi_c: np.ndarray, T: int) -> tuple[float, float]:
    """The c of the untied criterion 'trainable where c * xi_C >= T' that puts the most runs on their
    correct side; (c, fraction correct). Candidates: just below and above every point's T / xi_C, and
    beyond both ends; ties go to the smallest c. (nan, nan) without runs."""
    trainable, xi_c = np.asarray(trainable, bool).ravel(), np.asarray(xi_c, float).ravel()
    if not trainable.size:
        return float("nan"), float("nan")
    finite = xi_c[np.isfinite(xi_c) & (xi_c > 0)]
    edges = T / finite if finite.size else np.array([1.0])
    cands = np.unique(np.concatenate([edges * 0.999, edges * 1.001, [edges.min() / 10, edges.max() * 10]]))
    best = (float("nan"), -1.0)
    for c in cands:
        frac = float(np.mean((c * xi_c >= T) == trainable))
        if frac > best[1]:
            best = (float(c), frac)
    return best


def trainability_map(runs: list[Run], x_key: str, y_key: str, out: Path, threshold: float = 0.5,
                     metric: str = "test_acc", tied: bool = True, population: int = 500, title: str = "") -> dict:
    """The paper's trainability heat map: `metric` (mean over seeds) over the 2-D slice (x_key, y_key) of
    init=meanfield hyperparameters, with the theories' contours: the untied T = c * xi_C with the fitted c
    (fit_c), and the tied theory's memory horizon = T (docs/theory.md §7, from two test examples of the
    task, `population` units per point). Returns the grid, c, and the fraction of runs on the correct
    side of each contour (trainable: metric >= threshold)."""
    from mftrnn.theory import inputs as theory_inputs
    from mftrnn.theory.grid import compute_grid, horizon_grid
    from mftrnn.theory.hyper import for_config

    xs = sorted({float(r.config[x_key]) for r in runs})
    ys = sorted({float(r.config[y_key]) for r in runs})
    acc = np.full((len(ys), len(xs)), np.nan)
    cells: dict = {}
    for r in runs:
        value = r.summary.get(metric)
        if value is None and r.summary.get("diverged"):
            value = 0.1  # a diverged run did not train: chance
        if value is not None:
            cells.setdefault((ys.index(float(r.config[y_key])), xs.index(float(r.config[x_key]))), []).append(value)
    for (i, j), v in cells.items():
        acc[i, j] = np.mean(v)
    conf = run_config(runs[0])
    hp = for_config(conf)
    T = int(runs[0].summary.get("seq_len") or runs[0].config.get("task.pad", 0) + 28)
    inp = theory_inputs.task_examples(conf.task, conf.data, [0, 1])
    linked = linked_keys(runs, x_key, y_key, xs, ys)
    grid = compute_grid(hp, inp.R, (x_key, np.array(xs)), (y_key, np.array(ys)), linked)
    trainable = acc >= threshold
    known = np.isfinite(acc)
    c, frac_untied = fit_c(trainable[known], grid["xi_C"][known], T)
    res = {"x_key": x_key, "y_key": y_key, "x": xs, "y": ys, "accuracy": acc.tolist(), "T": T,
           "threshold": threshold, "metric": metric, "c": c, "fraction_correct_untied": frac_untied,
           "runs": int(known.sum()), "linked": {key: f"with {axis}" for key, axis, _ in linked}}
    horizon = None
    if tied:
        hz = horizon_grid(hp, inp.R, (x_key, np.array(xs)), (y_key, np.array(ys)), inp.features(), inp.split, 1e-2,
                          with_tied=True, population=population, seed=conf.seed, linked=linked)
        horizon = hz["horizon_tied"]  # NaN: longer than the sequence after the split
        predicted = np.isnan(horizon) | (horizon >= T - inp.split)
        res["fraction_correct_tied"] = float(np.mean(predicted[known] == trainable[known]))
        res["population"] = population
    _plot_map(acc, grid["xi_C"], horizon, xs, ys, res, out, title, T - inp.split)
    return res


def _plot_map(acc, xi_c, horizon, xs, ys, res: dict, out: Path, title: str, after_split: int) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    mesh = ax.pcolormesh(xs, ys, acc, shading="nearest", cmap="viridis", vmin=0.1, vmax=1.0)
    fig.colorbar(mesh, ax=ax, label=f"{res['metric'].replace('_', ' ')} (mean over seeds)")
    handles = []
    T, c = res["T"], res["c"]
    if len(xs) > 1 and len(ys) > 1:
        if np.isfinite(c):
            z = np.log10(np.clip(np.where(np.isfinite(xi_c), xi_c, 1e12), 1e-6, None))
            level = np.log10(T / c)
            if z.min() < level < z.max():
                ax.contour(xs, ys, z, levels=[level], colors="tab:red", linestyles="--")
            handles.append(plt.Line2D([], [], color="tab:red", ls="--", label=f"untied: {c:.3g} xi_C = T "
                                      f"({100 * res['fraction_correct_untied']:.0f} % of grid points on the correct side)"))
        if horizon is not None:
            zh = np.where(np.isnan(horizon), 10.0 * after_split, horizon)
            if zh.min() < after_split - 0.5 < zh.max():
                ax.contour(xs, ys, zh, levels=[after_split - 0.5], colors="white", linestyles="-")
            handles.append(plt.Line2D([], [], color="white", ls="-", label=f"tied: memory horizon = T "
                                      f"({100 * res['fraction_correct_tied']:.0f} % correct)"))
    if handles:
        leg = ax.legend(handles=handles, loc="upper left", fontsize=7, framealpha=0.7)
        leg.get_frame().set_facecolor("lightgrey")
    moving = {a: [k.split(".", 2)[-1] for k, v in res.get("linked", {}).items() if v == f"with {a}"] for a in "xy"}
    ax.set_xlabel(res["x_key"] + (f" ({', '.join(moving['x'])} moves with it)" if moving["x"] else ""))
    ax.set_ylabel(res["y_key"] + (f" ({', '.join(moving['y'])} moves with it)" if moving["y"] else ""))
    ax.set_title(title or f"trainability at T = {T} (trainable: {res['metric']} >= {res['threshold']:g})",
                 fontsize=9)
    _save_fig(fig, out)
