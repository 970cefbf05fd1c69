"""Packed training: the runs of a sweep that share their shapes, trained together in one packed module
(mftrnn/packed.py: the scan layout, or block-diagonal cuDNN).

`hydra/launcher=packed` (hydra_plugins/mftrnn_packed_launcher) hands this module the sweep's jobs as
(config, run dir, log file). `pack_key` says which runs can share a pack: the same sequence length and
input size, cell, hidden size, depth, batch size, loop schedule, Adam's shared settings, data and
device; seeds, inits, tasks of the same shape, learning rates and gradient clips may all differ.
`group` cuts the jobs into packs of at most `pack` runs, `train_pack` trains one pack in this process,
`run_packs` spreads packs over GPU worker processes.

Each run of a pack keeps what a run alone has (mftrnn/train.py; the same `prepare`, summary and
checkpoint code): its run dir with init.pt, metrics.jsonl, summary.json, ckpt_last.pt / ckpt_prev.pt in
the standalone format (a packed run resumes alone and the other way round), train.log, its own W&B run;
its seed, init, data order and padding noise (its own sampler and generators), its learning rate and
clip. A run whose loss becomes non-finite, or whose weights leave float32's safe range
(mftrnn.packed.PARAM_BOUND), is frozen from that step (zero gradient, zero update; its weights zeroed in
the second case), so nothing non-finite reaches the shared module; it is recorded as diverged at the next
log step, as a run alone is, and the others go on. SIGINT / SIGTERM checkpoint every run of the pack at the current step.
"""
from __future__ import annotations

import gc
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from mftrnn.errors import ConfigError, MftrnnError
from mftrnn.packed import (LAYOUTS, PackedAdam, Pack, cap_candidate_per_run, capture_training, clip_per_run, guard_params,
                           runs_that_fit)
from mftrnn.schema import OptimName, TrainConfig, to_objects
from mftrnn.seeding import pick_device
from mftrnn.tasks import build_task
from mftrnn.tracking import Tracker, write_json
from mftrnn.train import (EVAL_NOISE_SEED, FAILED_NAME, SUMMARY_NAME, BatchSampler, Prepared, StopSignals, Stopped,
                          TestHooks, add_final, base_summary, check_divergence, final_splits, open_tracker, prepare,
                          record_failure, save_checkpoint)

log = logging.getLogger(__name__)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format
# The pack size with the most runs/hour, per layout and cell, measured on an H200 at T = 1028 and 5028
# (hidden 256, batch 128; docs/performance.md, Packed sweeps): hydra.launcher.pack=null (the default) uses it.
# A scan pack that does not fit the device's memory is trained as smaller packs (`_runs_that_fit`).
BEST_PACK = {"scan": {"lstm": 16, "gru": 16}, "blockdiag": {"lstm": 4, "gru": 8}}
DEFAULT_MECHANISM = "auto"


@dataclass
class Job:
    """One run of the sweep: its composed config (interpolations resolved), run dir and log file."""

    cfg: DictConfig
    run_dir: Path
    log_file: Path
    label: str = ""  # how the console names the run (the launcher: the job's number, #N)


@dataclass
class Outcome:
    """How a job ended: its summary, or the error (as `kind`, `message`, `exit_code`, `stops_sweep`, so
    that it crosses process boundaries)."""

    summary: Optional[dict] = None
    kind: Optional[str] = None
    message: str = ""
    exit_code: int = 0
    stops_sweep: bool = False

    @classmethod
    def failed(cls, exc: BaseException) -> "Outcome":
        if isinstance(exc, MftrnnError):
            return cls(kind=type(exc).__name__, message=str(exc), exit_code=exc.exit_code, stops_sweep=exc.stops_sweep)
        return cls(kind=type(exc).__name__, message=f"{type(exc).__name__}: {exc}", exit_code=1)


