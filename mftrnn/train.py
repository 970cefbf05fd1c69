"""`mftrnn train`: train an LSTM/GRU classifier on a long-sequence task, resumably.

The Hydra entry point `main` only finds the run dir and calls :func:`train`, a plain function
that builds everything itself (reads the config as objects, picks the device, builds task, model
and initialization, loads data, trains, evaluates) and returns the summary.

Run dir contents: init.pt (state_dict at initialization), ckpt_last.pt and ckpt_prev.pt (atomic,
every train.ckpt_every steps, at the end, and at an interrupt), metrics.jsonl (one JSON object per
logged step), summary.json (final metrics), train.log (Hydra's log), failed.txt (only after an
error), wandb/ (offline W&B run), .hydra/ (the composed config).

SIGINT / SIGTERM stop after the current step with a checkpoint at that step (`StopSignals`); the
same command resumes exactly.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from mftrnn import checkpoint
from mftrnn.data import Splits, load_splits
from mftrnn.errors import ConfigError, DivergedError, MftrnnError, run_or_exit
from mftrnn.gpus import pin_for_hydra_job
from mftrnn.inits import effective_gate_biases, initialize, task_shape
from mftrnn.models import RNNClassifier, cap_candidate_norm
from mftrnn.schema import (VOLATILE_KEYS, OptimName, Resume, TrainConfig, flatten, register_configs, to_objects,
                           under)
from mftrnn.seeding import pick_device, rng_state, seed_everything, set_determinism, set_rng_state
from mftrnn.tasks import SequenceTask, build_task
from mftrnn.tracking import METRICS_NAME, Tracker, new_run_id, read_json, truncate_metrics, write_json

log = logging.getLogger(__name__)
register_configs()


def _register_packed_launcher() -> None:
    """hydra/launcher=packed (hydra_plugins/mftrnn_packed_launcher): Hydra finds launchers by scanning
    the hydra_plugins namespace, which does not see an editable install's mapping; registering the class
    here (idempotent) makes it work either way."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.mftrnn_packed_launcher.packed_launcher import PackedLauncher

    Plugins.instance().register(PackedLauncher)


_register_packed_launcher()

SUMMARY_NAME = "summary.json"
# Each split's random padding (task.pad_value=noise) comes from its own fixed seed, seed + offset.
EVAL_NOISE_SEED = {"val": 2, "train": 3, "test": 4}
# Test hook: exit abruptly (as a kill would) right after this optimizer step.
KILL_ENV = "MFTRNN_TEST_KILL_AT_STEP"
# Test hook: send this process signals right after an optimizer step: "STEP" (SIGINT) or "STEP:SIGTERM",
# "STEP:SIGINT,SIGINT" (a second Ctrl-C at once).
SIGNAL_ENV = "MFTRNN_TEST_SIGNAL_AT_STEP"
# How long a CPU run trains before it estimates its time left (seconds; a test shortens it).
ETA_CHECK_S = float(os.environ.get("MFTRNN_ETA_CHECK_S", "10"))


