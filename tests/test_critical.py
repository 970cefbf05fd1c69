"""The critical initialization: the solver meets its conditions (docs/theory.md §10), the linearized tied
theory matches tied products, the cache is keyed by the solver's inputs, the network holds the solved
hyperparameters, and `mftrnn diagnose` tells critical from standard on a real network."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from conftest import TINY, compose_train, run_cli
from mftrnn.errors import ConfigError
from mftrnn.inits import (TaskShape, critical_spec, gate_block, initialize, layer_params, phase_limited_orthogonal_,
                          solve_critical)
from mftrnn.models import GATES, RNNClassifier
from mftrnn.schema import CellKind, ModelConfig, to_objects
from mftrnn.theory import closed, critical
from mftrnn.theory.critical import (CriticalSpec, keep_for_gain, predict, resolve_isometry, solve, solve_cached,
                                    tied_gain)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MFTRNN_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("steps,content,R", [(128, 28, 0.0), (1028, 28, 0.0), (784, 784, 0.1), (5028, 28, 1.0)])
def test_tied_solution_meets_its_conditions(cell, steps, content, R):
    sol = solve(CriticalSpec(cell, steps, content, R, gate_nu=0.1))
    op = sol.predictions["operating_point"]
    assert op["radius"] == pytest.approx(1.0, abs=1e-8)  # eq. (T34)
    assert sol.predictions["tied_linear"]["log10_rms_gain"] == pytest.approx(-0.5, abs=1e-6)  # eq. (T35)
    g = sol.gates
    if cell == "lstm":
        assert g["i"]["mu"] == -g["f"]["mu"] and op["write"] == pytest.approx(1 - op["keep"], abs=1e-9)
    assert all(v["rho"] == 0 for v in g.values()) and sol.orthogonal
    assert sol.predictions["unsaturated"]
    tl = sol.predictions["tied_linear"]
    assert tl["log10_min_singular"] < tl["log10_singular_mean"] < 0 < tl["log10_singular_std"]
    # the horizon of the informative part is longer than the task, in the theory that holds for tied nets
    assert sol.predictions["tied_linear"]["horizon"] is None


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_untied_solution_has_m1_one_and_a_tied_radius_above_one(cell):
    spec = CriticalSpec(cell, 1028, 28, 0.0, criterion="untied", gate_nu=0.1)
    sol = solve(spec)
    hp = sol.hyper()
    assert float(np.asarray(closed.m1(hp, closed.fixed_point(hp, 0.0), 0.0))) == pytest.approx(1.0, abs=1e-8)
    assert sol.predictions["operating_point"]["radius"] > 1.05  # eq. (T34): the tied product explodes
    assert sol.predictions["tied_linear"]["log10_rms_gain"] > 10


def test_longer_tasks_keep_more():
    f = [keep_for_gain(T, -0.5) for T in (100, 1000, 10_000, 78_400)]
    assert all(a < b for a, b in zip(f, f[1:]))
    # for T (1 - f) >> 1 the rms gain is (4 pi T f (1 - f))^(-1/4): T (1 - f) ~ 10^2 / (4 pi) = 7.96
    assert 78_400 * (1 - f[-1]) == pytest.approx(100 / (4 * math.pi), rel=0.02)


@pytest.mark.parametrize("orthogonal", [True, False])
def test_tied_gain_matches_powers_of_one_matrix(orthogonal):
    """Eq. (T36) against |J^n u|^2 for J = f I + c O, O Haar-orthogonal or Gaussian (n = 400 units)."""
    torch.manual_seed(0)
    n, f = 400, 0.97
    c = 1 - f
    o = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64))[0] if orthogonal else \
        torch.randn(n, n, dtype=torch.float64) / math.sqrt(n)
    j = f * torch.eye(n, dtype=torch.float64) + c * o
    u = torch.randn(n, 64, dtype=torch.float64)
    u /= u.norm(dim=0)
    for steps in (10, 100, 300):
        v = torch.linalg.matrix_power(j, steps) @ u
        measured = (v ** 2).sum(0).mean().item()
        assert measured == pytest.approx(tied_gain(f, c, steps), rel=0.15), steps


def test_phase_limited_weights_have_the_asked_eigenvalues():
    """phase_limited_orthogonal_: sigma x orthogonal, eigen-angles evenly over |theta| < phase (eq. (T37))."""
    torch.manual_seed(0)
    w = torch.empty(256, 256)
    phase_limited_orthogonal_(w, 1.5, 0.3)
    assert torch.allclose(w @ w.T, 2.25 * torch.eye(256), atol=1e-5)
    ev = torch.linalg.eigvals(w.double())
    assert torch.allclose(ev.abs(), torch.full((256,), 1.5, dtype=torch.float64), atol=1e-5)
    angles = ev.angle().abs().sort().values
    assert angles.max() < 0.3 and angles.max() > 0.3 * (1 - 2 / 128)  # 128 pairs up to the limit
    assert torch.allclose(angles[::2], (torch.arange(128, dtype=torch.float64) + 0.5) * 0.3 / 128, atol=1e-4)


def test_tied_gain_with_a_phase_limit_matches_powers_of_one_matrix():
    """Eq. (T36) over the arc |theta| < phase against |J^n u|^2 of J = f I + c O, O phase-limited."""
    torch.manual_seed(0)
    n, f, phase = 400, 0.97, 0.5
    o = torch.empty(n, n, dtype=torch.float64)
    phase_limited_orthogonal_(o, 1.0, phase)
    j = f * torch.eye(n, dtype=torch.float64) + (1 - f) * o
    u = torch.randn(n, 64, dtype=torch.float64)
    u /= u.norm(dim=0)
    for steps in (10, 100, 1000):
        v = torch.linalg.matrix_power(j, steps) @ u
        measured = (v ** 2).sum(0).mean().item()
        assert measured == pytest.approx(tied_gain(f, 1 - f, steps, phase), rel=0.1), steps
    assert tied_gain(f, 1 - f, 1000, phase) > 5 * tied_gain(f, 1 - f, 1000)  # the Haar circle loses more


@pytest.mark.parametrize("steps", [128, 1028, 5028, 78_400])
def test_phase_solution_meets_its_conditions(steps):
    """isometry=phase: T(1 - f) = write, radius 1 (T34), smallest singular value 10^log10_min_gain (T37)."""
    sol = solve(CriticalSpec("gru", steps, 28, 0.0, isometry="phase", write=30.0, log10_min_gain=-0.5, gate_nu=0.1))
    op, tied = sol.predictions["operating_point"], sol.predictions["tied_linear"]
    assert steps * (1 - op["keep"]) == pytest.approx(30.0, rel=1e-6)
    assert op["radius"] == pytest.approx(1.0, abs=1e-8)
    assert tied["log10_min_singular"] == pytest.approx(-0.5, abs=1e-6) and 0 < sol.phase < 1
    assert tied["log10_rms_gain"] > -0.5 and tied["phase"] == sol.phase
    assert f"init.phase={sol.phase:.6g}" in sol.overrides()
    # the same write over the Haar circle loses orders of magnitude more in its weakest directions
    haar = predict(sol.hyper(), sol.spec)["tied_linear"]["log10_min_singular"]
    assert haar < -5


def test_simulated_networks_draw_the_solutions_phase_limited_weights():
    """The theory's simulated networks (untied draws and tied modules) hold the solution's eigen-angles."""
    from mftrnn.theory.simulate import sample_weights, tied_module

    sol = solve(CriticalSpec("gru", 1028, 28, 0.0, isometry="phase", gate_nu=0.1))
    hp = sol.hyper()
    assert hp.phase == sol.phase and hp.describe()["phase"] == sol.phase
    _, w_hh = sample_weights(hp, 64, 28, torch.Generator().manual_seed(0))
    rnn = tied_module(hp, 64, 28, seed=0, device="cpu")
    for w in (w_hh[128:192], rnn.weight_hh_l0.detach()[128:192]):  # the n block (r, z, n)
        angles = torch.linalg.eigvals(w.double()).angle().abs()
        assert angles.max().item() <= sol.phase + 1e-6 and angles.max().item() > 0.9 * sol.phase


def test_isometry_auto_is_the_measured_choice_per_cell():
    assert resolve_isometry("gru", "auto", "tied", True) == "phase"
    assert resolve_isometry("lstm", "auto", "tied", True) == "gain"
    assert resolve_isometry("gru", "auto", "untied", True) == "gain"  # no phase limit where it does not apply
    assert resolve_isometry("gru", "auto", "tied", False) == "gain"
    assert resolve_isometry("lstm", "phase", "tied", True) == "phase"
    gru = to_objects(compose_train(["cell=gru", "init=critical", "init.drive.gates=10"]))
    assert critical_spec("gru", gru.init, TaskShape(1028, 28, 0.0)).isometry == "phase"
    with pytest.raises(ValueError, match="isometry"):
        CriticalSpec("gru", 1028, 28, 0.0, criterion="untied", isometry="phase", gate_nu=0.1)


def test_the_drive_is_one_option_of_every_init():
    """init.drive: null gates are chosen by the theory of the write (init=critical), an explicit value
    passes through to the solver, the candidate's scale too; bad values and two sources are refused."""
    conf = to_objects(compose_train(["cell=lstm", "init=critical"]))
    assert conf.init.drive.gates is None and conf.init.drive.candidate is None
    with pytest.raises(ConfigError, match="init.drive.gates"):  # nothing to choose it from
        critical_spec("lstm", conf.init, TaskShape(1028, 28, 0.0))
    given = to_objects(compose_train(["cell=lstm", "init=critical", "init.drive.gates=3", "init.drive.candidate=2"]))
    spec = critical_spec("lstm", given.init, TaskShape(1028, 28, 0.0))
    assert spec.gate_nu == 3 and spec.candidate_nu == 2
    sol = solve(spec)
    assert sol.gates["f"]["nu"] == sol.gates["i"]["nu"] == sol.gates["o"]["nu"] == 3 and sol.gates["g"]["nu"] == 2
    assert sol.drive == {"gates": 3, "candidate": 2, "source": "given"}
    for bad, key in (("init.drive.gates=-1", "init.drive.gates"), ("init.drive.candidate=-0.5", "init.drive.candidate")):
        with pytest.raises(ConfigError, match=key):
            to_objects(compose_train(["cell=lstm", "init=critical", bad]))
    with pytest.raises(ConfigError, match="init.drive.theory"):
        to_objects(compose_train(["cell=gru", "init=chrono", "init.drive.theory=true", "init.drive.gates=5"]))


