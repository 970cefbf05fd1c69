"""`mftrnn critical`: solve the critical initialization for a cell and a task, check it, write it.

A thin app (docs/theory.md §10): the task gives its length, informative steps, input statistics and pairs
of its examples (mftrnn.inits.task_shape), mftrnn.theory.critical chooses the drive (§10.8), solves and
predicts, the tied population solver checks the solution on two real examples of the task when T <=
verify.max_steps. Writes into the run dir critical.json (the solution, the drive and why, the predictions,
the check), drive.png (the predicted separation over the drive) and init/<name>.yaml, a preset that
`mftrnn train --config-dir <run dir> init=<name>` accepts (an init=meanfield config).
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mftrnn.errors import run_or_exit
from mftrnn.inits import solve_critical, task_shape
from mftrnn.schema import CriticalConfig, register_configs, to_objects

log = logging.getLogger(__name__)
register_configs()
SOLUTION_NAME = "critical.json"


def verify(conf: CriticalConfig, solution) -> dict:
    """The tied and untied theories on two real test examples of the task (eq. (T29)): the distance
    of the two final states relative to the split's, and the memory horizon."""
    from mftrnn.theory import inputs
    from mftrnn.theory.trajectories import memory_of

    two = inputs.task_examples(conf.task, conf.data, list(conf.verify.examples), conf.seed)
    hp = solution.hyper()
    out = {"inputs": {k: two.info[k] for k in ("task", "examples", "labels", "steps", "split")}}
    for theory in ("tied", "untied"):
        if theory == "tied" and hp.phase_limited:
            # the tied population solver draws Gaussian weights (docs/theory.md §7.8): it cannot describe
            # phase-limited ones, whose prediction is the linearized one (§10.6)
            out[theory] = {"skipped": "phase-limited recurrent weights: the linearized tied theory applies"}
            continue
        out[theory] = memory_of(hp, two, theory, conf.verify.eps, conf.verify.population, conf.seed)[1]
    return out


def preset_yaml(solution, name: str) -> str:
    """An init-group option file: init=meanfield with the solution's hyperparameters."""
    lines = [f"# Critical initialization solved by `mftrnn critical` ({solution.spec.cell}, T = {solution.spec.steps},",
             f"# R_op = {solution.spec.R_op:.4g}, criterion {solution.spec.criterion}, isometry {solution.spec.isometry}).",
             f"# Use: mftrnn train --config-dir <this run dir> init={name}",
             f"defaults: [/schema/init/meanfield@_here_, /schema/gates/{solution.spec.cell}@gates, _self_]",
             f"recurrent: {'orthogonal' if solution.orthogonal else 'gaussian'}",
             *([f"phase: {solution.phase:.9g}"] if solution.phase < math.pi else []),
             "gates:"]
    lines += [f"  {k}: {{" + ", ".join(f"{a}: {v:.9g}" for a, v in g.items()) + "}" for k, g in solution.gates.items()]
    return "\n".join(lines) + "\n"


def run_critical(cfg: DictConfig, out_dir: Path) -> dict:
    conf = to_objects(cfg)
    from mftrnn.data import load_splits
    from mftrnn.tasks import build_task

    t0 = time.perf_counter()
    task = build_task(conf.task)
    splits = load_splits(task.dataset, conf.data)
    task.fit(splits)
    shape = task_shape(task, splits, conf.init)
    solution, cached = solve_critical(conf.cell.kind.value, conf.init, shape)
    res = {"command": "critical", **solution.as_dict(), "cached": cached, "solve_seconds": time.perf_counter() - t0}
    steps = solution.spec.steps
    if conf.verify.enabled and steps <= conf.verify.max_steps:
        res["verify"] = verify(conf, solution)
    else:
        res["verify"] = {"skipped": f"T = {steps} > verify.max_steps = {conf.verify.max_steps}: the linearized "
                                    "tied theory alone (docs/theory.md §10.3)" if conf.verify.enabled else "verify.enabled=false"}
    res["seconds"] = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SOLUTION_NAME).write_text(json.dumps(res, indent=1, default=float))
    name = f"critical_{conf.cell.kind.value}_T{steps}"
    (out_dir / "init").mkdir(exist_ok=True)
    (out_dir / "init" / f"{name}.yaml").write_text(preset_yaml(solution, name))
    if solution.drive.get("curve"):
        from mftrnn.report import plot_drive

        plot_drive(res, out_dir / "drive.png")
    _print(res, out_dir, name)
    return res