class TestHooks:
    """The test hooks KILL_ENV and SIGNAL_ENV, read once per training loop (a run alone or a pack)."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.kill_at = int(os.environ.get(KILL_ENV, "-1"))
        at, _, names = os.environ.get(SIGNAL_ENV, "-1").partition(":")
        self.signal_at = int(at)
        self.signals = [getattr(signal, n) for n in (names or "SIGINT").split(",")]

    def after_step(self, step: int) -> None:
        """Exit as a kill would, or send the signals a user or a scheduler would send, after `step`."""
        if step == self.kill_at:
            os._exit(17)
        if step == self.signal_at:
            for sig in self.signals:
                os.kill(os.getpid(), sig)


class BatchSampler:
    """Epoch-wise shuffled mini-batch indices; checkpointable.

    The permutation is drawn on the CPU from a seeded generator (the same order on every device)
    and copied to the device once per epoch, so a training step moves no indices host-to-device.
    """

    def __init__(self, n: int, seed: int, device: torch.device) -> None:
        self.n, self.device = n, device
        self.gen = torch.Generator().manual_seed(seed)
        self.pos = self.epoch = 0
        self._new_permutation()

    def _new_permutation(self) -> None:
        self.perm = torch.randperm(self.n, generator=self.gen)
        self.perm_dev = self.perm.to(self.device)

    def next(self, batch_size: int) -> torch.Tensor:
        """Indices (B,) of the next batch, on the device; a new permutation starts when one runs out."""
        if self.pos + batch_size > self.n:
            self._new_permutation()
            self.pos = 0
            self.epoch += 1
        idx = self.perm_dev[self.pos:self.pos + batch_size]
        self.pos += batch_size
        return idx

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.pos, self.epoch = state["perm"], state["pos"], state["epoch"]
        self.perm_dev = self.perm.to(self.device)


def build_optimizer(conf: TrainConfig, params) -> torch.optim.Optimizer:
    o = conf.optim
    if o.name is OptimName.adam:
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name is OptimName.rmsprop:
        return torch.optim.RMSprop(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


@torch.no_grad()
def evaluate(model: RNNClassifier, task: SequenceTask, x: torch.Tensor, y: torch.Tensor, batch_size: int,
             noise_seed: int) -> dict[str, float]:
    """Mean cross-entropy and accuracy over a whole split. Random padding is redrawn from a fixed
    seed, so every evaluation of a split sees the same sequences."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=x.device).manual_seed(noise_seed)
    loss_sum = torch.zeros((), device=x.device, dtype=torch.float64)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(task.sequences(xb, gen))
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(-1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return {"loss": loss_sum.item() / n, "acc": correct.item() / n}


def _identity(conf_dict: dict) -> dict:
    """The config minus VOLATILE_KEYS: what must match for a checkpoint to be resumed."""
    return {k: v for k, v in flatten(conf_dict).items() if not under(k, VOLATILE_KEYS)}


def _check_same_run(saved: dict, now: dict, run_dir: Path) -> None:
    diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in diff[:5])
        raise ConfigError(f"{run_dir} holds a checkpoint of a different configuration ({shown}). "
                          f"Pick another hydra.run.dir, or train.resume=never to start over there.")


FAILED_NAME = "failed.txt"  # written into a run dir whose run ended with an error (removed by a later success)


def _check_writable(run_dir: Path) -> None:
    """The run dir exists (Hydra made it) and takes files; else one line naming it."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"the run dir {run_dir} cannot be created or written ({exc.strerror or exc}); "
                          f"choose another with hydra.run.dir=PATH") from None


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train as configured, writing into `run_dir`; return the summary (also in summary.json). A run
    that ends with an error (not an interrupt) leaves failed.txt in its run dir, with the error."""
    try:
        summary = _train(cfg, run_dir)
    except Stopped:
        raise
    except MftrnnError as exc:
        record_failure(run_dir, exc)
        raise
    (run_dir / FAILED_NAME).unlink(missing_ok=True)
    return summary


def record_failure(run_dir: Path, exc: BaseException) -> None:
    """failed.txt in the run dir (if it exists), with the error; a run dir that cannot take it is left."""
    try:
        if run_dir.is_dir():
            (run_dir / FAILED_NAME).write_text(f"{type(exc).__name__}: {exc}\n")
    except OSError:
        pass


@dataclass
class Prepared:
    """A run ready to train (`prepare`): config, task, initialized model and data (on the CPU), and
    where it starts (step 0, or the checkpoint `state` to resume)."""

    conf: TrainConfig
    conf_dict: dict
    task: SequenceTask
    model: RNNClassifier
    splits: Splits
    init_info: Optional[dict]
    device: torch.device
    state: Optional[dict] = None  # the checkpoint to resume (None: a fresh start, init.pt written)
    step: int = 0
    elapsed: float = 0.0
    run_id: str = field(default_factory=new_run_id)
    best_val: float = -math.inf
    window: Optional[dict] = None  # the log window an interrupt cut (absent: checkpoints at window ends)