def test_cache_is_keyed_by_the_solvers_inputs(tmp_path):
    spec = CriticalSpec("gru", 1028, 28, 0.0, gate_nu=10.0)
    first, cached = solve_cached(spec)
    assert not cached
    again, cached = solve_cached(spec)
    assert cached and again.gates == first.gates
    for other in (CriticalSpec("gru", 2028, 28, 0.0, gate_nu=10.0), CriticalSpec("gru", 1028, 28, 0.5, gate_nu=1.0),
                  CriticalSpec("lstm", 1028, 28, 0.0, gate_nu=10.0),
                  CriticalSpec("gru", 1028, 28, 0.0, gate_nu=10.0, log10_gain=-0.3),
                  CriticalSpec("gru", 1028, 28, 0.0, gate_nu=10.0, isometry="phase"),
                  CriticalSpec("gru", 1028, 28, 0.0, gate_nu=10.0, isometry="phase", write=60.0),
                  CriticalSpec("gru", 1028, 28, 0.0, gate_nu=3.0),
                  CriticalSpec("gru", 1028, 28, 0.5, gate_nu=1.0, r_nodes=(0.0, 1.0), r_weights=(0.5, 0.5)),
                  CriticalSpec("gru", 1028, 28, 0.0, gate_nu=10.0, inputs_key="0123456789abcdef")):
        assert other.key() != spec.key()
        assert solve_cached(other)[1] is False
    path = critical.cache_dir() / f"{spec.key()}.json"
    path.write_text("{ damaged")
    sol, cached = solve_cached(spec)
    assert not cached and sol.gates == first.gates and json.loads(path.read_text())["gates"] == first.gates
    # a spec read back from JSON (lists for tuples) is the same spec: the cache answers it
    spec_json = CriticalSpec(**json.loads(json.dumps(dataclasses.asdict(other))))
    assert spec_json == other and spec_json.key() == other.key()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_network_holds_the_solved_hyperparameters(cell):
    conf = to_objects(compose_train([f"cell={cell}", "init=critical", "init.drive.gates=10"]))
    task = TaskShape(seq_len=1028, content_steps=28, R_op=0.0)
    torch.manual_seed(0)
    model = RNNClassifier(CellKind(cell), 28, ModelConfig(hidden=256))
    info = initialize(model, conf.init, task)
    sol, _ = solve_critical(cell, conf.init, task)
    assert info["solution"]["gates"] == sol.gates and info["drive"]["source"] == "given"
    assert info["drive"]["gates_measured"] == pytest.approx(10, rel=0.05)
    p = layer_params(model.rnn, 0)
    for gate in GATES[CellKind(cell)]:
        hp = sol.gates[gate]
        assert torch.all(gate_block(p["bias_ih"], GATES[model.cell], gate) == torch.tensor(hp["mu"], dtype=torch.float32))
        assert torch.all(p["bias_hh"] == 0)
        w_hh = gate_block(p["weight_hh"], GATES[model.cell], gate)
        assert torch.allclose(w_hh @ w_hh.T, hp["sigma"] ** 2 * torch.eye(256), atol=1e-5)  # orthogonal x sigma
        if hp["sigma"] > 0:  # the GRU's candidate: eigen-angles within the solved phase (pi: Haar, the LSTM)
            angles = torch.linalg.eigvals(w_hh.double()).angle().abs()
            assert angles.max().item() <= sol.phase + 1e-6 and angles.max().item() > 0.9 * sol.phase
            assert (sol.phase < 1) == (cell == "gru")
        w_ih = gate_block(p["weight_ih"], GATES[model.cell], gate)
        assert w_ih.var().item() * 28 == pytest.approx(hp["nu"] ** 2, rel=0.05)


