"""`mftrnn diagnose`: a real network's Jacobians and memory on real examples, beside the theory.

A thin app (docs/theory.md §10.4): the network is built and initialized exactly as `mftrnn train` does
(same seed, same init code, init=critical solved the same way), or loaded from a checkpoint
(`ckpt=PATH`); mftrnn.diagnose measures it in float64; the theory (untied and tied two-sequence
trajectories of the same pair of examples, mftrnn.theory) is computed for the configured init.
Writes init.pt (the diagnosed state_dict, keys as `mftrnn train` writes them), diagnose.json and
diagnose.png into the run dir.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mftrnn.errors import ConfigError, run_or_exit
from mftrnn.schema import DiagnoseConfig, InitScheme, register_configs, to_objects
from mftrnn.seeding import pick_device, seed_everything

log = logging.getLogger(__name__)
register_configs()
RESULT_NAME = "diagnose.json"
TIED_FLOOR = 1e-11  # distance ratios below this are under the tied solver's jitter scale


def build_model(conf: DiagnoseConfig, task, splits):
    """The classifier as `mftrnn train` builds it (seed, then module, then init); with conf.ckpt, the
    checkpoint's weights. Returns (model, init info or None)."""
    from mftrnn import checkpoint
    from mftrnn.inits import initialize, task_shape
    from mftrnn.models import RNNClassifier

    seed_everything(conf.seed)
    model = RNNClassifier(conf.cell.kind, task.input_size, conf.model)
    info = initialize(model, conf.init, task_shape(task, splits, conf.init))
    if conf.ckpt:  # run_diagnose has checked that the file exists, before loading any data
        try:
            state = checkpoint.load(Path(conf.ckpt).expanduser())
        except Exception as exc:  # a damaged or foreign file: one line naming it
            raise ConfigError(f"ckpt={conf.ckpt}: cannot be read ({type(exc).__name__}: {exc})") from None
        weights = state.get("model", state) if isinstance(state, dict) else None
        try:
            model.load_state_dict(weights)
        except Exception as exc:
            raise ConfigError(f"ckpt={conf.ckpt} does not fit cell={conf.cell.kind.value} model.hidden="
                              f"{conf.model.hidden} on this task: {str(exc).splitlines()[0]}") from None
    return model, info


def theory_side(conf: DiagnoseConfig, model, task, pairs, info, start: int) -> dict:
    """The untied and tied theories for the configured init on the first pair: distance ratio at the
    end (eq. (T29)), horizon, 1 - C/Q at the end, the rms gain sqrt(d_T / d_start), and the untied
    m_1^(T - start) of the one-step Jacobian at the padding's input (eq. (T23))."""
    from mftrnn.theory import hyper
    from mftrnn.theory.critical import CriticalSolution
    from mftrnn.theory.inputs import TwoInputs
    from mftrnn.theory.stationary import stationary
    from mftrnn.theory.trajectories import memory_of

    if conf.init.scheme is InitScheme.critical:
        hp = CriticalSolution.from_dict(info["solution"]).hyper()
    else:
        drive = info["drive"]
        hp = hyper.hyper_from_config(conf.cell.kind, conf.init, conf.model.hidden, task.input_size, task.seq_len,
                                     drive=(drive["gates"], drive["candidate"]))
    x = pairs.x[:, :2].to(torch.float64).cpu()
    steps = x.shape[0]
    tail = x[pairs.split:, 0] if pairs.split < steps else x[:, 0]
    two = TwoInputs(steps, pairs.split, float((tail ** 2).mean()), x)
    st = stationary(hp, two.R, with_length=False)
    m1 = float(np.asarray(st.m1).reshape(-1)[0])
    out = {"hyperparameters": hp.describe(), "R_op": two.R,
           "untied_m1": m1, "untied_log10_gain_m1": 0.5 * (steps - start) * math.log10(max(m1, 1e-300))}
    if conf.init.scheme is InitScheme.critical:  # the solver's own prediction, eq. (T36) (with (T37))
        out["tied_linear"] = {"log10_gain": info["solution"]["predictions"]["tied_linear"]["log10_rms_gain"]}
    out["write"] = write_side(conf, hp, task, pairs)
    for theory in ("untied", "tied"):
        if theory == "tied" and steps > conf.theory.max_steps:
            out[theory] = {"skipped": f"T = {steps} > theory.max_steps = {conf.theory.max_steps}"}
            continue
        if theory == "tied" and hp.phase_limited:  # its population draws Gaussian weights (docs/theory.md §7.8)
            out[theory] = {"skipped": "phase-limited recurrent weights (docs/theory.md §10.6): see tied_linear"}
            continue
        tr, mem = memory_of(hp, two, theory, conf.eps, conf.theory.population, conf.seed)
        d = np.asarray(tr.d_h, float)
        ratio = d[start:] / d[start] if d[start] > 0 else None
        out[theory] = {"method": tr.method, "horizon": mem.get("horizon"),
                       "distance_ratio_end": mem.get("distance_ratio_at_end"),
                       "one_minus_c_end": mem["one_minus_c_at_end"],
                       "log10_gain": 0.5 * math.log10(ratio[-1]) if ratio is not None and ratio[-1] > 0 else None,
                       # below ~1e-11 of the split's distance the tied solver's jitter (docs/theory.md §7.2)
                       # can hold the distance up: the number may then be a bound
                       "below_jitter": bool(theory == "tied" and ratio is not None and ratio[-1] < TIED_FLOOR),
                       "distance_ratio_curve": ratio.tolist() if ratio is not None else None,
                       "seconds": mem["seconds"]}
    return out