def drive_lines(res: dict) -> list[str]:
    """The drive: its value, where it comes from, the predicted separation and the reason (§10.8)."""
    d, write = res["drive"], res["predictions"].get("write")
    sep = "" if not write else (f"; predicted 1 - C/Q of two examples' last states {write['one_minus_c_end']:.3f} "
                                f"({write['pairs']} pairs of training examples)")
    lines = [f"  drive: gates' input scale {d['gates']:g}, candidate's {d['candidate']:g} ({d['source']}){sep}"]
    if d.get("reason"):
        lines.append(f"    why: {d['reason']['why']}")
        curve = d["curve"]
        lines.append("    1 - C/Q at T over the drive: " + ", ".join(
            f"{n:g}: {'-' if v is None else f'{v:.3f}'}" for n, v in zip(curve["nu"], curve["one_minus_c_end"])))
        if d["reason"].get("no_family"):
            lines.append(f"    no critical family at drives {', '.join(f'{float(n):g}' for n in d['reason']['no_family'])} "
                         "(the gates' mean keep and write cannot hold radius 1 there, eq. (T40))")
    return lines


def _print(res: dict, out_dir: Path, name: str) -> None:
    p, spec = res["predictions"], res["spec"]
    tied, untied, op = p["tied_linear"], p["untied"], p["operating_point"]
    gates = "  ".join(f"{k}: mu {g['mu']:.4g} sigma {g['sigma']:.4g} nu {g['nu']:.3g}" for k, g in res["gates"].items())
    hz = lambda v: "> T" if v is None else f"{v:.0f}"  # noqa: E731
    angles = "" if res["phase"] >= math.pi else f" with eigen-angles |theta| < {res['phase']:.4f}"
    write = f", write T(1 - f) = {spec['write']:g}" if spec["isometry"] == "phase" else ""
    lines = [
        f"critical init for {spec['cell']}, T = {spec['steps']} (informative steps {spec['content_steps']}, "
        f"R_op = {spec['R_op']:.4g}), criterion {spec['criterion']}, {res['recurrent']} recurrent"
        f"{angles} (isometry {spec['isometry']}{write}, {'cached' if res['cached'] else 'solved'} in {res['solve_seconds']:.2f} s)",
        f"  {gates}",
        f"  operating point: keep {op['keep']:.6f}, write {op['write']:.3g}, open {op['open']:.3f}, tied radius {tied['radius']:.6f}",
        f"  tied (linearized): log10 rms gain over T {tied['log10_rms_gain']:+.3f}; log10 singular values "
        f"{tied['log10_singular_mean']:+.2f} +- {tied['log10_singular_std']:.2f} (smallest "
        f"{tied['log10_min_singular']:+.2f}); horizon {hz(tied['horizon'])}",
        f"  untied: m1 {untied['m1']:.6f} (m1^T = 10^{untied['log10_m1_power_T']:.2f}), xi_C {untied['xi_c']:.4g}, "
        f"Q* {untied['Q_h']:.3g}; unsaturated: {p['unsaturated']}",
        *drive_lines(res),
    ]
    v = res["verify"]
    if "tied" in v:
        for th in ("tied", "untied"):
            m = v[th]
            if "skipped" in m:
                lines.append(f"  check on test examples ({th}): skipped, {m['skipped']}")
                continue
            lines.append(f"  check on test examples {v['inputs']['examples']} ({th}, {m['method']}, {m['seconds']:.1f} s): "
                         f"horizon {hz(m['horizon'])}, distance at the end / at the split "
                         f"{m.get('distance_ratio_at_end', float('nan')):.3g}")
    else:
        lines.append(f"  check: {v['skipped']}")
    plot = ", drive.png" if (out_dir / "drive.png").exists() else ""
    lines += [f"  as overrides: {' '.join(res['overrides'])}",
              f"  wrote {out_dir / SOLUTION_NAME}{plot} and the preset {out_dir / 'init' / (name + '.yaml')} "
              f"(mftrnn train --config-dir {out_dir} init={name})"]
    print("\n".join(lines))


@hydra.main(version_base="1.3", config_path="pkg://mftrnn.conf", config_name="critical")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    run_or_exit("critical", run_critical, cfg, out_dir)