@pytest.mark.parametrize("task", ["task=unrolled_mnist", "task=unrolled_mnist task.permute=true", "task=cifar10",
                                  "task=repeated_pixel task.repeats=100", "task=padded_mnist task.pad_value=noise"])
def test_every_task_solves_for_its_length_and_inputs(task, data_root):
    """Every task: its length, its inputs' law at the operating point (eq. (T40)), a drive chosen by the theory
    of the write on its own pairs (small here: one pair, 200 units, a tied window of 32 steps), tied
    criticality at the chosen drive."""
    from mftrnn.data import load_splits
    from mftrnn.inits import task_shape
    from mftrnn.tasks import build_task

    conf = to_objects(compose_train(["init=critical", "data.limit=128", "init.drive.pairs=1",
                                     "init.drive.population=200", "init.drive.window=32", *task.split()]))
    t = build_task(conf.task)
    splits = load_splits(t.dataset, conf.data)
    t.fit(splits)
    shape = task_shape(t, splits, conf.init)
    assert shape.seq_len == t.seq_len and shape.R_op > 0  # pixels, or the noise of the padding
    nodes, weights = shape.r_law
    assert len(nodes) > 1 and sum(weights) == pytest.approx(1) and np.dot(nodes, weights) == pytest.approx(shape.R_op)
    sol, _ = solve_critical("lstm", conf.init, shape)
    assert sol.spec.steps == t.seq_len and sol.predictions["operating_point"]["radius"] == pytest.approx(1, abs=1e-8)
    drive = sol.drive
    assert drive["source"] == "theory" and drive["curve"]["nu"][0] <= drive["gates"] <= drive["curve"]["nu"][-1]
    assert sol.gates["f"]["nu"] == drive["gates"] and "why" in drive["reason"]
    assert 0 <= sol.predictions["write"]["one_minus_c_end"] <= 2
    if "noise" in task:  # the noise of the padding drives the gates too: a drive erases what the image wrote
        assert drive["gates"] == drive["curve"]["nu"][0]
    # the horizon is checked over the padding, or over all T steps where every step is informative
    checked = sol.predictions["tied_linear"]["horizon_steps_checked"]
    assert checked == (t.seq_len - t.content_steps or t.seq_len) and checked > 1


