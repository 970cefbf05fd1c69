"""Every config option composes and validates; every bad input ends with one clear error."""
from __future__ import annotations

import itertools

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from conftest import TINY_RUN, compose_train, run_cli
from mftrnn.errors import ConfigError
from mftrnn.schema import (CellKind, GruGates, InitScheme, LstmGates, OptimName, TaskName, TrainConfig,
                           run_tag, to_objects)

TASKS = [t.value for t in TaskName]
CELLS = [c.value for c in CellKind]
INITS = [i.value for i in InitScheme]
OPTIMS = [o.value for o in OptimName]


@pytest.mark.parametrize("task,cell,init,optim", list(itertools.product(TASKS, CELLS, INITS, OPTIMS)))
def test_every_combination_composes_into_objects(task, cell, init, optim):
    conf = to_objects(compose_train([f"task={task}", f"cell={cell}", f"init={init}", f"optim={optim}"]))
    assert isinstance(conf, TrainConfig)
    assert conf.task.name.value == task and conf.cell.kind.value == cell
    assert conf.init.scheme.value == init and conf.optim.name.value == optim
    if init == "meanfield":
        assert isinstance(conf.init.gates, LstmGates if cell == "lstm" else GruGates)


def test_defaults_are_the_documented_ones():
    conf = to_objects(compose_train())
    assert (conf.task.name, conf.task.pad, conf.cell.kind, conf.init.scheme) == (
        TaskName.padded_mnist, 1000, CellKind.lstm, InitScheme.standard)
    assert (conf.model.hidden, conf.model.layers, conf.train.batch_size) == (256, 1, 128)
    assert (conf.optim.lr, conf.optim.clip, conf.data.val_size, conf.wandb.mode.value) == (1e-3, 1.0, 5000, "offline")


def test_gate_overrides_reach_the_objects():
    conf = to_objects(compose_train(["cell=gru", "init=meanfield", "init.gates.z.mu=3", "init.recurrent=orthogonal"]))
    assert conf.init.gates.z.mu == 3.0 and conf.init.recurrent.value == "orthogonal"


@pytest.mark.parametrize("override,key", [
    ("task.pad=-1", "task.pad"), ("optim.lr=0", "optim.lr"), ("optim.lr=-1e-3", "optim.lr"),
    ("model.hidden=0", "model.hidden"), ("model.layers=0", "model.layers"), ("train.batch_size=0", "train.batch_size"),
    ("optim.clip=0", "optim.clip"), ("data.val_size=0", "data.val_size"), ("data.limit=0", "data.limit"),
    ("optim.warmup_steps=-1", "optim.warmup_steps"),
])
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_objects(compose_train([override]))