def _finished(conf: TrainConfig, conf_dict: dict, done: Optional[dict]) -> bool:
    """`done` (a summary.json) is this run's, finished at train.steps or diverged (a result, whose
    checkpoint predates the divergence): nothing is left to do."""
    return done is not None and _identity(done.get("config", {})) == _identity(conf_dict) and bool(
        done.get("diverged") or done.get("steps", -1) >= conf.train.steps)


def completed(cfg: DictConfig, run_dir: Path) -> Optional[dict]:
    """The summary of the run in `run_dir` when it is complete for this config, else None; also None
    under train.resume other than auto. Cheap: no data, no device."""
    conf = to_objects(cfg)
    if conf.train.resume is not Resume.auto:
        return None
    done = read_json(run_dir / SUMMARY_NAME)
    conf_dict = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True, enum_to_str=True)
    return done if _finished(conf, conf_dict, done) else None


def prepare(cfg: DictConfig, run_dir: Path, splits_cache: Optional[dict] = None) -> tuple[Optional[dict], Optional[Prepared]]:
    """Everything before the first step, shared by a run alone and a packed run (mftrnn/packed_train.py):
    (summary, None) when the run is already complete, else (None, Prepared). Checks the config and the
    run dir, seeds, builds task and model, loads the data (`splits_cache`: loaded splits by data config,
    shared by the runs of a pack), initializes, and finds the checkpoint to resume (or writes init.pt)."""
    conf = to_objects(cfg)  # every check at the door: bad values end here, before any work
    conf_dict = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True, enum_to_str=True)
    _check_writable(run_dir)
    done = read_json(run_dir / SUMMARY_NAME) if conf.train.resume is Resume.auto else None
    if done is None and (run_dir / SUMMARY_NAME).exists() and conf.train.resume is Resume.auto:
        log.warning("%s cannot be read (cut mid-write?): the run continues from its checkpoint",
                    run_dir / SUMMARY_NAME)
    if _finished(conf, conf_dict, done):
        acc = lambda k: "-" if done.get(k) is None else f"{done[k]:.4f}"  # noqa: E731
        log.info("run already complete: %d steps%s, val acc %s, test acc %s (%s)", done["steps"],
                 ", diverged" if done["diverged"] else "", acc("val_acc"), acc("test_acc"), run_dir / SUMMARY_NAME)
        return done, None
    set_determinism(conf.deterministic)  # before CUDA starts
    seed_everything(conf.seed)
    device = pick_device(conf.device)

    task = build_task(conf.task)
    model = RNNClassifier(conf.cell.kind, task.input_size, conf.model)
    data_key = (task.dataset, repr(conf.data))
    if splits_cache is not None and data_key in splits_cache:
        splits = splits_cache[data_key]
    else:
        splits = load_splits(task.dataset, conf.data)  # draws no random numbers: the init below is unchanged
        if splits_cache is not None:
            splits_cache[data_key] = splits
    task.fit(splits)
    # on the CPU, so the init is the same on every device; init=critical solves for T and the inputs
    init_info = initialize(model, conf.init, task_shape(task, splits, conf.init))
    log.info("%s | %s %s x%d, init=%s | device %s | run dir %s", task.describe(), conf.cell.kind.value,
             conf.model.hidden, conf.model.layers, conf.init.scheme.value, device, run_dir)
    prep = Prepared(conf, conf_dict, task, model, splits, init_info, device)
    if conf.train.resume is Resume.auto:
        state, ckpt_path, damaged = checkpoint.load_latest(run_dir)
        for line in damaged:
            log.warning("%s; resuming from the newest intact checkpoint", line)
        if state is not None:
            _check_same_run(state["identity"], _identity(conf_dict), run_dir)
            prep.state = state
            prep.step, prep.elapsed, prep.run_id = state["step"], state["elapsed"], state["run_id"]
            prep.best_val, prep.window = state["best_val"], state.get("window")
            dropped = truncate_metrics(run_dir / METRICS_NAME, prep.step)
            if dropped:
                log.warning("%s: dropped %d damaged line(s) (cut mid-write)", run_dir / METRICS_NAME, dropped)
            log.info("resumed from %s at step %d", ckpt_path, prep.step)
            return None, prep
    for stale in (run_dir / METRICS_NAME, run_dir / SUMMARY_NAME):
        stale.unlink(missing_ok=True)
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, run_dir / "init.pt")
    return None, prep