@pytest.mark.parametrize("isometry", ["auto", "gain"])
def test_critical_app_writes_the_solution_and_a_preset_train_accepts(tmp_path, data_root, isometry):
    out = tmp_path / "crit"
    res = run_cli("critical", "cell=gru", "task.pad=100", f"init.isometry={isometry}", "verify.population=500",
                  "init.drive.pairs=4", "init.drive.population=500",
                  f"hydra.run.dir={out}", env={"MFTRNN_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 0, res.stderr
    d = json.loads((out / "critical.json").read_text())
    assert d["spec"]["steps"] == 128 and d["predictions"]["tied_linear"]["radius"] == pytest.approx(1)
    if isometry == "gain":
        assert d["verify"]["tied"]["horizon"] is None  # the two digits stay apart through the padding
        assert d["phase"] == pytest.approx(math.pi)
    else:  # the GRU's default: phase-limited weights, which the tied population solver cannot describe
        assert d["spec"]["isometry"] == "phase" and d["phase"] < 1 and "skipped" in d["verify"]["tied"]
        assert f"init.phase={d['phase']:.6g}" in d["overrides"]
    assert "mu" in d["gates"]["z"] and "init.gates.z.mu=" in " ".join(d["overrides"])
    run = tmp_path / "run"
    res = run_cli("train", "--config-dir", str(out), "init=critical_gru_T128", "cell=gru", *TINY, f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["init"] == "meanfield"
    assert summary["config"]["init"]["gates"]["z"]["mu"] == pytest.approx(d["gates"]["z"]["mu"], rel=1e-8)
    bias = torch.load(run / "init.pt")["rnn.bias_ih_l0"]
    assert torch.all(bias[16:32] == torch.tensor(d["gates"]["z"]["mu"], dtype=torch.float32))  # z block, hidden 16
    assert summary["config"]["init"]["phase"] == pytest.approx(d["phase"], rel=1e-6)


def test_diagnose_tells_critical_from_standard(tmp_path, data_root):
    """A small CPU network: critical keeps the gain across the padding within a decade, standard loses it."""
    from hydra import compose, initialize_config_module

    from mftrnn.diagnose_app import run_diagnose

    found = {}
    for name, init in (("critical", ["init=critical", "init.drive.pairs=4"]), ("standard", ["init=standard"]),
                       ("quiet", ["init=critical", "init.drive.gates=0.1"])):
        with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
            cfg = compose(config_name="diagnose", overrides=[
                "cell=lstm", *init, "task.pad=300", "model.hidden=64", "pairs=4", "probes=2",
                "theory.population=2000", "device=cpu"])
        found[name] = run_diagnose(cfg, tmp_path / name)
        assert (tmp_path / name / "diagnose.json").exists() and (tmp_path / name / "diagnose.png").exists()
        assert set(torch.load(tmp_path / name / "init.pt")) >= {"rnn.weight_hh_l0", "head.weight"}
    crit, std = found["critical"], found["standard"]
    assert abs(crit["network"]["log10_gain"]["mean"]) < 1
    assert std["network"]["log10_gain"]["mean"] < -2
    # 1 - C/Q is scale-free (two vanishing states still point apart); relative to the state's size where the
    # padding began, the standard network has forgotten the digits
    assert crit["network"]["distance_end_over_Q_at_split"] > 1e3 * std["network"]["distance_end_over_Q_at_split"]
    assert crit["network"]["horizon"] is None and std["network"]["horizon"] is not None
    assert crit["network"]["zero_state_radius"] == pytest.approx(1.0, abs=1e-6)  # eq. (T34) on the real module
    assert std["network"]["zero_state_radius"] < 0.99
    # with near-deterministic gates (nu = 0.1) the tied theory predicts the network's gain within 0.2 decades
    # and the untied one is off by decades; the default's input-driven gates (nu = 10 under zero padding)
    # leave a larger state at the split, whose padding starts off the linear regime (docs/theory.md §10.7)
    quiet = found["quiet"]
    net = quiet["network"]["log10_gain"]["mean"]
    assert quiet["theory"]["tied"]["log10_gain"] == pytest.approx(net, abs=0.2)
    assert abs(quiet["theory"]["untied"]["log10_gain"] - net) > 1
    assert crit["network"]["zero_state_radius"] == pytest.approx(quiet["network"]["zero_state_radius"], abs=1e-9)
    # the driven gates write the digits further apart, and the theory of the write says so (docs/theory.md §10.8)
    assert crit["network"]["one_minus_c_end"]["mean"] > quiet["network"]["one_minus_c_end"]["mean"] + 0.05
    assert crit["theory"]["write"]["one_minus_c_end"] > quiet["theory"]["write"]["one_minus_c_end"] + 0.05


def test_diagnose_reads_a_checkpoint_and_refuses_one_that_does_not_fit(tmp_path, data_root):
    run = tmp_path / "run"
    assert run_cli("train", *TINY, "init=critical", "cell=gru", f"hydra.run.dir={run}").returncode == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["init_solution"]["spec"]["steps"] == 38 and "init.gates.z.mu=" in " ".join(
        summary["init_solution"]["overrides"])
    res = run_cli("diagnose", "cell=gru", "init=critical", "init.drive.pairs=4", "init.drive.population=500",
                  "task.pad=10", "model.hidden=16", "pairs=2", "probes=2",
                  "device=cpu", f"ckpt={run / 'ckpt_last.pt'}", f"hydra.run.dir={tmp_path / 'diag'}")
    assert res.returncode == 0, res.stderr
    d = json.loads((tmp_path / "diag" / "diagnose.json").read_text())
    trained = torch.load(run / "ckpt_last.pt", weights_only=False)["model"]
    saved = torch.load(tmp_path / "diag" / "init.pt")
    assert all(torch.equal(saved[k], trained[k]) for k in trained)  # the checkpoint's weights were diagnosed
    assert d["ckpt"].endswith("ckpt_last.pt") and math.isfinite(d["network"]["log10_gain"]["mean"])
    bad = run_cli("diagnose", "cell=lstm", "task.pad=10", "model.hidden=16", "device=cpu",
                  f"ckpt={run / 'ckpt_last.pt'}", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "does not fit" in bad.stderr and "Traceback" not in bad.stderr


def test_theory_takes_init_critical(tmp_path, data_root):
    res = run_cli("theory", "cell=gru", "init=critical", "init.drive.pairs=4", "init.drive.population=500",
                  "task.pad=60", "theory/input=task", "theory.weights=tied",
                  "theory.population=500", f"hydra.run.dir={tmp_path}", env={"MFTRNN_CACHE": str(tmp_path / "c")})
    assert res.returncode == 0, res.stderr
    d = json.loads((tmp_path / "theory.json").read_text())
    assert d["hyperparameters"]["source"]["init"] == "critical"
    assert d["memory"]["horizon"] is None  # the digits stay apart through the padding in the tied theory
