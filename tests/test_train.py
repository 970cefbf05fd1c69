"""End to end: the installed command on real MNIST, resume, divergence, sweeps, W&B."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY, compose_train, run_cli
from mftrnn.train import KILL_ENV, train


def read(path: Path):
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)


def test_tiny_run_through_the_installed_command_with_offline_wandb(tmp_path, data_root):
    res = run_cli("train", *TINY, "cell=gru", "init=chrono", "wandb.mode=offline", f"hydra.run.dir={tmp_path}")
    assert res.returncode == 0, res.stderr
    summary = read(tmp_path / "summary.json")
    assert summary["steps"] == 12 and summary["diverged"] is False
    for key in ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss", "wall_time_s"):
        assert isinstance(summary[key], float)
    records = read(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [4, 8, 12]  # one object per logged step
    assert {"train/loss", "train/acc", "train/grad_norm", "lr", "steps_per_s"} <= set(records[0])
    assert "val/acc" in records[1] and "test/acc" in records[2]
    init = torch.load(tmp_path / "init.pt")
    assert {"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "head.weight", "head.bias"} == set(init)
    assert init["rnn.weight_hh_l0"].shape == (3 * 16, 16)  # GRU: r, z, n
    assert (tmp_path / "ckpt_last.pt").exists() and (tmp_path / ".hydra" / "config.yaml").exists()
    assert list((tmp_path / "wandb").glob("offline-run-*")), "the offline W&B run must land in the run dir"


def test_resumed_run_equals_an_uninterrupted_one(tmp_path, data_root):
    """A run killed after step 10 (checkpoint at 8) and restarted ends exactly as one that never stopped."""
    args = [*TINY, "task.pad_value=noise", "train.steps=16"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run_cli("train", *args, f"hydra.run.dir={whole}").returncode == 0
    killed = run_cli("train", *args, f"hydra.run.dir={broken}", env={KILL_ENV: "10"})
    assert killed.returncode == 17 and not (broken / "summary.json").exists()
    assert torch.load(broken / "ckpt_last.pt", weights_only=False)["step"] == 8
    resumed = run_cli("train", *args, f"hydra.run.dir={broken}")
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout + resumed.stderr
    a, b = read(whole / "summary.json"), read(broken / "summary.json")
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "best_val_acc", "steps"):
        assert a[key] == b[key], key
    strip = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rs]  # noqa: E731
    assert strip(read(whole / "metrics.jsonl")) == strip(read(broken / "metrics.jsonl"))
    sa = torch.load(whole / "ckpt_last.pt", weights_only=False)["model"]
    sb = torch.load(broken / "ckpt_last.pt", weights_only=False)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_finished_run_is_not_redone_and_a_longer_one_continues(tmp_path, data_root):
    first = train(compose_train(TINY), tmp_path)
    again = train(compose_train(TINY), tmp_path)
    assert again == first
    longer = train(compose_train([*TINY, "train.steps=16"]), tmp_path)
    assert longer["steps"] == 16
    assert [r["step"] for r in read(tmp_path / "metrics.jsonl")] == [4, 8, 12, 16]


def test_resume_refuses_a_different_config(tmp_path, data_root):
    train(compose_train(TINY), tmp_path)
    res = run_cli("train", *TINY, "optim.lr=0.01", f"hydra.run.dir={tmp_path}")
    assert res.returncode == 2 and "different configuration" in res.stderr and "optim.lr" in res.stderr


def test_divergence_is_a_result_not_a_crash(tmp_path, data_root):
    args = [*TINY, "optim=sgd", "optim.lr=1e38", "optim.clip=null"]
    res = run_cli("train", *args, f"hydra.run.dir={tmp_path / 'a'}")
    assert res.returncode == 0 and "diverged" in res.stderr + res.stdout
    summary = read(tmp_path / "a" / "summary.json")
    assert summary["diverged"] is True and 1 <= summary["diverged_at"] <= 4 and summary["test_acc"] is None
    again = run_cli("train", *args, f"hydra.run.dir={tmp_path / 'a'}")  # a result: not trained again
    assert again.returncode == 0 and "already complete" in again.stdout + again.stderr
    res = run_cli("train", *args, "train.fail_on_divergence=true", f"hydra.run.dir={tmp_path / 'b'}")
    assert res.returncode == 3 and "non-finite" in res.stderr and "Traceback" not in res.stderr


def test_run_survives_wandb_being_unavailable(tmp_path, data_root):
    """Online mode with no API key and an unreachable server: W&B fails to start, the run does not."""
    env = {"WANDB_API_KEY": "", "WANDB_BASE_URL": "http://127.0.0.1:9", "HOME": str(tmp_path),
           "WANDB_CONFIG_DIR": str(tmp_path / "wb"), "WANDB_INIT_TIMEOUT": "10"}
    res = run_cli("train", *TINY, "wandb.mode=online", f"hydra.run.dir={tmp_path / 'run'}", env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "W&B is unavailable" in res.stdout + res.stderr
    assert read(tmp_path / "run" / "summary.json")["steps"] == 12


def test_sweep_dirs_are_deterministic_and_a_rerun_resumes(tmp_path, data_root):
    args = ["-m", *TINY, "task.pad=5,10", "init=standard,chrono", "seed=0", f"hydra.sweep.dir={tmp_path}"]
    res = run_cli("train", *args)
    assert res.returncode == 0, res.stderr
    runs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("summary.json"))
    common = "data.limit=256,init.drive.pairs=4,init.drive.population=500,model.hidden=16,task.pad={},train.batch_size=32"  # sorted overrides that matter
    assert runs == [f"padded_mnist/lstm-{init}/{common.format(pad)}/seed=0"
                    for init in ("chrono", "standard") for pad in (10, 5)]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")}
    res = run_cli("train", *args)
    assert res.returncode == 0 and res.stderr.count("already complete") + res.stdout.count("already complete") == 4
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("summary.json")} == before


def test_candidate_norm_cap_bounds_the_trained_block(tmp_path, data_root):
    """optim.candidate_norm_cap holds after every step: the trained candidate block's spectral norm is at
    most the cap (and is above it without the cap, so the bound did something)."""
    from mftrnn.cells import CANDIDATE
    from mftrnn.models import GATES
    from mftrnn.schema import CellKind

    def candidate_norm(run_dir: Path, cell: str) -> float:
        w = torch.load(run_dir / "ckpt_last.pt", weights_only=False)["model"]["rnn.weight_hh_l0"]
        j, h = GATES[CellKind(cell)].index(CANDIDATE[cell]), w.shape[1]
        return torch.linalg.matrix_norm(w[j * h:(j + 1) * h], ord=2).item()

    for cell in ("lstm", "gru"):
        args = [*TINY, f"cell={cell}", "init=critical", "optim.lr=0.05"]
        free, capped = tmp_path / f"{cell}-free", tmp_path / f"{cell}-capped"
        train(compose_train([*args, f"hydra.run.dir={free}"]), free)
        train(compose_train([*args, "optim.candidate_norm_cap=0.9", f"hydra.run.dir={capped}"]), capped)
        assert candidate_norm(free, cell) > 0.95
        assert candidate_norm(capped, cell) <= 0.9 + 1e-5
        assert read(capped / "summary.json")["config"]["optim"]["candidate_norm_cap"] == 0.9


def test_warmup_raises_the_learning_rate_linearly_then_holds_it(tmp_path, data_root):
    """optim.warmup_steps: step s uses lr · s / warmup until the warm-up ends; the logged rate is the last
    step's, and the weights move less than without it."""
    cold, warm = tmp_path / "cold", tmp_path / "warm"
    train(compose_train([*TINY, "optim.lr=0.01", f"hydra.run.dir={cold}"]), cold)
    train(compose_train([*TINY, "optim.lr=0.01", "optim.warmup_steps=8", f"hydra.run.dir={warm}"]), warm)
    logged = {r["step"]: r["lr"] for r in map(json.loads, (warm / "metrics.jsonl").read_text().splitlines())
              if "lr" in r}
    assert logged == {4: 0.005, 8: 0.01, 12: 0.01}  # TINY logs every 4 of 12 steps

    def moved(run_dir: Path) -> float:
        init = torch.load(run_dir / "init.pt")
        last = torch.load(run_dir / "ckpt_last.pt", weights_only=False)["model"]
        return sum(float((last[k] - v).abs().sum()) for k, v in init.items())

    assert moved(warm) < moved(cold)


def test_a_run_names_its_drive(tmp_path, data_root):
    """init.drive on chrono: the run dir (named by the overrides), the log, summary.json and W&B's config say
    which input scales the init wrote."""
    res = run_cli("train", *TINY, "cell=gru", "init=chrono", "init.drive.gates=5", "wandb.mode=offline", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run = next((tmp_path / "outputs" / "runs" / "padded_mnist" / "gru-chrono").glob("*init.drive.gates=5*/seed=0"))
    summary = read(run / "summary.json")
    drive = summary["init_drive"]
    assert drive["gates"] == 5 and drive["candidate"] is None and drive["source"] == "given"
    assert drive["gates_measured"] == pytest.approx(5, rel=0.1)  # 32 rows x 28 inputs of the r and z blocks
    assert summary["config"]["init"]["drive"]["gates"] == 5
    assert "drive: gates' input scale" in (run / "train.log").read_text()
    records = list((run / "wandb").glob("offline-run-*/run-*.wandb"))  # the offline run's record (its config inside)
    assert records and b"init_drive" in records[0].read_bytes() and b"gates_measured" in records[0].read_bytes()