def open_tracker(prep: Prepared, run_dir: Path) -> Tracker:
    """The run's metrics.jsonl and W&B run (its config: the composed config, the effective gate biases
    and, for init=critical, the solution)."""
    conf = prep.conf
    choices = [conf.task.name.value, conf.cell.kind.value, conf.init.scheme.value]
    return Tracker(conf.wandb, run_dir, prep.run_id, name=str(run_dir), group=conf.wandb.group or conf.experiment_name,
                   tags=choices, config={**prep.conf_dict, "init_effective_biases": effective_gate_biases(prep.model),
                                         **init_record(prep.init_info)})


def _train(cfg: DictConfig, run_dir: Path) -> dict:
    done, prep = prepare(cfg, run_dir)
    if done is not None:
        return done
    conf, device = prep.conf, prep.device
    splits = prep.splits.to(device)
    model = prep.model.to(device)
    opt = build_optimizer(conf, list(model.parameters()))
    sampler = BatchSampler(len(splits.train_x), seed=conf.seed, device=device)
    noise = torch.Generator(device=device).manual_seed(conf.seed + 1)
    if prep.state is not None:
        model.load_state_dict(prep.state["model"])
        opt.load_state_dict(prep.state["optimizer"])
        sampler.load_state_dict(prep.state["sampler"])
        noise.set_state(prep.state["noise"])
        set_rng_state(prep.state["rng"])

    tracker = open_tracker(prep, run_dir)
    exit_code = 1
    try:
        with StopSignals() as stop:
            summary = _loop(conf, prep.conf_dict, model, prep.task, splits, opt, sampler, noise, tracker, run_dir,
                            prep.step, prep.elapsed, prep.run_id, prep.best_val, device, prep.init_info, prep.window,
                            stop)
        exit_code = 0
    except Stopped:
        exit_code = 0  # stopped by the user: the W&B run is resumable, not failed
        raise
    finally:
        tracker.finish(exit_code)  # BasicLauncher runs a sweep in one process: never leak a run
    check_divergence(conf, summary, run_dir)
    return summary


def check_divergence(conf: TrainConfig, summary: dict, run_dir: Path) -> None:
    if summary["diverged"] and conf.train.fail_on_divergence:
        raise DivergedError(f"loss became non-finite at step {summary['diverged_at']} "
                            f"(train.fail_on_divergence=true); see {run_dir / SUMMARY_NAME}")


def init_record(init_info: Optional[dict]) -> dict:
    """What the init decided, for summary.json and the W&B config: `init_drive` (the gates' and the
    candidate's input scales and where they come from, every init) and `init_solution` (init=critical:
    the solved hyperparameters and the theory's predictions)."""
    info = init_info or {}
    out = {"init_drive": info["drive"]} if "drive" in info else {}
    if info.get("solution"):
        out["init_solution"] = info["solution"]
    return out


def base_summary(conf: TrainConfig, conf_dict: dict, task: SequenceTask, step: int, wall: float,
                 diverged_at: Optional[int], init_info: Optional[dict]) -> dict:
    """summary.json's keys that do not need an evaluation."""
    summary: dict = {"steps": step, "wall_time_s": wall, "diverged": diverged_at is not None,
                     "diverged_at": diverged_at, "task": conf.task.name.value, "cell": conf.cell.kind.value,
                     "init": conf.init.scheme.value, "seed": conf.seed, "seq_len": task.seq_len, "config": conf_dict}
    summary.update(init_record(init_info))
    if diverged_at is not None:
        for split in ("train", "val", "test"):
            summary[f"{split}_loss"] = summary[f"{split}_acc"] = None
    return summary


