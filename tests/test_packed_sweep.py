"""hydra/launcher=packed through the installed command: each run of a pack ends as it would alone, has
the files of a run alone, resumes after a kill, and a diverged run does not take the pack down."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli
from mftrnn.train import KILL_ENV, SIGNAL_ENV

# 8 LSTM runs, in two packs of 4: two inits, two learning rates, two seeds in each pack; noise padding, so
# each run's padding comes from its own generator
SWEEP = [*TINY, "task.pad_value=noise", "train.steps=16", "optim.lr=0.001,0.01", "init=standard,critical", "seed=0,1",
         "optim.warmup_steps=12"]  # a warm-up that the kill (step 10) and the signal (step 6) below interrupt
PACKED = ["hydra/launcher=packed", "hydra.launcher.pack=4", "hydra.launcher.mechanism=scan"]  # auto: blockdiag on CPU
FILES = {"init.pt", "metrics.jsonl", "summary.json", "ckpt_last.pt", "ckpt_prev.pt", "train.log", ".hydra"}


def read(path: Path):
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)


def runs(sweep_dir: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(sweep_dir)): p.parent for p in sweep_dir.rglob("summary.json")}


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, data_root):
    """The same sweep run alone (Hydra's basic launcher, one process) and packed, in each layout."""
    root = tmp_path_factory.mktemp("sweeps")
    alone = run_cli("train", "-m", *SWEEP, f"hydra.sweep.dir={root / 'alone'}")
    assert alone.returncode == 0, alone.stderr[-2000:]
    packed = run_cli("train", "-m", *SWEEP, *PACKED, f"hydra.sweep.dir={root / 'packed'}")
    assert packed.returncode == 0, packed.stderr[-2000:]
    # the default, hydra.launcher.mechanism=auto, packs block-diagonally on the CPU
    blockdiag = run_cli("train", "-m", *SWEEP, "hydra/launcher=packed", "hydra.launcher.pack=4",
                        f"hydra.sweep.dir={root / 'blockdiag'}")
    assert blockdiag.returncode == 0, blockdiag.stderr[-2000:]
    return root, {"packed": packed, "blockdiag": blockdiag}


@pytest.mark.parametrize("layout,sweep", [("scan", "packed"), ("blockdiag", "blockdiag")])
def test_each_packed_run_equals_the_run_alone(sweeps, layout, sweep):
    root, results = sweeps
    alone, packed = runs(root / "alone"), runs(root / sweep)
    res = results[sweep]
    assert len(alone) == 8 and set(alone) == set(packed)
    assert (res.stdout + res.stderr).count("packed with 4 run(s)") == 8  # one line per run, two packs
    assert (res.stdout + res.stderr).count(f"({layout} layout") == 8
    for name in alone:
        a, b = read(alone[name] / "summary.json"), read(packed[name] / "summary.json")
        assert b["steps"] == 16 and b["diverged"] is False
        for key in ("train_loss", "val_loss", "test_loss"):
            assert math.isclose(a[key], b[key], rel_tol=1e-4), (name, key)
        for key in ("train_acc", "val_acc", "test_acc"):
            assert abs(a[key] - b[key]) <= 0.01, (name, key)
        ra, rb = read(alone[name] / "metrics.jsonl"), read(packed[name] / "metrics.jsonl")
        assert [r["step"] for r in ra] == [r["step"] for r in rb]
        for x, y in zip(ra, rb):
            assert math.isclose(x["train/loss"], y["train/loss"], rel_tol=1e-4), (name, x["step"])
            assert math.isclose(x["train/grad_norm"], y["train/grad_norm"], rel_tol=1e-3), (name, x["step"])
        ca = torch.load(alone[name] / "ckpt_last.pt", weights_only=False)
        cb = torch.load(packed[name] / "ckpt_last.pt", weights_only=False)
        for key, want in ca["model"].items():  # same weights, same keys: a packed run's checkpoint is a run's
            assert torch.allclose(cb["model"][key], want, rtol=1e-4, atol=1e-5), (name, key)
        assert ca["optimizer"]["state"].keys() == cb["optimizer"]["state"].keys()
        ia, ib = torch.load(alone[name] / "init.pt"), torch.load(packed[name] / "init.pt")
        assert ia.keys() == ib.keys() and all(torch.equal(ia[k], ib[k]) for k in ia)
        assert FILES <= {p.name for p in packed[name].iterdir()}
    assert (root / sweep / "sweep.md").exists()


def test_a_finished_sweep_starts_no_gpu_worker(sweeps, monkeypatch):
    """Re-running a finished sweep on several GPUs answers every run from its summary in the launcher's
    process: no worker process (each would import torch and take a GPU) is started."""
    import multiprocessing

    from conftest import compose_train
    from mftrnn.packed_train import Job, run_packs

    root, _ = sweeps
    jobs = []
    for d in sorted(runs(root / "packed").values()):
        overrides = [ln[2:].strip() for ln in (d / ".hydra" / "overrides.yaml").read_text().splitlines()
                     if ln.startswith("- ")]
        jobs.append(Job(compose_train(overrides), d, d / "train.log"))
    monkeypatch.setattr(multiprocessing, "get_context", lambda *a: pytest.fail("a worker process was started"))
    outcomes = run_packs(jobs, None, workers=2)
    assert [o.summary["steps"] for o in outcomes] == [16] * 8
    assert all(o.summary == read(job.run_dir / "summary.json") for o, job in zip(outcomes, jobs))


def test_a_killed_pack_resumes_to_the_same_result(sweeps, tmp_path):
    root, _ = sweeps
    broken = tmp_path / "broken"
    killed = run_cli("train", "-m", *SWEEP, *PACKED, f"hydra.sweep.dir={broken}", env={KILL_ENV: "10"})
    assert killed.returncode == 17
    again = run_cli("train", "-m", *SWEEP, *PACKED, f"hydra.sweep.dir={broken}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed from" in again.stdout + again.stderr
    whole, resumed = runs(root / "packed"), runs(broken)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rs]  # noqa: E731
    for name in whole:
        a, b = read(whole[name] / "summary.json"), read(resumed[name] / "summary.json")
        for key in ("train_loss", "val_loss", "test_loss", "val_acc", "test_acc", "steps"):
            assert a[key] == b[key], (name, key)
        assert strip(read(whole[name] / "metrics.jsonl")) == strip(read(resumed[name] / "metrics.jsonl"))


def test_a_diverged_run_is_recorded_and_the_pack_goes_on(tmp_path, data_root):
    res = run_cli("train", "-m", *TINY, "optim.lr=1e38,0.003", "hydra/launcher=packed", f"hydra.sweep.dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-2000:]
    found = {read(p / "summary.json")["config"]["optim"]["lr"]: read(p / "summary.json") for p in runs(tmp_path).values()}
    bad, good = found[1e38], found[0.003]
    assert bad["diverged"] is True and 1 <= bad["diverged_at"] <= 4 and bad["test_acc"] is None
    alone = run_cli("train", *TINY, "optim.lr=0.003", f"hydra.run.dir={tmp_path / 'alone'}")
    assert alone.returncode == 0
    ref = read(tmp_path / "alone" / "summary.json")
    assert good["diverged"] is False and good["steps"] == 12
    assert math.isclose(good["test_loss"], ref["test_loss"], rel_tol=1e-4)


def test_packed_runs_have_their_own_wandb_runs(tmp_path, data_root):
    res = run_cli("train", "-m", *TINY, "seed=0,1", "wandb.mode=offline", "hydra/launcher=packed",
                  f"hydra.sweep.dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-2000:]
    dirs = list(runs(tmp_path).values())
    assert len(dirs) == 2
    ids = set()
    for d in dirs:
        offline = list((d / "wandb").glob("offline-run-*"))
        assert len(offline) == 1, d
        ids.add(offline[0].name.rsplit("-", 1)[-1])
    assert len(ids) == 2


def test_shapes_that_differ_make_separate_packs(tmp_path, data_root):
    res = run_cli("train", "-m", *TINY, "task.pad=5,10", "optim=adam,sgd", "hydra/launcher=packed",
                  "hydra.launcher.pack=4", f"hydra.sweep.dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr
    assert out.count("packed with 1 run(s)") == 2  # the Adam runs, one per length (SGD runs train alone)
    assert len(runs(tmp_path)) == 4


def test_ctrl_c_checkpoints_every_run_of_the_pack(sweeps, tmp_path):
    root, _ = sweeps
    stopped = tmp_path / "stopped"
    res = run_cli("train", "-m", *SWEEP, *PACKED, f"hydra.sweep.dir={stopped}", env={SIGNAL_ENV: "6"})
    assert res.returncode == 130, res.stderr[-2000:]
    assert "stopped: SIGINT at step 6" in res.stderr and "Traceback" not in res.stderr
    ckpts = list(stopped.rglob("ckpt_last.pt"))
    # the first pack stopped at step 6, each of its runs with a checkpoint there; the sweep ended
    assert len(ckpts) == 4 and all(torch.load(c, weights_only=False)["step"] == 6 for c in ckpts)
    again = run_cli("train", "-m", *SWEEP, *PACKED, f"hydra.sweep.dir={stopped}")
    assert again.returncode == 0, again.stderr[-2000:]
    whole = runs(root / "packed")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rs]  # noqa: E731
    for name, d in runs(stopped).items():
        assert strip(read(whole[name] / "metrics.jsonl")) == strip(read(d / "metrics.jsonl")), name


def test_a_run_started_alone_continues_in_a_pack(tmp_path, data_root):
    """Checkpoints are a run alone's: 8 steps alone, then 16 in a pack, ends as 16 steps alone."""
    args = [*TINY, "train.steps=16"]
    whole = tmp_path / "whole"
    assert run_cli("train", *args, f"hydra.run.dir={whole}").returncode == 0
    sweep = tmp_path / "sweep"
    first = run_cli("train", "-m", *TINY, "train.steps=8", "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert first.returncode == 0, first.stderr[-2000:]
    more = run_cli("train", "-m", *args, "seed=0,1", "hydra/launcher=packed", f"hydra.sweep.dir={sweep}")
    assert more.returncode == 0, more.stderr[-2000:]
    assert "resumed from" in more.stdout + more.stderr
    done = {read(p / "summary.json")["seed"]: read(p / "summary.json") for p in runs(sweep).values()}
    ref = read(whole / "summary.json")
    assert done[0]["steps"] == 16
    for key in ("train_loss", "val_loss", "test_loss"):
        assert math.isclose(done[0][key], ref[key], rel_tol=1e-4), key


def test_a_bad_launcher_setting_is_refused_before_any_run(tmp_path, data_root):
    res = run_cli("train", "-m", *TINY, "seed=0,1", "hydra/launcher=packed", "hydra.launcher.mechanism=cudnn",
                  f"hydra.sweep.dir={tmp_path}")
    assert res.returncode != 0
    assert "hydra.launcher.mechanism=cudnn is not allowed: one of auto, scan, blockdiag" in res.stderr
    assert not runs(tmp_path)


def test_runs_that_do_not_fit_together_train_as_smaller_packs(tmp_path, data_root, monkeypatch, caplog):
    """Where the device's memory holds fewer runs than the pack (the scan on a GPU), the pack is trained as
    packs that fit, one after the other, and every run still ends as it would alone. The memory rule
    itself is mftrnn.packed.runs_that_fit (test_packed.py); here the device is the CPU, so the number of
    runs that fit is set."""
    import logging

    from conftest import compose_train
    from mftrnn import packed_train

    monkeypatch.setattr(packed_train, "_runs_that_fit", lambda prep, mechanism: 2)
    jobs = []
    for seed in range(3):
        run_dir = tmp_path / f"seed{seed}"
        run_dir.mkdir()
        cfg = compose_train([*TINY, f"seed={seed}", f"data.root={data_root}"])
        jobs.append(packed_train.Job(cfg, run_dir, run_dir / "train.log", label=f"#{seed}"))
    with caplog.at_level(logging.INFO):
        outcomes = packed_train.train_pack(jobs, "scan")
    assert "3 runs do not fit the GPU's free memory together (at most 2): trained as 2 packs of 1 + 2" in caplog.text
    assert all(o.kind is None and o.summary["steps"] == 12 for o in outcomes)
    logs = [(job.run_dir / "train.log").read_text() for job in jobs]
    assert "packed with 1 run(s)" in logs[0]
    assert ["packed with 2 run(s)" in t for t in logs] == [False, True, True]
