"""`mftrnn bench`: training steps/s of the runner against a bare cuDNN loop on the same shapes.

The bare loop is the floor of what a training step costs: one fixed random batch already on the
device, nn.LSTM/nn.GRU forward, linear head, cross-entropy, backward, Adam; nothing else. The
runner is `mftrnn train` itself (task built on the device from uint8 MNIST, gradient clipping,
logging, checkpoints off the timed path), timed by its own per-window steps/s after a warm-up
window. Both run in one process, bare / runner / bare, so the ratio is measured under the same
conditions; the runner must reach >= 90% of the bare loop.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from mftrnn.packed import LAYOUTS


def bare_loop(cell: str, steps: int, warmup: int, seq_len: int, batch: int, input_size: int, hidden: int,
              device: torch.device) -> float:
    """Steps/s of forward + backward + Adam on one fixed batch (T, B, n_in), after `warmup` steps."""
    torch.backends.cudnn.deterministic = False
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(False)
    torch.manual_seed(0)
    rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(input_size, hidden).to(device)
    head = nn.Linear(hidden, 10).to(device)
    opt = torch.optim.Adam(list(rnn.parameters()) + list(head.parameters()), lr=1e-3)
    x = torch.rand(seq_len, batch, input_size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        out, _ = rnn(x)
        loss = nn.functional.cross_entropy(head(out[-1]), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return steps_per_s(step, steps, warmup, device)


def steps_per_s(step, steps: int, warmup: int = 0, device: torch.device = torch.device("cuda")) -> float:
    """Calls per second of `step()` over `steps` calls, after `warmup` untimed ones; the device is
    synchronized before and after the timed calls, so queued GPU work is counted."""
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps / (time.perf_counter() - t0)


def _runner_configs(cell: str, steps: int, window: int, pad: int, batch: int, hidden: int, device: str,
                    extra: list[str], seeds: list[int]) -> list:
    """`mftrnn train` configs of the timed runs: padded MNIST (rows, T = 28 + pad), steps + window steps
    logged every `window`, no evaluation or checkpoint on the way, one per seed."""
    from hydra import compose, initialize_config_module

    base = [f"cell={cell}", "task=padded_mnist", f"task.pad={pad}", f"model.hidden={hidden}",
            f"train.batch_size={batch}", f"train.steps={steps + window}", f"train.log_every={window}",
            f"train.eval_every={10**9}", f"train.ckpt_every={10**9}", "train.progress=false",
            "wandb.mode=disabled", f"device={device}", *extra]
    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        return [compose(config_name="train", overrides=base + [f"seed={s}"]) for s in seeds]


def _logged_rate(metrics: Path, window: int) -> tuple[float, float]:
    """(steps/s, last logged training loss) from a run's metrics.jsonl: the rate over every logged window
    but the first (warm-up), combined as total steps / total time."""
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    windows = [r for r in records if "steps_per_s" in r][1:]
    return window * len(windows) / sum(window / r["steps_per_s"] for r in windows), windows[-1]["train/loss"]


def runner(cell: str, steps: int, window: int, pad: int, batch: int, hidden: int, device: str,
           deterministic: bool, extra: list[str]) -> tuple[float, float]:
    """(steps/s, last training loss) of `mftrnn train` on padded MNIST (rows, T = 28 + pad), seed 0, from
    its metrics.jsonl."""
    from mftrnn.train import train

    (cfg,) = _runner_configs(cell, steps, window, pad, batch, hidden, device,
                             [f"deterministic={str(deterministic).lower()}", *extra], [0])
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp))
        return _logged_rate(Path(tmp) / "metrics.jsonl", window)


def packed_runner(cell: str, steps: int, window: int, pad: int, batch: int, hidden: int, device: str, k: int,
                  extra: list[str], mechanism: str) -> tuple[float, float]:
    """Steps/s of k `mftrnn train` runs (seeds 0 .. k-1) trained as one pack of the layout `mechanism`
    (mftrnn/packed_train.py, as hydra/launcher=packed does): (steps/s, last training loss) from run 0's
    metrics.jsonl, whose seed, data and init are those of `runner`'s run. Each step advances all k runs:
    runs/hour scale with k x steps/s."""
    from mftrnn.packed_train import Job, train_pack

    cfgs = _runner_configs(cell, steps, window, pad, batch, hidden, device, extra, list(range(k)))
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [Job(cfg, Path(tmp) / f"run{s}", Path(tmp) / f"run{s}.log") for s, cfg in enumerate(cfgs)]
        for job in jobs:
            job.run_dir.mkdir()
        failed = [o.message for o in train_pack(jobs, mechanism) if o.kind is not None]
        if failed:
            raise RuntimeError(f"packed bench run failed: {failed[0]}")
        return _logged_rate(jobs[0].run_dir / "metrics.jsonl", window)


def bench_packed(a) -> None:
    """`mftrnn bench --packed 1,2,4,8`: runs/hour of packs of k runs against one run at a time (the runner
    of the default mode, `mftrnn train` itself), measured side by side in each round."""
    packs = [int(x) for x in a.packed.split(",")]
    print(f"bench packed ({a.mechanism}): {a.cell} H={a.hidden}, T={28 + a.pad}, B={a.batch}, packs {packs}, {a.steps} timed steps "
          f"x {a.rounds} rounds on {a.device}", flush=True)
    rounds, losses = [], []
    for r in range(a.rounds):  # interleaved, as the other mode: ratios from measurements side by side
        # the baseline: one run at a time, as `mftrnn train` trains it (deterministic=true, its default)
        alone, loss = runner(a.cell, a.steps, a.warmup, a.pad, a.batch, a.hidden, a.device, True, a.overrides)
        got = {k: packed_runner(a.cell, a.steps, a.warmup, a.pad, a.batch, a.hidden, a.device, k, a.overrides,
                                a.mechanism) for k in packs}
        sps = {k: v[0] for k, v in got.items()}
        # run 0 of every pack is the run alone: its last loss tells whether packing changed the numbers
        losses.append({"alone": loss, **{str(k): v[1] for k, v in got.items()}})
        rounds.append({"alone": alone, **{str(k): v for k, v in sps.items()}})
        print(f"round {r + 1}: alone {alone:.2f} steps/s; " + ", ".join(
            f"K={k} {v:.2f} steps/s (x{k * v / alone:.2f} runs/h)" for k, v in sps.items()), flush=True)
    med = {k: statistics.median(x[str(k)] for x in rounds) for k in packs}
    med_alone = statistics.median(x["alone"] for x in rounds)
    gain = {k: statistics.median(k * x[str(k)] / x["alone"] for x in rounds) for k in packs}
    best = max(packs, key=lambda k: gain[k])
    dev = torch.device(a.device)
    result = {"mode": "packed", "mechanism": a.mechanism, "cell": a.cell, "hidden": a.hidden, "seq_len": 28 + a.pad, "batch": a.batch,
              "steps": a.steps, "packs": packs, "rounds": rounds, "alone_steps_per_s": med_alone,
              "median_steps_per_s": {str(k): v for k, v in med.items()},
              "runs_per_hour_ratio": {str(k): v for k, v in gain.items()}, "best_pack": best,
              "last_train_loss_run0": losses,
              "runs_per_hour": {"alone": 3600 * med_alone / 20000,  # at train.steps=20,000
                                **{str(k): 3600 * k * med[k] / 20000 for k in packs}},
              "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "command": "mftrnn bench " + " ".join(sys.argv[1:])}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'pack size K':<12} {'steps/s':>9} {'runs/h vs alone':>16}")
    print(f"{'alone':<12} {med_alone:9.2f} {1:16.2f}")
    for k in packs:
        print(f"{k:<12} {med[k]:9.2f} {gain[k]:16.2f}")
    print(f"best pack size: {best}; device: {result['device']}; written to {a.out}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="mftrnn bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=50, help="untimed steps first (also the runner's log window)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (bare, runner, runner non-deterministic)")
    p.add_argument("--pad", type=int, default=800, help="padding steps: T = 28 + pad (default 828)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--device", default=None, help="cuda (default) or cpu; without a GPU, name cpu explicitly")
    p.add_argument("--packed", default=None, metavar="K,K,...",
                   help="measure packed training (hydra/launcher=packed) instead: runs/hour of packs of these sizes "
                        "against one run at a time, e.g. --packed 1,2,4,8")
    p.add_argument("--mechanism", default="auto", choices=["auto", *LAYOUTS],
                   help="with --packed: the packing layout (hydra.launcher.mechanism; default auto: scan on a "
                        "GPU, blockdiag on the CPU)")
    p.add_argument("--out", type=Path, default=Path("outputs/bench/bench.json"))
    p.add_argument("overrides", nargs="*", help="extra `mftrnn train` overrides for the runner (e.g. data.root=...)")
    a = p.parse_args(argv)
    if a.device is None:
        if not torch.cuda.is_available():  # say so at once, before minutes of CPU work
            print("mftrnn bench: error: it measures training speed on a GPU, and this machine has none. "
                  "A small CPU version (a few seconds): mftrnn bench --device cpu --pad 50 --hidden 32 "
                  "--steps 20 --warmup 10 --rounds 1", file=sys.stderr)
            sys.exit(2)
        a.device = "cuda"
    if a.steps < 1 or a.warmup < 1 or a.rounds < 1 or a.pad < 0:
        p.error("--steps, --warmup and --rounds must be >= 1, --pad >= 0")
    if a.steps % a.warmup:
        a.steps += a.warmup - a.steps % a.warmup  # whole runner windows
    if a.packed:
        bench_packed(a)
        return
    dev = torch.device(a.device)
    seq_len = 28 + a.pad
    shape = dict(seq_len=seq_len, batch=a.batch, input_size=28, hidden=a.hidden, device=dev)
    print(f"bench: {a.cell} H={a.hidden}, T={seq_len}, B={a.batch}, {a.steps} timed steps x {a.rounds} rounds "
          f"on {dev}", flush=True)
    # Interleaved rounds: the GPU's speed drifts between minutes (seen: +-10% on an H100), so
    # each round's ratio compares measurements taken side by side, and the median ratio is reported.
    rounds = []
    for r in range(a.rounds):
        bare = bare_loop(a.cell, a.steps, a.warmup, **shape)
        det = runner(a.cell, a.steps, a.warmup, a.pad, a.batch, a.hidden, a.device, True, a.overrides)[0]
        fast = runner(a.cell, a.steps, a.warmup, a.pad, a.batch, a.hidden, a.device, False, a.overrides)[0]
        rounds.append({"bare": bare, "runner": det, "runner_nondeterministic": fast})
        print(f"round {r + 1}: bare {bare:.2f}, runner {det:.2f} ({det / bare:.3f}), "
              f"runner non-deterministic {fast:.2f} ({fast / bare:.3f}) steps/s", flush=True)
    med = {k: statistics.median(x[k] for x in rounds) for k in rounds[0]}
    ratio = statistics.median(x["runner"] / x["bare"] for x in rounds)
    ratio_fast = statistics.median(x["runner_nondeterministic"] / x["bare"] for x in rounds)
    result = {
        "cell": a.cell, "hidden": a.hidden, "seq_len": seq_len, "batch": a.batch, "steps": a.steps,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
        "rounds": rounds, "median_steps_per_s": med, "ratio": ratio, "ratio_nondeterministic": ratio_fast,
        "command": "mftrnn bench " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'loop (median of ' + str(a.rounds) + ' rounds)':<40} {'steps/s':>9} {'vs bare':>8}")
    print(f"{'bare nn.' + a.cell.upper() + ' + Adam':<40} {med['bare']:9.2f} {1:8.3f}")
    print(f"{'mftrnn train (deterministic=true)':<40} {med['runner']:9.2f} {ratio:8.3f}")
    print(f"{'mftrnn train (deterministic=false)':<40} {med['runner_nondeterministic']:9.2f} {ratio_fast:8.3f}")
    print(f"device: {result['device']}, torch {result['torch']}, cudnn {result['cudnn']}; written to {a.out}")
    if ratio < 0.9:
        print("WARNING: the runner is below 90% of the bare loop", file=sys.stderr)


if __name__ == "__main__":
    main()