def final_splits(conf: TrainConfig, splits: Splits) -> dict:
    """The splits of the final evaluation: a training subset of val_size examples, val and test (read
    only here, never to select a model)."""
    n_sub = min(len(splits.train_x), conf.data.val_size)
    return {"train": (splits.train_x[:n_sub], splits.train_y[:n_sub]), "val": (splits.val_x, splits.val_y),
            "test": (splits.test_x, splits.test_y)}


def add_final(summary: dict, results: dict, best_val: float, tracker: Tracker) -> float:
    """Put the final evaluation (`results`: split -> {loss, acc}) into the summary and the tracker;
    returns the best validation accuracy."""
    for split, res in results.items():
        summary[f"{split}_loss"], summary[f"{split}_acc"] = res["loss"], res["acc"]
    best_val = max(best_val, summary["val_acc"])
    summary["best_val_acc"] = best_val
    tracker.log({f"{s}/{m}": summary[f"{s}_{m}"] for s in ("val", "test") for m in ("loss", "acc")}, summary["steps"])
    return best_val


def _loop(conf: TrainConfig, conf_dict: dict, model: RNNClassifier, task: SequenceTask, splits: Splits,
          opt: torch.optim.Optimizer, sampler: BatchSampler, noise: torch.Generator, tracker: Tracker,
          run_dir: Path, step: int, elapsed: float, run_id: str, best_val: float, device: torch.device,
          init_info: Optional[dict] = None, resumed_window: Optional[dict] = None,
          stop: Optional["StopSignals"] = None) -> dict:
    tc = conf.train
    hooks = TestHooks()
    params = list(model.parameters())
    clip = conf.optim.clip if conf.optim.clip is not None else math.inf  # inf: measure, never clip

    # Per-window sums stay on the device; they are read (one sync) only when a window is logged.
    def zeros():
        return torch.zeros(4, device=device, dtype=torch.float64)  # loss sum, correct, examples, grad-norm sum

    window, window_steps = zeros(), 0
    first_bad = torch.full((), -1, device=device, dtype=torch.long)  # first step with a non-finite loss
    if resumed_window:  # an interrupt cut this window: continue it, so the logged means are unchanged
        window = torch.tensor(resumed_window["sums"], device=device, dtype=torch.float64)
        window_steps = resumed_window["steps"]
        first_bad.fill_(resumed_window["first_bad"])
    start_step, eta_checked, t_eta = step, device.type != "cpu", time.perf_counter()
    t_start = time.perf_counter() - elapsed
    t_window = time.perf_counter()
    diverged_at: Optional[int] = None
    model.train()
    pbar = tqdm(total=tc.steps, initial=step, disable=not tc.progress, dynamic_ncols=True, unit="step",
                desc=f"{conf.task.name.value} {conf.cell.kind.value}/{conf.init.scheme.value}", file=sys.stderr)
    with logging_redirect_tqdm():
        while step < tc.steps:
            idx = sampler.next(tc.batch_size)
            x = task.sequences(splits.train_x[idx], noise)  # (T, B, n_in), built on the device
            y = splits.train_y[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, clip)
            if step < conf.optim.warmup_steps:
                for group in opt.param_groups:
                    group["lr"] = conf.optim.lr_at(step + 1)
            opt.step()
            if conf.optim.candidate_norm_cap is not None:
                cap_candidate_norm(model.rnn, conf.optim.candidate_norm_cap)
            step += 1
            window_steps += 1
            pbar.update(1)
            with torch.no_grad():
                window += torch.stack([loss.detach().double() * len(y), (logits.argmax(-1) == y).sum().double(),
                                       torch.tensor(float(len(y)), device=device, dtype=torch.float64),
                                       grad_norm.detach().double()])
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), step, first_bad)
            hooks.after_step(step)
            if stop is not None and stop.signum is not None:
                tracker.flush()
                _save(conf_dict, model, opt, sampler, noise, step, time.perf_counter() - t_start, run_id, best_val,
                      run_dir, {"sums": window.tolist(), "steps": window_steps, "first_bad": int(first_bad.item())})
                pbar.close()
                stop.after_checkpoint(step, run_dir)  # raises Interrupted, or hands over to the scheduler
            if not eta_checked and time.perf_counter() - t_eta > ETA_CHECK_S and step - start_step >= 5:
                eta_checked = True  # once, ten seconds in: on a GPU the question does not arise
                rate = (step - start_step) / (time.perf_counter() - t_eta)
                left = (tc.steps - step) / rate
                if left > 3600:
                    log.warning("on the CPU this run needs about %.1f h more (%.2f steps/s, %d steps to go); "
                                "mftrnn train is meant for a GPU (device=cuda)", left / 3600, rate, tc.steps - step)

            checkpoint_now = step % tc.ckpt_every == 0
            if step % tc.log_every == 0 or checkpoint_now or step == tc.steps:
                loss_sum, correct, count, gn_sum = window.tolist()  # the one sync of the window
                dt = time.perf_counter() - t_window
                record = {"train/loss": loss_sum / count, "train/acc": correct / count,
                          "train/grad_norm": gn_sum / window_steps, "lr": opt.param_groups[0]["lr"],
                          "steps_per_s": window_steps / dt, "epoch": sampler.epoch}
                if not math.isfinite(loss_sum):
                    diverged_at = int(first_bad.item())
                    tracker.log(record, step)
                    log.error("the loss became non-finite at step %d: the run diverged and stops here "
                              "(summary.json: diverged=true)", diverged_at)
                    break
                tracker.log(record, step)
                pbar.set_postfix(loss=f"{record['train/loss']:.3f}", acc=f"{record['train/acc']:.3f}")
                window, window_steps = zeros(), 0

                if step % tc.eval_every == 0 and step < tc.steps:
                    val = evaluate(model, task, splits.val_x, splits.val_y, tc.eval_batch_size,
                                   conf.seed + EVAL_NOISE_SEED["val"])
                    best_val = max(best_val, val["acc"])
                    tracker.log({"val/loss": val["loss"], "val/acc": val["acc"]}, step)
                    log.info("step %d: val loss %.4f acc %.4f", step, val["loss"], val["acc"])
                    if tc.eval_test:
                        test = evaluate(model, task, splits.test_x, splits.test_y, tc.eval_batch_size,
                                        conf.seed + EVAL_NOISE_SEED["test"])
                        tracker.log({"test/loss": test["loss"], "test/acc": test["acc"]}, step)
                if checkpoint_now and step < tc.steps:
                    tracker.flush()  # the records up to this step are on disk before the checkpoint is
                    _save(conf_dict, model, opt, sampler, noise, step, time.perf_counter() - t_start, run_id,
                          best_val, run_dir)
                t_window = time.perf_counter()  # steps/s counts training steps only
    pbar.close()

    wall = time.perf_counter() - t_start
    if diverged_at is not None:
        step = diverged_at
    summary = base_summary(conf, conf_dict, task, step, wall, diverged_at, init_info)
    if diverged_at is None:
        results = {split: evaluate(model, task, x, y, tc.eval_batch_size, conf.seed + EVAL_NOISE_SEED[split])
                   for split, (x, y) in final_splits(conf, splits).items()}
        best_val = add_final(summary, results, best_val, tracker)
        _save(conf_dict, model, opt, sampler, noise, step, wall, run_id, best_val, run_dir)
        log.info("done: %d steps, val acc %.4f, test acc %.4f (%s)", step, summary["val_acc"], summary["test_acc"],
                 run_dir / SUMMARY_NAME)
    write_json(run_dir / SUMMARY_NAME, summary)
    tracker.summary(summary)
    return summary