class PackedJobError(MftrnnError):
    """A packed job's error, as the launcher reports it to Hydra (the original class name in `kind`)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.message)
        self.kind, self.exit_code, self.stops_sweep = outcome.kind, outcome.exit_code, outcome.stops_sweep
        self.label = "stopped" if outcome.stops_sweep else "error"


# ----------------------------------------------------------------------------------- grouping
def check_mechanism(mechanism: str) -> None:
    """hydra.launcher.mechanism is auto or names a layout of mftrnn.packed.LAYOUTS, or a ConfigError says so."""
    if mechanism != "auto" and mechanism not in LAYOUTS:
        raise ConfigError(f"hydra.launcher.mechanism={mechanism} is not allowed: one of auto, {', '.join(LAYOUTS)}")


def layout_for(mechanism: str, device_type: str) -> str:
    """The layout that `mechanism` means on a device of this type: auto is the scan on CUDA, where its
    CUDA graphs make it the fastest, and blockdiag elsewhere, where the scan's loop runs eager and
    slower than nn.LSTM's (docs/performance.md, Packed sweeps)."""
    if mechanism != "auto":
        return mechanism
    return "scan" if device_type == "cuda" else "blockdiag"


def pack_key(conf: TrainConfig) -> Optional[tuple]:
    """What the runs of one pack must share; None for a run that cannot be packed (an optimizer other
    than Adam: PackedAdam is the packed optimizer)."""
    if conf.optim.name is not OptimName.adam:
        return None
    task = build_task(conf.task)
    tc = conf.train
    return (task.seq_len, task.input_size, task.dataset, conf.cell.kind, conf.model.hidden, conf.model.layers,
            conf.model.max_chunk, tc.steps, tc.batch_size, tc.log_every, tc.eval_every, tc.eval_batch_size, tc.eval_test,
            tc.ckpt_every, conf.optim.weight_decay, repr(conf.data), conf.device, conf.deterministic)


def group(jobs: list[Job], pack: Optional[int], mechanism: str = DEFAULT_MECHANISM) -> list[tuple[list[int], bool]]:
    """Job indices cut into packs, each with whether it trains alone: jobs with equal `pack_key` in order
    of appearance, at most `pack` per pack (None: BEST_PACK of the layout and cell); a job that cannot be packed, or
    whose config is invalid, trains alone (`train_alone`, which reports its error as a run alone does)."""
    buckets: dict = {}
    packs: list[tuple[list[int], bool]] = []
    for i, job in enumerate(jobs):
        try:
            conf = to_objects(job.cfg)
            key, device = pack_key(conf), pick_device(conf.device).type
        except MftrnnError:
            key = None
        if key is None:
            packs.append(([i], True))
            continue
        bucket = buckets.setdefault(key, [])
        size = pack if pack is not None else BEST_PACK[layout_for(mechanism, device)][key[3].value]
        if not bucket or len(bucket[-1]) >= size:
            bucket.append([])
            packs.append((bucket[-1], False))
        bucket[-1].append(i)
    return packs


# ----------------------------------------------------------------------------------- one pack
class _RunLogs:
    """Each run's messages in its own log file (train.log) and on the console, prefixed by the run."""

    def __init__(self, jobs: list[Job]) -> None:
        self.handlers = []
        self.loggers = []
        for i, job in enumerate(jobs):
            handler = logging.FileHandler(job.log_file)
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            lg = logging.getLogger(f"mftrnn.pack.run{i}")
            lg.setLevel(logging.INFO)
            lg.addHandler(handler)
            self.handlers.append(handler)
            self.loggers.append(_Prefixed(lg, f"[{job.label or i}] "))

    def attach_root(self, i: int) -> logging.Handler:
        """While run i is prepared, the library's own messages go to its file too."""
        logging.getLogger().addHandler(self.handlers[i])
        return self.handlers[i]

    def close(self) -> None:
        for lg, handler in zip(self.loggers, self.handlers):
            lg.logger.removeHandler(handler)
            handler.close()