@pytest.mark.parametrize("overrides,key", [
    (["init=meanfield", "init.recurrent=orthogonal", "init.phase=4"], "init.phase"),
    (["init=meanfield", "init.phase=1"], "init.phase"),  # a phase limit of Gaussian weights
    (["init=critical", "init.isometry=phase", "init.criterion=untied"], "init.isometry"),
    (["init=critical", "init.write=0"], "init.write"),
    (["init=critical", "init.log10_min_gain=0.1"], "init.log10_min_gain"),
])
def test_phase_limit_settings_are_checked(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        to_objects(compose_train(overrides))


def test_repeats_zero_and_negative_gate_scale_are_rejected():
    with pytest.raises(ConfigError, match=r"task\.repeats"):
        to_objects(compose_train(["task=repeated_pixel", "task.repeats=0"]))
    with pytest.raises(ConfigError, match=r"init\.gates\.f\.sigma"):
        to_objects(compose_train(["init=meanfield", "init.gates.f.sigma=-1"]))


def test_unknown_option_key_and_type_fail_at_compose_time():
    with pytest.raises(ConfigCompositionException):
        compose_train(["init=nope"])
    with pytest.raises(ConfigCompositionException):
        compose_train(["model.foo=1"])
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_train(["model.hidden=abc"])
    with pytest.raises(ConfigCompositionException):  # f is an LSTM gate, not a GRU gate
        compose_train(["cell=gru", "init=meanfield", "init.gates.f.mu=3"])
    with pytest.raises(ConfigError, match="model.foo"):  # added with '+': caught at the door
        to_objects(compose_train(["+model.foo=1"]))


def test_run_tag_is_readable_deterministic_and_safe():
    assert run_tag("") == "default"
    assert run_tag("optim.lr=0.1,task.pad=100") == "optim.lr=0.1,task.pad=100"
    assert "/" not in run_tag("data.root=/a/b")
    long = ",".join(f"k{i}=v" for i in range(100))
    assert run_tag(long) == run_tag(long) and len(run_tag(long)) <= 160


# The command line: one clear line, a non-zero exit code, never a Python traceback.
@pytest.mark.parametrize("override,expected", [
    ("task.pad=-1", "task.pad"),
    ("optim.lr=0", "optim.lr"),
    ("model.hidden=0", "model.hidden"),
    ("task=repeated_pixel task.repeats=0", "task.repeats"),
    ("model.hidden=abc", "model.hidden"),
    ("task.pad=ten", "task.pad"),
    ("init=nope", "Available options in 'init'"),
    ("model.foo=1", "model.foo"),
    ("task.pad_value=foo", "expected one of [zeros, noise]"),
    ("init=critical init.log10_gain=0.5", "init.log10_gain"),
    ("data.root=/nonexistent/mftrnn-data", "MFTRNN_DATA"),
])
def test_cli_bad_input_is_one_clear_error(override, expected, tmp_path):
    res = run_cli("train", *TINY_RUN, *override.split(), f"hydra.run.dir={tmp_path}")  # last wins
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert expected in out
    assert "Traceback" not in out


def test_cli_usage_and_version():
    assert run_cli().returncode == 2
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("mftrnn ")
    assert run_cli("nope").returncode == 2


def test_run_dir_names_leave_out_exactly_the_keys_a_resume_ignores():
    from importlib.resources import files

    import yaml

    from mftrnn.train import VOLATILE_KEYS

    hydra_cfg = yaml.safe_load(files("mftrnn.conf").joinpath("train.yaml").read_text())["hydra"]
    excluded = set(hydra_cfg["job"]["config"]["override_dirname"]["exclude_keys"])
    for key in VOLATILE_KEYS:
        assert key in excluded or any(k.startswith(key + ".") for k in excluded), key
    in_path = {"task", "cell", "init", "seed", "experiment"}  # already named by the path itself
    for key in excluded - in_path:
        assert any(key == v or key.startswith(v + ".") for v in VOLATILE_KEYS), key


def _experiments():
    from importlib.resources import files

    return sorted(p.name[:-5] for p in files("mftrnn.conf").joinpath("experiment").iterdir() if p.name.endswith(".yaml"))


@pytest.mark.parametrize("name", _experiments())
def test_every_experiment_preset_composes(name):
    conf = to_objects(compose_train([f"experiment={name}"]))
    assert conf.experiment_name == name


def test_experiment_preset_launches_its_sweep(tmp_path, data_root):
    res = run_cli("train", "experiment=readme_pad1000", *TINY_RUN, "task.pad=3", "train.steps=2",
                  "train.log_every=1", "train.ckpt_every=1", "train.eval_every=1", f"hydra.sweep.dir={tmp_path}")
    assert res.returncode == 0, res.stderr
    runs = sorted(p.parent.parent.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("summary.json"))
    assert runs == [f"padded_mnist/{c}-{i}/data.limit=256,init.drive.pairs=4,init.drive.population=500,model.hidden=16,"
                    f"task.pad=3,train.batch_size=32"
                    for c in ("gru", "lstm") for i in ("chrono", "standard")]