def _save(conf_dict: dict, model: RNNClassifier, opt: torch.optim.Optimizer, sampler: BatchSampler,
          noise: torch.Generator, step: int, elapsed: float, run_id: str, best_val: float, run_dir: Path,
          window: Optional[dict] = None) -> None:
    """ckpt_last.pt (the previous one kept as ckpt_prev.pt); `window`: the open log window's sums, when
    an interrupt checkpoints between two log steps."""
    save_checkpoint(conf_dict, model.state_dict(), opt.state_dict(), sampler, noise, step, elapsed, run_id, best_val,
                    run_dir, window)


def save_checkpoint(conf_dict: dict, model_state: dict, opt_state: dict, sampler: BatchSampler,
                    noise: torch.Generator, step: int, elapsed: float, run_id: str, best_val: float, run_dir: Path,
                    window: Optional[dict] = None) -> None:
    """A run's checkpoint from state dicts (a packed run's are unpacked first, mftrnn/packed_train.py)."""
    from mftrnn import __version__

    checkpoint.save_atomic({
        "model": model_state, "optimizer": opt_state, "step": step, "sampler": sampler.state_dict(),
        "noise": noise.get_state(), "rng": rng_state(), "run_id": run_id, "elapsed": elapsed, "best_val": best_val,
        "identity": _identity(conf_dict), "config": conf_dict, "version": __version__,
        **({"window": window} if window is not None else {}),
    }, run_dir / checkpoint.CKPT_NAME)


