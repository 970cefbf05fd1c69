"""`mftrnn report`: labels by what differs, seeds as one group, the trainability fit, and the smoke of
every reproduction experiment (make reproduce-smoke) through the installed command."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from conftest import DATA, MFTRNN, REPO, TINY, run_cli
from mftrnn.report import (Run, differing, fit_c, generalization_table, groups, independent, label, linked_keys,
                           load_runs)


def fake(seed: int, pad: int, init: str = "chrono", acc: float = 0.5) -> Run:
    config = {"seed": seed, "task.name": "padded_mnist", "task.pad": pad, "cell.kind": "lstm", "init.scheme": init,
              "train.steps": 100, "wandb.mode": "disabled"}
    if init == "meanfield":
        config["init.gates.f.mu"] = 1.0
    summary = {"seq_len": 28 + pad, "test_acc": acc, "train_acc": acc + 0.01, "diverged": False}
    return Run(Path(f"/runs/{seed}-{pad}"), summary, [{"step": 50, "val/acc": acc}], config)


def test_runs_are_labelled_by_what_differs_and_seeds_are_one_group():
    # the sweep `seed=0,1 task.pad=10,100`: two groups of two seeds, not four identical entries
    runs = [fake(s, p) for s in (0, 1) for p in (10, 100)]
    assert differing(runs) == ["task.pad"]
    grouped = groups(runs)
    assert list(grouped) == ["task.pad=10", "task.pad=100"]
    assert all(len(members) == 2 for members in grouped.values())
    assert label(runs[0], ["cell.kind", "init.scheme"]) == "cell=lstm, init=chrono"
    # a key that a run's task does not have (task.repeats of padded MNIST) is left out of its label
    assert label(runs[0], ["cell.kind", "task.repeats"]) == "cell=lstm"


def test_a_key_that_follows_an_axis_is_linked_not_a_third_axis():
    # the LSTM heat map: f.mu and g.sigma swept, i.mu = -f.mu set by the preset
    runs = []
    for mu in (0.0, 3.0):
        for sigma in (0.5, 2.0):
            r = fake(0, 500, "meanfield")
            r.config.update({"init.gates.f.mu": mu, "init.gates.i.mu": -mu, "init.gates.g.sigma": sigma})
            runs.append(r)
    keys = ["init.gates.f.mu", "init.gates.g.sigma", "init.gates.i.mu"]
    assert independent(runs, keys) == ["init.gates.f.mu", "init.gates.g.sigma"]
    assert differing(runs) == ["init.gates.f.mu", "init.gates.g.sigma"]  # and no label says i.mu
    (key, axis, values), = linked_keys(runs, "init.gates.f.mu", "init.gates.g.sigma", [0.0, 3.0], [0.5, 2.0])
    assert (key, axis, values.tolist()) == ("init.gates.i.mu", "x", [-0.0, -3.0])
    runs[0].config["init.gates.i.mu"] = 5.0  # no longer a function of f.mu: not linked
    assert linked_keys(runs, "init.gates.f.mu", "init.gates.g.sigma", [0.0, 3.0], [0.5, 2.0]) == ()


def test_a_groups_keys_count_only_within_one_choice():
    # meanfield has init.gates.*, chrono has not: the runs differ in init, not in the gates
    assert differing([fake(0, 10, "chrono"), fake(0, 10, "meanfield")]) == ["init.scheme"]


def test_a_key_some_runs_lack_does_not_label_them():
    # runs recorded before a config key existed (init.isometry) beside runs that hold it: not a label
    old, new = fake(0, 10, "critical"), fake(0, 100, "critical")
    new.config["init.isometry"] = "auto"
    assert differing([old, new]) == ["task.pad"]
    new2, new3 = fake(1, 10, "critical"), fake(1, 10, "critical")
    new2.config["init.isometry"], new3.config["init.isometry"] = "phase", "auto"
    # where the runs that hold it disagree, it labels them
    assert differing([old, new, new2, new3]) == ["init.isometry", "task.pad"]


def test_critical_runs_are_labelled_by_the_family_they_ran(tmp_path):
    # a run recorded before init.isometry existed ran the Haar family: it groups with isometry=gain runs,
    # whatever write they recorded (the Haar family does not use it); a phase run is told apart
    runs = [({"init": {"scheme": "critical"}}, {}),
            ({"init": {"scheme": "critical", "isometry": "gain", "write": 8.0}}, {"spec": {"isometry": "gain"}}),
            ({"init": {"scheme": "critical", "isometry": "auto", "write": 30.0}}, {"spec": {"isometry": "phase"}})]
    for i, (init, solution) in enumerate(runs):
        d = tmp_path / f"run{i}"
        d.mkdir()
        config = {"seed": i % 2, "cell": {"kind": "gru"}, "task": {"name": "padded_mnist", "pad": 10}, **init}
        (d / "summary.json").write_text(json.dumps({"config": config, "init_solution": solution, "test_acc": 0.5}))
        (d / "metrics.jsonl").write_text(json.dumps({"step": 1, "val/acc": 0.5}) + "\n")
    loaded = load_runs([tmp_path])
    assert differing(loaded) == ["init.isometry"]
    assert sorted(len(m) for m in groups(loaded).values()) == [1, 2]
    assert "init.write" not in loaded[0].config and loaded[2].config["init.write"] == 30.0


def test_generalization_table_has_mean_and_std_over_seeds():
    table = generalization_table([fake(0, 10, acc=0.5), fake(1, 10, acc=0.7)])
    row = table.splitlines()[2]
    assert "60.0 %" in row and "± 14.1" in row and "| 2 |" in row


def test_fit_c_separates_trainable_from_not():
    xi = np.array([10.0, 100.0, 1000.0, np.inf])
    trainable = np.array([False, False, True, True])
    c, frac = fit_c(trainable, xi, T=500)
    assert frac == 1.0 and 500 / 1000 <= c < 500 / 100
    c, frac = fit_c(np.array([False, False]), np.array([10.0, 20.0]), T=500)  # nothing trains: c > 0 still
    assert frac == 1.0 and c > 0


def test_report_of_a_real_sweep(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    res = run_cli("train", "-m", *TINY, "seed=0,1", "task.pad=5,10", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stderr[-2000:]
    rep = run_cli("report", str(sweep), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 0, rep.stderr[-2000:]
    written = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert written["runs"] == 4 and written["differing"] == ["task.pad"]
    assert set(written["figures"]) == {"curves", "length"}
    assert all((tmp_path / "rep" / f).stat().st_size > 10_000 for f in written["figures"].values())
    assert "| task.pad=10 | 2 |" in (tmp_path / "rep" / "report.md").read_text()
    bad = run_cli("report", str(tmp_path / "nothing-here"))
    assert bad.returncode != 0 and "does not exist" in bad.stderr


def test_reproduce_smoke(tmp_path, data_root):
    """Every experiment preset at scale=smoke, packed, then every report: the figures (a)-(d), the
    generalization table (e) and the drive ablation (f) exist."""
    env = {**os.environ, "MFTRNN_DATA": str(DATA), "REPRODUCE_ROOT": str(tmp_path), "MFTRNN": str(MFTRNN)}
    res = subprocess.run(["bash", str(REPO / "scripts" / "reproduce.sh"), "smoke"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    fig = tmp_path / "figures"
    for name in ("trainability_length.png", "heatmap_lstm_map.png", "heatmap_gru_map.png", "curves_mnist_curves.png",
                 "curves_cifar10_curves.png", "curves_repeated_pixel_curves.png", "theory_lstm_critical_spectrum.png",
                 "diagnose_gru_critical_trained.png", "generalization.md", "drive_ablation_curves.png"):
        assert (fig / name).exists(), name
    # the drive ablation's five arms, both cells: the run dirs name the arm, the summaries the drive
    ablation = sorted((tmp_path / "sweeps" / "drive_ablation").rglob("summary.json"))
    assert len(ablation) == 10 and {p.parent.parent.name.split(",")[0] for p in ablation} == {
        "arm=critical", "arm=chrono", "arm=chrono_driven", "arm=critical_quiet", "arm=standard_driven"}
    drives = {p.parent.parent.parent.name + "/" + p.parent.parent.name.split(",")[0]:
              json.loads(p.read_text())["init_drive"] for p in ablation}
    for cell in ("lstm", "gru"):  # chrono and standard with the drive init=critical chose, critical with its own
        chosen = drives[f"{cell}-critical/arm=critical"]
        assert chosen["source"] == "theory" and chosen["gates"] > 1
        for arm in (f"{cell}-chrono/arm=chrono_driven", f"{cell}-standard/arm=standard_driven"):
            assert drives[arm]["gates"] == chosen["gates"] and drives[arm]["source"].startswith("theory")
        assert drives[f"{cell}-critical/arm=critical_quiet"]["gates"] == 0.1
        assert drives[f"{cell}-chrono/arm=chrono"]["source"] == "own"
    heat = json.loads((fig / "heatmap_lstm.json").read_text())["map"]
    assert heat["runs"] == 4 and 0 <= heat["fraction_correct_untied"] <= 1 and "fraction_correct_tied" in heat
    assert heat["linked"] == {"init.gates.i.mu": "with x"}  # the preset's i.mu = -f.mu moves the theory too
    table = (fig / "generalization.md").read_text()
    assert "task=cifar10" in table and "task=unrolled_mnist" in table and "task=repeated_pixel" in table
    # a second run (as after a time limit) repeats no finished step: only the reports run again
    (fig / "trainability_length.png").unlink()
    again = subprocess.run(["bash", str(REPO / "scripts" / "reproduce.sh"), "smoke"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    ran = [line for line in again.stdout.splitlines() if line.startswith("== ")]
    assert sum("finished before, skipped" in line for line in ran) == 7 + 4 + 2, ran  # sweeps, theory, diagnose
    assert not any(line.startswith(("== sweep ", "== theory ", "== diagnose ")) for line in ran), ran
    assert (fig / "trainability_length.png").exists()
