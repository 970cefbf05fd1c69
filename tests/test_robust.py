"""Interruptions and faults, through the installed command: nothing lost, one clear line."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from conftest import DATA, MFTRNN, TINY, TINY_RUN, run_cli
from mftrnn import checkpoint
from mftrnn.train import ETA_CHECK_S, KILL_ENV, SIGNAL_ENV

RESULTS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "best_val_acc", "steps")
LONG = [*TINY, "train.steps=40", "train.log_every=6", "train.ckpt_every=12", "train.eval_every=12"]


def read(path: Path):
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines()] if path.suffix == ".jsonl" else json.loads(text)


def one_error_line(res, command: str = "train") -> str:
    """The run failed with exactly one line on stderr in mftrnn's style (Hydra's log lines aside)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    assert res.returncode != 0
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"mftrnn {command}: "), lines[0]
    assert "Traceback" not in res.stderr and "HYDRA_FULL_ERROR" not in res.stderr
    return lines[0]


def same_results(a: Path, b: Path) -> None:
    sa, sb = read(a / "summary.json"), read(b / "summary.json")
    for key in RESULTS:
        assert sa[key] == sb[key], key
    strip = lambda rs: [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rs]  # noqa: E731
    assert strip(read(a / "metrics.jsonl")) == strip(read(b / "metrics.jsonl"))


@pytest.fixture(scope="module")
def whole(tmp_path_factory, data_root) -> Path:
    """The uninterrupted run every interrupted one must equal."""
    out = tmp_path_factory.mktemp("whole")
    assert run_cli("train", *LONG, f"hydra.run.dir={out}").returncode == 0
    return out