class Stopped(MftrnnError):
    """The user or a scheduler stopped training: not a failure (no failed.txt, W&B run not failed), and
    the whole sweep stops."""

    label = "stopped"
    stops_sweep = True


class Interrupted(Stopped):
    """SIGINT or SIGTERM stopped training after a step; a checkpoint at that step was written."""

    def __init__(self, signum: int, step: int, run_dir: Path) -> None:
        name = signal.Signals(signum).name
        self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
        super().__init__(f"{name} at step {step}: checkpoint written to {run_dir / checkpoint.CKPT_NAME}; "
                         f"run the same command again to resume")


class StoppedAtOnce(Stopped):
    """A second Ctrl-C during the step that the first one was waiting for."""

    exit_code = 130


class StopSignals:
    """While active, the first SIGINT or SIGTERM only sets `signum` (the loop checkpoints after its step
    and stops, `after_checkpoint`); a second SIGINT stops at once, without a checkpoint. Under submitit
    (hydra/launcher=slurm), whose handler of SIGUSR2 requeues a job that times out or is preempted,
    SIGUSR2 too is caught first: the loop checkpoints at its step, then submitit's handler requeues
    the job, which resumes there. Handlers can only be installed from the main thread; elsewhere this
    does nothing."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._old: dict = {}

    def after_checkpoint(self, step: int, run_dir: Path) -> None:
        """Called once the checkpoint at `step` is written: hand SIGUSR2 to the scheduler's handler,
        stop with Interrupted on SIGINT / SIGTERM."""
        old = self._old.get(getattr(signal, "SIGUSR2", None))
        if self.signum == getattr(signal, "SIGUSR2", None) and callable(old):
            log.warning("SIGUSR2 at step %d: checkpoint written; handing over to the scheduler (requeue)", step)
            old(self.signum, None)
        raise Interrupted(self.signum, step, run_dir)

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise StoppedAtOnce("interrupted again: stopped at once, without a checkpoint at this step "
                                "(run the same command again to resume from the last one)")
        self.signum = signum
        log.warning("%s received: stopping after this step (Ctrl-C again to stop at once)",
                    signal.Signals(signum).name)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
            usr2 = getattr(signal, "SIGUSR2", None)
            if usr2 is not None and callable(signal.getsignal(usr2)):  # a scheduler's requeue handler
                self._old[usr2] = signal.signal(usr2, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@hydra.main(version_base="1.3", config_path="pkg://mftrnn.conf", config_name="train")
def main(cfg: DictConfig) -> Optional[float]:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    pin_for_hydra_job(run_dir)  # hydra/launcher=gpus: this worker's own GPU, before CUDA starts
    summary = run_or_exit("train", train, cfg, run_dir)
    return summary.get("val_acc")  # what a sweeper would optimize
