"""`mftrnn theory theory.weights=tied`, theory/input=task, the memory horizon (eq. (T29)) and the
horizon grids (docs/theory.md §7)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from conftest import run_cli
from mftrnn.theory import closed, population, tied
from mftrnn.theory.hyper import Gate, Hyper

NO_SPECTRA = ["theory.spectrum.density=false", "theory.spectrum.product=false", "theory.spectrum.population=500",
              "device=cpu"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def run(tmp_path, *overrides: str) -> dict:
    """`mftrnn theory` in this process (compose + run_theory, as the Hydra app does)."""
    from mftrnn.theory.app import run_theory

    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        cfg = compose(config_name="theory", overrides=[*NO_SPECTRA, *overrides])
    return run_theory(cfg, tmp_path)


# ----------------------------------------------------------------------------- the horizon
def test_memory_horizon_counts_steps_to_fall_by_eps():
    t = np.arange(61, dtype=float)
    d = np.where(t <= 10, 0.5, 0.5 * np.exp(-(t - 10) / 4.0))  # xi = 4 after the split at 10
    d[0] = np.nan
    tau = closed.memory_horizon(d, 10, 1e-2)
    assert tau == np.floor(4 * np.log(100)) + 1  # the first tau with exp(-tau/4) < 1e-2: 19
    grid = np.stack([d, np.where(t <= 10, 0.5, 0.4)], axis=1)  # a second point that never forgets
    out = closed.memory_horizon(grid, 10, 1e-2)
    assert out[0] == tau and np.isnan(out[1])
    power = np.where(t <= 10, 1.0, np.maximum(t - 9.0, 1.0) ** -2.0)  # tied dynamics need not be exponential
    assert closed.memory_horizon(power, 10, 1e-2) == 10  # (tau + 1)^-2 < 1e-2 first at tau = 10
    with pytest.raises(ValueError, match="split"):
        closed.memory_horizon(d, 61, 1e-2)


# ------------------------------------------------------------------ untied by the same machinery
def test_untied_mode_of_the_batched_solver_equals_the_population_solver():
    """The grids' untied horizon uses tied.trajectory(tied=False); it must be the untied theory:
    against population.trajectory (an independent implementation) with a persistent bias spread,
    where the closed forms are not exact. Noise: P = 20,000 vs 100,000 units; 1 - C/Q after the
    split scatters by a few % between seeds, hence 5 % (Q_h) and 12 % (1 - C/Q)."""
    hp = Hyper("gru", {"r": Gate(), "z": Gate(mu=3.0, rho=1.0), "n": Gate(sigma=1.5)})
    a = tied.trajectory(hp, tied.scenario_features(40, 20, 1.0), 20_000, seed=1, device="cpu", tied=False)
    b = population.trajectory(hp, 40, 20, 1.0, population=100_000, seed=2, device="cpu")
    for t in (20, 30, 40):
        assert a["q_h_a"][t] == pytest.approx(b["q_h_a"][t], rel=0.05)
        assert a["d_h"][t] / a["q_h_a"][t] == pytest.approx(b["d_h"][t] / b["q_h_a"][t], rel=0.12)
    t_ = tied.trajectory(hp, tied.scenario_features(40, 20, 1.0), 20_000, seed=1, device="cpu")
    assert t_["d_h"][40] / t_["q_h_a"][40] > 1.2 * a["d_h"][40] / a["q_h_a"][40]  # tied remembers longer


def test_untied_inputs_are_fresh_at_every_step():
    x = torch.randn(2, 5, 3, dtype=torch.float64)  # task-like features: every step uses every column
    u = tied.untie_inputs(x)
    assert u.shape == (2, 5, 15)
    same_t = torch.einsum("std,srd->str", u, u)  # (S, T, T) kernel between steps
    assert torch.allclose(same_t.diagonal(dim1=1, dim2=2), (x * x).sum(-1))
    assert torch.count_nonzero(same_t - torch.diag_embed(same_t.diagonal(dim1=1, dim2=2))) == 0
    s = tied.scenario_features(6, 2, 1.0)
    assert tied.untie_inputs(s) is s  # its steps are orthogonal already


# ----------------------------------------------------------------------------- the app
def test_tied_theory_through_the_app(tmp_path):
    r = run(tmp_path, "cell=gru", "init.gates.z.mu=3", "theory.weights=tied", "theory.steps=70",
            "theory.population=4000")
    assert r["trajectory"]["theory"] == "tied"
    assert json.loads((tmp_path / "theory.json").read_text())["trajectory_untied"]["theory"] == "untied"
    m = r["memory"]
    assert m["split"] == 20 and m["eps"] == 0.01 and m["distance_at_split"] > 0
    # Slow update gate: the untied theory forgets in ~34 steps (xi_C = 7.4), the tied one later.
    assert 30 <= m["horizon_untied"] <= 38 and m["horizon"] > m["horizon_untied"]
    assert m["horizon_untied"] == pytest.approx(np.log(100) * r["stationary"]["xi_C"], abs=3)
    assert len(r["trajectory"]["Q_h_a"]) == 71 and len(r["trajectory_untied"]["Q_h_a"]) == 71
    assert (tmp_path / "trajectories.png").stat().st_size > 10_000  # a plot without theory.simulate


def test_task_inputs_are_two_real_examples(tmp_path, data_root):
    r = run(tmp_path, "cell=lstm", "init.gates.f.mu=3", "theory.weights=tied", "theory/input=task",
            "task.pad=30", "theory.population=2000", f"data.root={data_root}")
    inp = r["inputs"]
    assert inp["source"] == "task" and inp["labels"] == [7, 2] and inp["steps"] == 58 and inp["input_size"] == 28
    assert 10 < inp["split"] <= 28  # the digits' rows differ up to here; the zero padding is shared
    assert inp["R_stationary"] == 0.0  # zero padding
    assert r["memory"]["split"] == inp["split"] and len(r["trajectory"]["Q_h_a"]) == 59
    omc = np.asarray([np.nan if v is None else v for v in r["trajectory"]["one_minus_c"]], float)
    assert np.all(np.isnan(omc[:5]))  # blank first rows: both states are zero, 1 - C/Q is undefined
    assert np.all((omc[inp["split"]:] > 0) & (omc[inp["split"]:] < 1.5))


def test_horizon_grid_for_both_theories(tmp_path):
    r = run(tmp_path, "cell=gru", "theory.weights=tied", "theory.steps=40", "theory.grid.x=[init.gates.z.mu,0,3,3]",
            "theory.grid.y=[theory.input.R,0.5,1.5,2]", "theory.grid.horizon=true", "theory.grid.population=500",
            "theory.grid.chunk_gb=0.001")
    g = np.load(tmp_path / "grid.npz")
    assert g["horizon_tied"].shape == g["horizon_untied"].shape == (2, 3)
    assert r["grid"]["chunk"] < 6  # processed in several chunks, same result as one (shared noise)
    assert r["grid"]["memory_level"] == 20  # theory.steps - theory.split: one level for both plots
    finite = np.isfinite(g["horizon_untied"])
    assert finite[:, 0].all() and np.all(np.diff(np.where(finite, g["horizon_untied"], 99), axis=1) >= 0)  # slower z
    assert (tmp_path / "grid_horizon.png").stat().st_size > 10_000


def test_tied_theory_takes_orthogonal_weights_as_gaussian(tmp_path):
    r = run(tmp_path, "cell=gru", "theory.weights=tied", "init.recurrent=orthogonal", "theory.steps=30",
            "theory.population=1000")
    assert "orthogonal" in r["trajectory"]["note"]


@pytest.mark.parametrize("args,expected", [
    (["theory.weights=both"], "theory.weights"),
    (["theory.horizon_eps=0"], "theory.horizon_eps"),
    (["theory/input=task", "theory.input.examples=[3,3]"], "theory.input.examples"),
])
def test_bad_tied_options_are_one_line_errors(tmp_path, args, expected):
    res = run_cli("theory", *args, "device=cpu", f"hydra.run.dir={tmp_path}")
    assert res.returncode != 0 and expected in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("init,cell", [("standard", "lstm"), ("chrono", "gru"), ("pytorch", "gru")])
def test_every_init_through_the_app_with_its_own_networks(tmp_path, init, cell):
    """Any init: its mean-field description (eq. (T30)), the theory, and networks built by the init
    code itself, drawn at the model's hidden size (not theory.width: these inits' scales depend on the
    layer's shape); the networks' one-step m_1 at R = 1 within 10 % of the theory's."""
    r = run(tmp_path, f"init={init}", f"cell={cell}", "theory.steps=30", "theory.split=10", "theory.simulate=true",
            "theory.width=64", "model.hidden=192", "theory.seeds=1", "task.pad=100")
    hp = r["hyperparameters"]
    assert hp["source"]["init"] == init and hp["source"]["seq_len"] == 128 and hp["source"]["input_size"] == 28
    assert hp["recurrent"] == ("gaussian" if init == "pytorch" else "orthogonal")
    assert (hp["bias_laws"][0]["law"] == "chrono") if init == "chrono" else True
    sim = r["simulation"]
    assert sim["input_size"] == 28  # the init's input scale depends on the task's input size
    assert sim["width"] == hp["source"]["hidden"] == 192  # ... and on the hidden size
    assert sim["tied"]["jacobian"]["m1"] == pytest.approx(r["stationary"]["m1"], rel=0.10)
    assert sim["untied"]["jacobian"]["m1"] == pytest.approx(r["stationary"]["m1"], rel=0.10)