def write_side(conf: DiagnoseConfig, hp, task, pairs) -> dict:
    """The theory of the write (docs/theory.md §10.8, eq. (T38)) on the same pairs as the network: its
    prediction of 1 - C/Q at the last step, averaged over the pairs, and at the end of the informative steps."""
    from mftrnn.inits import write_inputs
    from mftrnn.theory.write import separation

    t0 = time.perf_counter()
    inputs = write_inputs(pairs.x, task, conf.init.drive.window)
    sep = separation(hp, inputs, conf.theory.population, conf.seed)
    return {"one_minus_c_end": float(sep["one_minus_c_end"]), "one_minus_c_split": float(sep["one_minus_c_split"]),
            "one_minus_c_end_sd_over_pairs": float(sep["one_minus_c_end_sd"]), **inputs.describe(),
            "seconds": time.perf_counter() - t0}


def run_diagnose(cfg: DictConfig, out_dir: Path) -> dict:
    conf = to_objects(cfg)
    from mftrnn.data import load_splits
    from mftrnn.diagnose import measure, pairs_of_examples
    from mftrnn.tasks import build_task

    t0 = time.perf_counter()
    if conf.ckpt and not Path(conf.ckpt).expanduser().is_file():  # before any data is loaded
        raise ConfigError(f"ckpt={conf.ckpt} is not allowed: no such file")
    device = pick_device(conf.device)
    task = build_task(conf.task)
    splits = load_splits(task.dataset, conf.data)
    task.fit(splits)
    model, info = build_model(conf, task, splits)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, out_dir / "init.pt")
    rnn = model.rnn.to(device=device, dtype=torch.float64)
    rnn.requires_grad_(False)
    pairs = pairs_of_examples(task, splits.test_x, splits.test_y, conf.pairs, conf.seed)
    pairs.x = pairs.x.to(device=device, dtype=torch.float64)
    # the padding's start: the gains cross the padding only (all steps for a task without padding)
    start = task.content_steps if task.content_steps < task.seq_len else 0
    net = measure(rnn, pairs, start, conf.probes, conf.eps, conf.seed)
    t_net = time.perf_counter() - t0
    res = {"command": "diagnose", "task": conf.task.name.value, "cell": conf.cell.kind.value,
           "init": conf.init.scheme.value, "hidden": conf.model.hidden, "seed": conf.seed, "ckpt": conf.ckpt,
           "device": str(device), "labels": pairs.labels, "network": net, "network_seconds": t_net}
    res["init_drive"] = info["drive"]
    if info.get("solution"):
        res["init_solution"] = info["solution"]
    if conf.theory.enabled:
        res["theory"] = theory_side(conf, model, task, pairs, info, start)
        res["theory"]["note"] = "for the configured init (at initialization), also when a checkpoint is diagnosed"
    res["seconds"] = time.perf_counter() - t0
    (out_dir / RESULT_NAME).write_text(json.dumps(res, default=float))
    from mftrnn.report import plot_diagnose

    plot_diagnose(res, out_dir / "diagnose.png")
    _print(res, out_dir)
    return res


def _print(res: dict, out_dir: Path) -> None:
    net = res["network"]
    g, o = net["log10_gain"], net["one_minus_c_end"]
    hz = lambda v: f"> {net['steps'] - net['split']}" if v is None else str(v)  # noqa: E731
    what = f"checkpoint {res['ckpt']}" if res["ckpt"] else f"init={res['init']}"
    lines = [f"diagnose {res['cell']} hidden {res['hidden']}, {what}, {res['task']} (T = {net['steps']}, "
             f"gains over steps {net['start']}..{net['steps']}, {net['pairs']} pairs)",
             f"  network: log10 gain {g['mean']:+.3f} +- {g['std']:.3f} (min {g['min']:+.2f}, max {g['max']:+.2f}); "
             f"1 - C/Q at the end {o['mean']:.3g}; distance ratio end/split {net['distance_ratio_end']:.3g}; "
             f"horizon {hz(net['horizon'])}; spectral radius at the zero state {net['zero_state_radius']:.5f}"]
    th = res.get("theory")
    if th:
        lines.append(f"  theory, untied: m1 {th['untied_m1']:.5f} -> log10 gain {th['untied_log10_gain_m1']:+.3f}")
        w = th["write"]
        lines.append(f"  theory of the write ({w['pairs']} pairs): 1 - C/Q at the end {w['one_minus_c_end']:.3g} "
                     f"(network on the same pairs {np.mean(o['per_pair'][:w['pairs']]):.3g}), at the end "
                     f"of the informative steps {w['one_minus_c_split']:.3g}")
        if "tied_linear" in th:
            lines.append(f"  theory, tied (linearized, the solver's): log10 rms gain over T {th['tied_linear']['log10_gain']:+.3f}")
        for name in ("untied", "tied"):
            t = th[name]
            if "skipped" in t:
                lines.append(f"  theory, {name}: {t['skipped']}")
                continue
            lg = "n/a" if t["log10_gain"] is None else f"{t['log10_gain']:+.3f}"
            ratio = "n/a" if t["distance_ratio_end"] is None else f"{t['distance_ratio_end']:.3g}"
            horizon = hz(None if t["horizon"] is None else int(t["horizon"]))
            lines.append(f"  theory, {name} ({t['method']}): log10 gain {lg}; 1 - C/Q at the end "
                         f"{t['one_minus_c_end']:.3g}; distance ratio {ratio}; horizon {horizon}")
    lines.append(f"  wrote {out_dir / RESULT_NAME}, diagnose.png and init.pt ({res['seconds']:.1f} s)")
    print("\n".join(lines))


@hydra.main(version_base="1.3", config_path="pkg://mftrnn.conf", config_name="diagnose")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    run_or_exit("diagnose", run_diagnose, cfg, out_dir)