class _Prefixed(logging.LoggerAdapter):
    """A run's messages start with its label, so the console tells the runs of a pack apart."""

    def __init__(self, logger: logging.Logger, prefix: str) -> None:
        super().__init__(logger, {})
        self.prefix = prefix

    def process(self, msg, kwargs):
        return self.prefix + str(msg), kwargs


def train_pack(jobs: list[Job], mechanism: str = DEFAULT_MECHANISM) -> list[Outcome]:
    """Train the jobs (which share `pack_key`) as one pack in the layout `mechanism` names on their device
    (`layout_for`); one Outcome per job. Runs already complete
    return their summary; runs that resume from different steps train as separate packs, one after the
    other. A Stopped (interrupt) propagates, after every run of the pack has checkpointed."""
    logs = _RunLogs(jobs)
    outcomes: list[Optional[Outcome]] = [None] * len(jobs)
    preps: dict[int, Prepared] = {}
    splits_cache: dict = {}
    try:
        for i, job in enumerate(jobs):
            handler = logs.attach_root(i)
            try:
                done, prep = prepare(job.cfg, job.run_dir, splits_cache)
                if done is not None:
                    outcomes[i] = Outcome(summary=done)
                else:
                    preps[i] = prep
            except MftrnnError as exc:
                outcomes[i] = _fail(job, exc)
            finally:
                logging.getLogger().removeHandler(handler)
        by_step: dict[int, list[int]] = {}
        for i, prep in preps.items():
            by_step.setdefault(prep.step, []).append(i)
        parts = []  # (members, layout) of each pack to train
        for step, members in sorted(by_step.items()):
            layout = layout_for(mechanism, preps[members[0]].device.type)
            fit = _runs_that_fit(preps[members[0]], layout)
            n = -(-len(members) // fit)  # as few packs as fit, of sizes as even as possible (16: 8 + 8, not 14 + 2)
            cuts = [len(members) * j // n for j in range(n + 1)]
            if n > 1:
                log.info("%d runs do not fit the GPU's free memory together (at most %d): trained as %d packs of %s",
                         len(members), fit, n, " + ".join(str(b - a) for a, b in zip(cuts, cuts[1:])))
            parts += [(members[a:b], layout) for a, b in zip(cuts, cuts[1:])]
        tf32 = torch.backends.cuda.matmul.allow_tf32
        for members, layout in parts:
            if layout == "scan" and preps[members[0]].device.type == "cuda":
                # the scan's matmuls at the precision cuDNN's RNNs use (TF32 unless
                # torch.backends.cudnn.allow_tf32 is off), so a packed run computes as the same run alone does;
                # restored below for whatever this process trains after the pack
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
            try:
                results = _train_members([preps[i] for i in members], [jobs[i] for i in members],
                                         [logs.loggers[i] for i in members], layout)
            except Stopped:
                raise
            except Exception as exc:  # noqa: BLE001 - the pack's failure is each of its runs' failure
                log.exception("pack failed")
                results = [_fail(jobs[i], exc) for i in members]
            finally:
                torch.backends.cuda.matmul.allow_tf32 = tf32
            for i, res in zip(members, results):
                outcomes[i] = res
            if torch.cuda.is_available():
                # a graphed module refers to itself (make_graphed_callables patches its forward), so only the
                # cycle collector frees its graphs' memory: free it before the next pack measures what fits
                gc.collect()
                torch.cuda.empty_cache()
    finally:
        logs.close()
    return [o if o is not None else Outcome(kind="RuntimeError", message="not run", exit_code=1) for o in outcomes]


def _runs_that_fit(prep: Prepared, layout: str) -> int:
    """How many runs shaped as `prep` one pack of `layout` may hold on its device: for the scan on CUDA,
    `mftrnn.packed.runs_that_fit` of the device's free memory; otherwise no limit."""
    if layout != "scan" or prep.device.type != "cuda":
        return 1 << 30
    c = prep.conf
    return runs_that_fit(prep.task.seq_len, c.train.batch_size, c.model.hidden, c.model.layers,
                         torch.cuda.mem_get_info(prep.device)[0])


def _fail(job: Job, exc: BaseException) -> Outcome:
    record_failure(job.run_dir, exc)
    return Outcome.failed(exc)


@torch.no_grad()
def evaluate_pack(packed: Pack, preps: list[Prepared], data: list[Optional[tuple]], batch_size: int,
                  noise_seeds: list[int], device: torch.device) -> list[Optional[dict]]:
    """Each run's mean cross-entropy and accuracy on its split (`data[k]` = (x, y), or None: not
    evaluated, zero input), as `mftrnn.train.evaluate` computes them for a run alone: the same batches
    and the same per-split noise seed."""
    was_training = packed.training
    packed.eval()
    k = len(preps)
    n = max(len(d[0]) for d in data if d is not None)
    gens = [torch.Generator(device=device).manual_seed(s) for s in noise_seeds]
    loss_sum = torch.zeros(k, device=device, dtype=torch.float64)
    correct = torch.zeros(k, device=device, dtype=torch.long)
    T, n_in = preps[0].task.seq_len, preps[0].task.input_size
    for start in range(0, n, batch_size):
        xs, ys = [], []
        b = min(batch_size, n - start)
        for r, d in enumerate(data):
            if d is None:
                xs.append(torch.zeros(T, b, n_in, device=device))
                ys.append(torch.zeros(b, dtype=torch.long, device=device))
            else:
                xs.append(preps[r].task.sequences(d[0][start:start + b], gens[r]))
                ys.append(d[1][start:start + b])
        y = torch.stack(ys)  # (K, b)
        logits = packed(packed.pack_inputs(xs))  # (K, b, C)
        ce = F.cross_entropy(logits.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b)
        loss_sum += ce.double().sum(1)
        correct += (logits.argmax(-1) == y).sum(1)
    packed.train(was_training)
    out = []
    for r, d in enumerate(data):
        m = max(len(d[0]), 1) if d is not None else 1
        out.append(None if d is None else {"loss": loss_sum[r].item() / m, "acc": correct[r].item() / m})
    return out


def _train_members(preps: list[Prepared], jobs: list[Job], logs: list[logging.Logger], layout: str) -> list[Outcome]:
    """Train runs that start at the same step, as one packed module of `layout` (mftrnn.packed.LAYOUTS), to
    the end."""
    k = len(preps)
    conf0, device = preps[0].conf, preps[0].device
    where = str(device) + (f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']})"
                           if device.type == "cuda" and "CUDA_VISIBLE_DEVICES" in os.environ else "")
    # CPU holders of each run's standalone state: checkpoints are written from them
    opts = [torch.optim.Adam(p.model.parameters(), lr=p.conf.optim.lr, weight_decay=conf0.optim.weight_decay)
            for p in preps]
    for p, opt in zip(preps, opts):
        if p.state is not None:
            p.model.load_state_dict(p.state["model"])
            opt.load_state_dict(p.state["optimizer"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    packed = LAYOUTS[layout]([p.model for p in preps]).to(device)
    popt = PackedAdam(packed, [p.conf.optim.lr for p in preps], weight_decay=conf0.optim.weight_decay)
    step = preps[0].step
    if step > 0:  # Adam's moments of every run into the packed optimizer
        m_all, v_all = popt.moments()
        for r, (p, opt) in enumerate(zip(preps, opts)):
            params = dict(p.model.named_parameters())
            packed.merge(m_all, r, {key: opt.state[params[key]]["exp_avg"] for key in m_all})
            packed.merge(v_all, r, {key: opt.state[params[key]]["exp_avg_sq"] for key in v_all})
        popt.step_count = step
    shape = (preps[0].task.seq_len, conf0.train.batch_size, preps[0].task.input_size)  # (T, B, n_in) of a run
    sample = packed.pack_inputs([torch.zeros(shape, device=device)] * k)
    how = capture_training(packed, sample)
    del sample
    for lg in logs:
        lg.info("packed with %d run(s) in one %s module (%s layout, %s, hidden %d each) on %s", k,
                conf0.cell.kind.value, layout, how, conf0.model.hidden, where)
    on_device: dict = {}
    splits = []
    for p in preps:  # one copy on the device per distinct data
        if id(p.splits) not in on_device:
            on_device[id(p.splits)] = p.splits.to(device)
        splits.append(on_device[id(p.splits)])
    samplers = [BatchSampler(len(s.train_x), seed=p.conf.seed, device=device) for p, s in zip(preps, splits)]
    noises = [torch.Generator(device=device).manual_seed(p.conf.seed + 1) for p in preps]
    for p, sampler, noise in zip(preps, samplers, noises):
        if p.state is not None:
            sampler.load_state_dict(p.state["sampler"])
            noise.set_state(p.state["noise"])
    trackers = [open_tracker(p, job.run_dir) for p, job in zip(preps, jobs)]
    exit_code = 1
    try:
        with StopSignals() as stop:
            outcomes = _loop(preps, jobs, logs, packed, popt, opts, splits, samplers, noises, trackers, step, stop)
        if device.type == "cuda":  # what `mftrnn.packed.runs_that_fit` budgets for
            for lg in logs:
                lg.info("peak GPU memory of the pack: %.1f GiB", torch.cuda.max_memory_allocated(device) / 2**30)
        exit_code = 0
    except Stopped:
        exit_code = 0
        raise
    finally:
        for tracker in trackers:
            tracker.finish(exit_code)
    return outcomes


def _loop(preps, jobs, logs, packed: Pack, popt: PackedAdam, opts, splits, samplers, noises,
          trackers: list[Tracker], step: int, stop: StopSignals) -> list[Outcome]:
    k = len(preps)
    conf0, device = preps[0].conf, preps[0].device
    tc = conf0.train
    T, n_in, B = preps[0].task.seq_len, preps[0].task.input_size, tc.batch_size
    hooks = TestHooks()
    clips = torch.tensor([p.conf.optim.clip if p.conf.optim.clip is not None else math.inf for p in preps],
                         dtype=torch.float64, device=device)
    cap_list = [p.conf.optim.candidate_norm_cap for p in preps]
    caps = None if all(c is None for c in cap_list) else torch.tensor(
        [c if c is not None else math.inf for c in cap_list], dtype=torch.float64, device=device)
    alive = [True] * k
    alive_dev = torch.ones(k, dtype=torch.bool, device=device)
    outcomes: list[Optional[Outcome]] = [None] * k
    best_val = [p.best_val for p in preps]
    t_start = [time.perf_counter() - p.elapsed for p in preps]

    def zeros():
        return torch.zeros(k, 4, device=device, dtype=torch.float64)  # per run: loss sum, correct, examples, grad-norm sum

    window, window_steps = zeros(), 0
    first_bad = torch.full((k,), -1, device=device, dtype=torch.long)
    for r, p in enumerate(preps):  # an interrupt cut this window: continue it
        if p.window:
            window[r] = torch.tensor(p.window["sums"], device=device, dtype=torch.float64)
            window_steps = p.window["steps"]
            first_bad[r] = p.window["first_bad"]
    warming = [r for r, p in enumerate(preps) if step < p.conf.optim.warmup_steps]  # runs still warming up
    zero_x = torch.zeros(T, B, n_in, device=device)
    zero_y = torch.zeros(B, dtype=torch.long, device=device)
    t_window = time.perf_counter()

    def save(r: int, at: int, wall: float, cut: Optional[dict] = None) -> None:
        params = packed.unpack(r)
        m_all, v_all = popt.moments()
        m_r, v_r = packed.split(m_all, r), packed.split(v_all, r)
        model, opt = preps[r].model, opts[r]
        model.load_state_dict({key: t.cpu() for key, t in params.items()})
        for key, param in model.named_parameters():
            opt.state[param] = {"step": torch.tensor(float(popt.step_count)), "exp_avg": m_r[key].cpu(),
                                "exp_avg_sq": v_r[key].cpu()}
        save_checkpoint(preps[r].conf_dict, model.state_dict(), opt.state_dict(), samplers[r], noises[r], at, wall,
                        preps[r].run_id, best_val[r], jobs[r].run_dir, cut)

    def end_diverged(r: int, at: int) -> None:
        p = preps[r]
        summary = base_summary(p.conf, p.conf_dict, p.task, at, time.perf_counter() - t_start[r], at, p.init_info)
        write_json(jobs[r].run_dir / SUMMARY_NAME, summary)
        trackers[r].summary(summary)
        trackers[r].finish(0)
        try:
            check_divergence(p.conf, summary, jobs[r].run_dir)
            outcomes[r] = Outcome(summary=summary)
        except MftrnnError as exc:
            outcomes[r] = _fail(jobs[r], exc)
        alive[r] = False
        alive_dev[r] = False
        popt.set_lr(r, 0.0)

    pbar = tqdm(total=tc.steps, initial=step, disable=not tc.progress, dynamic_ncols=True, unit="step",
                desc=f"pack of {k}: {conf0.task.name.value} {conf0.cell.kind.value}", file=sys.stderr)
    packed.train()
    with logging_redirect_tqdm():
        while step < tc.steps and any(alive):
            xs, ys = [], []
            for r in range(k):
                if alive[r]:
                    idx = samplers[r].next(B)
                    xs.append(preps[r].task.sequences(splits[r].train_x[idx], noises[r]))  # (T, B, n_in)
                    ys.append(splits[r].train_y[idx])
                else:
                    xs.append(zero_x)
                    ys.append(zero_y)
            y = torch.stack(ys)  # (K, B)
            logits = packed(packed.pack_inputs(xs))  # (K, B, C)
            # a run whose logits are non-finite gets no gradient from them (and so cannot reach the others)
            finite = torch.isfinite(logits).flatten(1).all(1)  # (K,)
            safe = torch.where(finite.view(k, 1, 1), logits, 0.0)
            losses = F.cross_entropy(safe.reshape(k * B, -1), y.reshape(-1), reduction="none").view(k, B).mean(1)
            popt.zero_grad(set_to_none=True)
            losses.sum().backward()  # run k's gradient is the gradient of its own mean loss
            loss = torch.where(finite, losses.detach(), torch.nan)
            # per-run clipping; a diverged run, or one non-finite at this step, gets a zero gradient
            norms = clip_per_run(packed, clips, ok=alive_dev & (first_bad < 0) & torch.isfinite(loss))
            step += 1
            with torch.no_grad():
                bad = ~torch.isfinite(loss) | ~torch.isfinite(norms)
                first_bad = torch.where((first_bad < 0) & bad & alive_dev, step, first_bad)
                popt.frozen = (first_bad >= 0) | ~alive_dev  # from its first bad step a run does not move
            for r in warming:
                if alive[r]:
                    popt.set_lr(r, preps[r].conf.optim.lr_at(step))
            warming = [r for r in warming if step < preps[r].conf.optim.warmup_steps]
            popt.step()
            if caps is not None:
                cap_candidate_per_run(packed, caps, frozen=popt.frozen)
            with torch.no_grad():  # weights beyond float32's safe range: diverged at this step
                first_bad = torch.where((first_bad < 0) & guard_params(packed) & alive_dev, step, first_bad)
                popt.frozen = (first_bad >= 0) | ~alive_dev
            window_steps += 1
            pbar.update(1)
            with torch.no_grad():
                window += torch.stack([loss.double() * B, (logits.argmax(-1) == y).sum(1).double(),
                                       torch.full((k,), float(B), device=device, dtype=torch.float64),
                                       norms], dim=1)
            hooks.after_step(step)
            if stop.signum is not None:
                sums = window.tolist()
                bad_at = first_bad.tolist()
                for r in range(k):
                    if alive[r]:
                        trackers[r].flush()
                        save(r, step, time.perf_counter() - t_start[r],
                             {"sums": sums[r], "steps": window_steps, "first_bad": int(bad_at[r])})
                pbar.close()
                stop.after_checkpoint(step, Path("<each run dir of the pack>"))

            checkpoint_now = step % tc.ckpt_every == 0
            if step % tc.log_every == 0 or checkpoint_now or step == tc.steps:
                sums = window.tolist()  # the one sync of the window
                bad_at = first_bad.tolist()
                dt = time.perf_counter() - t_window
                for r in range(k):
                    if not alive[r]:
                        continue
                    loss_sum, correct, count, gn_sum = sums[r]
                    record = {"train/loss": loss_sum / count, "train/acc": correct / count,
                              "train/grad_norm": gn_sum / window_steps, "lr": preps[r].conf.optim.lr_at(step),
                              "steps_per_s": window_steps / dt, "epoch": samplers[r].epoch}
                    trackers[r].log(record, step)
                    if not math.isfinite(loss_sum) or bad_at[r] >= 0:
                        logs[r].error("the loss became non-finite at step %d: the run diverged and stops here "
                                      "(summary.json: diverged=true); the other runs of the pack go on", bad_at[r])
                        end_diverged(r, int(bad_at[r]))
                live_loss = [s[0] / s[2] for s, a in zip(sums, alive) if a and math.isfinite(s[0])]
                if live_loss:
                    pbar.set_postfix(runs=sum(alive), best_loss=f"{min(live_loss):.3f}")
                window, window_steps = zeros(), 0

                if step % tc.eval_every == 0 and step < tc.steps and any(alive):
                    data = [(s.val_x, s.val_y) if a else None for s, a in zip(splits, alive)]
                    seeds = [p.conf.seed + EVAL_NOISE_SEED["val"] for p in preps]
                    for r, val in enumerate(evaluate_pack(packed, preps, data, tc.eval_batch_size, seeds, device)):
                        if val is not None:
                            best_val[r] = max(best_val[r], val["acc"])
                            trackers[r].log({"val/loss": val["loss"], "val/acc": val["acc"]}, step)
                            logs[r].info("step %d: val loss %.4f acc %.4f", step, val["loss"], val["acc"])
                    if tc.eval_test:
                        data = [(s.test_x, s.test_y) if a else None for s, a in zip(splits, alive)]
                        seeds = [p.conf.seed + EVAL_NOISE_SEED["test"] for p in preps]
                        for r, test in enumerate(evaluate_pack(packed, preps, data, tc.eval_batch_size, seeds, device)):
                            if test is not None:
                                trackers[r].log({"test/loss": test["loss"], "test/acc": test["acc"]}, step)
                if checkpoint_now and step < tc.steps:
                    for r in range(k):
                        if alive[r]:
                            trackers[r].flush()
                            save(r, step, time.perf_counter() - t_start[r])
                t_window = time.perf_counter()
    pbar.close()

    # the final evaluation of every run still alive: training subset, val and test, as a run alone
    live = [r for r in range(k) if alive[r]]
    if live:
        finals = {}
        for split in ("train", "val", "test"):
            data = [final_splits(p.conf, s)[split] if alive[r] else None for r, (p, s) in enumerate(zip(preps, splits))]
            seeds = [p.conf.seed + EVAL_NOISE_SEED[split] for p in preps]
            finals[split] = evaluate_pack(packed, preps, data, tc.eval_batch_size, seeds, device)
        for r in live:
            p = preps[r]
            wall = time.perf_counter() - t_start[r]
            summary = base_summary(p.conf, p.conf_dict, p.task, step, wall, None, p.init_info)
            best_val[r] = add_final(summary, {s: finals[s][r] for s in finals}, best_val[r], trackers[r])
            save(r, step, wall)
            logs[r].info("done: %d steps, val acc %.4f, test acc %.4f (%s)", step, summary["val_acc"],
                         summary["test_acc"], jobs[r].run_dir / SUMMARY_NAME)
            write_json(jobs[r].run_dir / SUMMARY_NAME, summary)
            trackers[r].summary(summary)
            (jobs[r].run_dir / FAILED_NAME).unlink(missing_ok=True)
            outcomes[r] = Outcome(summary=summary)
    return [o if o is not None else Outcome(kind="RuntimeError", message="not finished", exit_code=1) for o in outcomes]


# ----------------------------------------------------------------------------------- many packs
def _pin_worker(gpus) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus.get())


def train_alone(job: Job) -> Outcome:
    """A run that cannot be packed, trained as `mftrnn train` trains it, logging to its own file."""
    from mftrnn.train import train

    handler = logging.FileHandler(job.log_file)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    try:
        return Outcome(summary=train(job.cfg, job.run_dir))
    except Stopped:
        raise
    except MftrnnError as exc:
        return Outcome.failed(exc)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _train_group(jobs: list[Job], alone: bool, mechanism: str) -> list[Outcome]:
    return [train_alone(jobs[0])] if alone else train_pack(jobs, mechanism)


def _run_one_pack(jobs: list[Job], alone: bool, mechanism: str) -> list[Outcome]:
    """In a worker process: an interrupt becomes each run's outcome (exceptions of ours do not cross)."""
    try:
        return _train_group(jobs, alone, mechanism)
    except Stopped as exc:
        return [Outcome.failed(exc)] * len(jobs)


def _complete(job: Job) -> bool:
    from mftrnn.train import completed

    try:
        return completed(job.cfg, job.run_dir) is not None
    except MftrnnError:
        return False  # the worker reports it, as for any run


def run_packs(jobs: list[Job], pack: Optional[int], workers: int, mechanism: str = DEFAULT_MECHANISM) -> list[Outcome]:
    """Every job, in packs (`group`) of the layout `mechanism` (mftrnn.packed.LAYOUTS); with workers > 1,
    one process per GPU (`workers` GPUs from CUDA_VISIBLE_DEVICES), each training one pack at a time;
    else the packs one after the other here."""
    check_mechanism(mechanism)
    packs = group(jobs, pack, mechanism)
    for n, (members, alone) in enumerate(packs):
        log.info("pack %d: %d run(s)%s: %s", n, len(members), " (trained alone: not packable)" if alone else "",
                 ", ".join(str(jobs[i].run_dir) for i in members))
    outcomes: list[Optional[Outcome]] = [None] * len(jobs)

    def here(these: list[tuple[list[int], bool]]) -> None:  # packs trained (or answered) in this process
        for members, alone in these:
            for i, res in zip(members, _train_group([jobs[i] for i in members], alone, mechanism)):
                outcomes[i] = res

    if workers > 1:  # packs with nothing left to train are answered here: no GPU worker starts for them
        done = [p for p in packs if all(_complete(jobs[i]) for i in p[0])]
        packs = [p for p in packs if p not in done]
        here(done)
        workers = min(workers, len(packs))
    if workers <= 1:
        here(packs)
        return outcomes  # type: ignore[return-value]
    import multiprocessing as mp

    from mftrnn.gpus import visible_gpus

    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    gpus = ctx.Queue()
    for gpu in visible_gpus()[:workers]:
        gpus.put(gpu)
    # each worker takes one GPU for its life, and trains one pack at a time
    with ctx.Pool(workers, initializer=_pin_worker, initargs=(gpus,)) as pool:
        results = [pool.apply_async(_run_one_pack, ([jobs[i] for i in members], alone, mechanism))
                   for members, alone in packs]
        for (members, _), res in zip(packs, results):
            for i, out in zip(members, res.get()):
                outcomes[i] = out
    return outcomes  # type: ignore[return-value]