@pytest.mark.parametrize("sig,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_checkpoints_the_step_and_the_rerun_equals_the_uninterrupted_run(sig, code, whole, tmp_path):
    # step 17: mid log window (6) and between periodic checkpoints (12)
    res = run_cli("train", *LONG, f"hydra.run.dir={tmp_path}", env={SIGNAL_ENV: f"17:{sig}"})
    line = one_error_line(res)
    assert res.returncode == code
    assert line.startswith(f"mftrnn train: stopped: {sig} at step 17") and "run the same command again" in line
    assert torch.load(tmp_path / "ckpt_last.pt", weights_only=False)["step"] == 17
    assert "stopped: " + sig in (tmp_path / "train.log").read_text()
    again = run_cli("train", *LONG, f"hydra.run.dir={tmp_path}")
    assert again.returncode == 0 and "resumed from" in again.stdout + again.stderr
    same_results(whole, tmp_path)


def test_a_second_ctrl_c_stops_at_once(tmp_path, data_root):
    res = run_cli("train", *LONG, f"hydra.run.dir={tmp_path}", env={SIGNAL_ENV: "17:SIGINT,SIGINT"})
    line = one_error_line(res)
    assert res.returncode == 130 and "stopped at once" in line
    assert torch.load(tmp_path / "ckpt_last.pt", weights_only=False)["step"] == 12  # no checkpoint at 17


def test_sigterm_from_outside_stops_a_running_job(tmp_path, data_root):
    """A real signal from another process, as a scheduler sends it."""
    env = {**os.environ, "MFTRNN_DATA": str(DATA)}
    proc = subprocess.Popen([str(MFTRNN), "train", *TINY, "train.steps=1000000", "train.log_every=2",
                             f"hydra.run.dir={tmp_path}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    metrics = tmp_path / "metrics.jsonl"
    for _ in range(600):  # until the first records are on disk
        if metrics.exists() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    step = torch.load(tmp_path / "ckpt_last.pt", weights_only=False)["step"]
    assert f"stopped: SIGTERM at step {step}" in err and "Traceback" not in err


def test_usr2_under_a_scheduler_checkpoints_then_hands_over(tmp_path, data_root, monkeypatch):
    """submitit's SIGUSR2 handler (requeue) runs after the checkpoint at the step that got the signal."""
    from conftest import compose_train
    from mftrnn.train import train

    called = []

    def requeue(signum, frame):  # what submitit's checkpoint_and_try_requeue does last: exit
        called.append(signum)
        raise SystemExit(0)

    old = signal.signal(signal.SIGUSR2, requeue)
    monkeypatch.setenv(SIGNAL_ENV, "17:SIGUSR2")
    try:
        with pytest.raises(SystemExit):
            train(compose_train(LONG), tmp_path)
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert called == [signal.SIGUSR2]
    assert torch.load(tmp_path / "ckpt_last.pt", weights_only=False)["step"] == 17


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(whole, tmp_path):
    killed = run_cli("train", *LONG, f"hydra.run.dir={tmp_path}", env={KILL_ENV: "30"})
    assert killed.returncode == 17
    last, prev = tmp_path / "ckpt_last.pt", tmp_path / "ckpt_prev.pt"
    assert torch.load(last, weights_only=False)["step"] == 24 and torch.load(prev, weights_only=False)["step"] == 12
    os.truncate(last, last.stat().st_size // 3)
    res = run_cli("train", *LONG, f"hydra.run.dir={tmp_path}")
    out = res.stdout + res.stderr
    assert res.returncode == 0, res.stderr
    assert "ckpt_last.pt cannot be read" in out and "resumed from" in out and "ckpt_prev.pt at step 12" in out
    same_results(whole, tmp_path)


def test_no_intact_checkpoint_is_one_line_naming_the_files_and_the_fix(tmp_path, data_root):
    assert run_cli("train", *LONG, f"hydra.run.dir={tmp_path}", env={KILL_ENV: "30"}).returncode == 17
    for name in ("ckpt_last.pt", "ckpt_prev.pt"):
        os.truncate(tmp_path / name, 1000)
    line = one_error_line(run_cli("train", *LONG, f"hydra.run.dir={tmp_path}"))
    assert "ckpt_last.pt" in line and "ckpt_prev.pt" in line and "train.resume=never" in line
    assert (tmp_path / "failed.txt").exists()
    assert run_cli("train", *LONG, f"hydra.run.dir={tmp_path}", "train.resume=never").returncode == 0
    assert not (tmp_path / "failed.txt").exists()


def test_summary_and_metrics_cut_mid_write_are_repaired(whole, tmp_path):
    import shutil

    shutil.copytree(whole, tmp_path, dirs_exist_ok=True)
    summary, metrics = tmp_path / "summary.json", tmp_path / "metrics.jsonl"
    summary.write_text(summary.read_text()[:100])
    metrics.write_text(metrics.read_text()[:-30])
    res = run_cli("train", *LONG, f"hydra.run.dir={tmp_path}")
    out = res.stdout + res.stderr
    assert res.returncode == 0, res.stderr
    assert "summary.json cannot be read" in out and "dropped 1 damaged line" in out
    assert read(summary)["test_acc"] == read(whole / "summary.json")["test_acc"]


def test_a_full_disk_during_a_checkpoint_loses_nothing_older(tmp_path, monkeypatch):
    path = tmp_path / checkpoint.CKPT_NAME
    checkpoint.save_atomic({"step": 4, "model": {}}, path)
    checkpoint.save_atomic({"step": 8, "model": {}}, path)

    def full(obj, f):
        f.write(b"x" * 10)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.torch, "save", full)
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device.*kept: ckpt_last.pt, ckpt_prev.pt"):
        checkpoint.save_atomic({"step": 12, "model": {}}, path)
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 8 and checkpoint.load(tmp_path / checkpoint.PREV_NAME)["step"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_last.pt", "ckpt_prev.pt"]  # no temp file left


def test_a_full_disk_during_a_checkpoint_through_the_command(tmp_path, data_root):
    """A file-size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as on a full disk) stops the
    checkpoint at step 12 half-way; the one of step 8 stays the last."""
    import resource

    args = [*TINY, "model.hidden=64", "train.steps=16", f"hydra.run.dir={tmp_path}"]  # checkpoints every 4
    assert run_cli("train", *args, env={KILL_ENV: "10"}).returncode == 17
    size = (tmp_path / "ckpt_last.pt").stat().st_size
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))  # noqa: E731
    env = {**os.environ, "MFTRNN_DATA": str(DATA)}
    res = subprocess.run([str(MFTRNN), "train", *args], env=env, capture_output=True, text=True, timeout=300,
                         preexec_fn=limit)
    line = one_error_line(res)
    assert "could not write the checkpoint" in line and "kept: ckpt_last.pt, ckpt_prev.pt" in line
    assert torch.load(tmp_path / "ckpt_last.pt", weights_only=False)["step"] == 8
    assert not list(tmp_path.glob("*.tmp"))
    assert run_cli("train", *args).returncode == 0  # with room again, it resumes and finishes


@pytest.mark.parametrize("args,expected", [
    (["model.foo=1"], "Key 'foo' not in 'ModelConfig'"),
    (["model.hidden=abc"], "could not be converted to Integer"),
    (["init=nope"], "Available options in 'init': chrono, critical, meanfield, pytorch, standard"),
    (["task.pad=[1"], "no viable alternative"),
    (["cell=gru", "init.gates.f.mu=3"], "Per-gate values need init=meanfield (init=standard has none)"),
    (["cell=gru", "init=meanfield", "init.gates.f.mu=3"], "cell=gru has gates r, z, n"),
    (["cell=gru", "+init.gates.z.mu=3"], "per-gate values need init=meanfield (init=standard has none)"),
])
def test_composition_errors_are_one_line(args, expected, tmp_path):
    line = one_error_line(run_cli("train", *TINY_RUN, *args, f"hydra.run.dir={tmp_path}"))
    assert line.startswith("mftrnn train: error: ") and expected in line


def test_a_run_dir_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    line = one_error_line(run_cli("train", *TINY, f"hydra.run.dir={blocker}/run"))
    assert "cannot create or write" in line and "hydra.run.dir" in line


def test_a_failed_run_says_why_in_its_log_and_is_marked(tmp_path):
    res = run_cli("train", *TINY, "data.root=/nonexistent/mftrnn-data", f"hydra.run.dir={tmp_path}")
    line = one_error_line(res)
    assert "MFTRNN_DATA" in line
    assert line in (tmp_path / "train.log").read_text()
    assert "MFTRNN_DATA" in (tmp_path / "failed.txt").read_text()


def test_a_finished_run_reports_its_numbers_again(whole):
    res = run_cli("train", *LONG, f"hydra.run.dir={whole}")
    s = read(whole / "summary.json")
    assert res.returncode == 0
    assert f"run already complete: 40 steps, val acc {s['val_acc']:.4f}, test acc {s['test_acc']:.4f}" in res.stdout + res.stderr


def test_a_long_cpu_run_says_so_at_its_start(tmp_path, data_root):
    res = run_cli("train", *TINY, "train.steps=100000000", f"hydra.run.dir={tmp_path}",
                  env={"MFTRNN_ETA_CHECK_S": "0.5", SIGNAL_ENV: "400:SIGINT"})
    assert res.returncode == 130
    out = res.stdout + res.stderr
    assert "on the CPU this run needs about" in out and "device=cuda" in out
    assert ETA_CHECK_S == 10  # the default for everyone else


def test_bench_without_a_gpu_says_so_at_once(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: `mftrnn bench` measures it")
    res = run_cli("bench", cwd=tmp_path, timeout=60)
    line = one_error_line(res, "bench")
    assert "GPU" in line and "--device cpu" in line


def test_a_sweep_ends_with_a_table_of_its_runs(tmp_path, data_root):
    res = run_cli("train", "-m", *TINY, "cell=lstm,gru", f"hydra.sweep.dir={tmp_path}")
    assert res.returncode == 0, res.stderr
    table = (tmp_path / "sweep.md").read_text()
    assert table in res.stdout
    rows = [ln for ln in table.splitlines()[2:]]
    assert len(rows) == 2 and "| cell=gru |" in rows[0] and "| cell=lstm |" in rows[1]
    assert all("%" in r for r in rows)
