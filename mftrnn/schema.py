"""Typed configuration: one dataclass per component, Enums for every choice, checks at the door.

Hydra composes YAML from ``conf/`` on top of these schemas (stored in the ConfigStore under the
``schema/`` group), so a mistyped key or a value of the wrong type fails at compose time. Value
ranges are checked in each dataclass's ``__post_init__``, which runs when the composed config is
turned into objects with :func:`to_objects`; the error names the full key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from mftrnn.errors import ConfigError


# --------------------------------------------------------------------------- enums
class TaskName(Enum):
    padded_mnist = "padded_mnist"
    unrolled_mnist = "unrolled_mnist"
    cifar10 = "cifar10"
    repeated_pixel = "repeated_pixel"


class Dataset(Enum):
    mnist = "mnist"
    cifar10 = "cifar10"


class Layout(Enum):
    rows = "rows"  # 28 steps x 28 inputs
    pixels = "pixels"  # 784 steps x 1 input
    image = "image"  # 1 step x 784 inputs


class PadValue(Enum):
    zeros = "zeros"
    noise = "noise"


class CellKind(Enum):
    lstm = "lstm"
    gru = "gru"


class InitScheme(Enum):
    pytorch = "pytorch"
    standard = "standard"
    chrono = "chrono"
    meanfield = "meanfield"
    critical = "critical"


class Recurrent(Enum):
    gaussian = "gaussian"
    orthogonal = "orthogonal"


class Isometry(Enum):
    auto = "auto"  # the measured choice per cell (mftrnn/theory/critical.py DEFAULT_ISOMETRY): LSTM gain, GRU phase
    gain = "gain"  # Haar eigen-angles; the keep gate solved from the product's rms gain (eq. (T35))
    phase = "phase"  # the write T(1 - f) given; the eigen-angle limit solved from the smallest gain (eq. (T37))


class Criterion(Enum):
    tied = "tied"  # spectral radius 1 at the operating point: what tied (real) networks need, eq. (T34)
    untied = "untied"  # the paper's m_1 = 1 (eq. (T23)): exact for untied weights only


class OptimName(Enum):
    adam = "adam"
    rmsprop = "rmsprop"
    sgd = "sgd"


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Resume(Enum):
    auto = "auto"  # continue from ckpt_last.pt when the run dir holds one
    never = "never"  # start over, ignoring (and overwriting) any checkpoint


class WandbMode(Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


# --------------------------------------------------------------------------- checks
def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError naming the full key, the bad value and what is allowed."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {key} must be {allowed}")


def _positive(key: str, value: float) -> None:
    _require(value is not None and math.isfinite(value) and value > 0, key, value, "> 0")


def _non_negative(key: str, value: float) -> None:
    _require(value is not None and math.isfinite(value) and value >= 0, key, value, ">= 0")


# --------------------------------------------------------------------------- tasks
@dataclass
class TaskConfig:
    """Fields every task has; each task adds its own (see the subclasses)."""

    name: TaskName = MISSING
    noise_std: float = 1.0  # std of Gaussian padding when pad_value=noise

    def __post_init__(self) -> None:
        _non_negative("task.noise_std", self.noise_std)


@dataclass
class PaddedMnistConfig(TaskConfig):
    """The image row by row (or pixel by pixel, or in one step), then `pad` steps of padding."""

    name: TaskName = TaskName.padded_mnist
    pad: int = 1000
    pad_value: PadValue = PadValue.zeros
    layout: Layout = Layout.rows

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.pad >= 0, "task.pad", self.pad, "an integer >= 0")


@dataclass
class UnrolledMnistConfig(TaskConfig):
    """Pixel by pixel (784 steps x 1 input); `permute` applies one fixed, seeded permutation."""

    name: TaskName = TaskName.unrolled_mnist
    permute: bool = False
    permutation_seed: int = 0


@dataclass
class Cifar10Config(TaskConfig):
    """Pixel by pixel with the three channels per step (1024 steps x 3), per-channel normalized."""

    name: TaskName = TaskName.cifar10


@dataclass
class RepeatedPixelConfig(TaskConfig):
    """Each pixel repeated `repeats` times: 784*k steps x 1 (MNIST) or 1024*k x 3 (CIFAR-10)."""

    name: TaskName = TaskName.repeated_pixel
    dataset: Dataset = Dataset.mnist
    repeats: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.repeats >= 1, "task.repeats", self.repeats, "an integer >= 1")


# --------------------------------------------------------------------------- model
@dataclass
class CellConfig:
    kind: CellKind = MISSING


@dataclass
class ModelConfig:
    hidden: int = 256
    layers: int = 1
    # cuDNN rejects sequences longer than 65,535 steps; longer ones run in chunks of this many
    # steps with the state carried across (full backprop through time).
    max_chunk: int = 65_535

    def __post_init__(self) -> None:
        _require(self.hidden >= 1, "model.hidden", self.hidden, "an integer >= 1")
        _require(self.layers >= 1, "model.layers", self.layers, "an integer >= 1")
        _require(1 <= self.max_chunk <= 65_535, "model.max_chunk", self.max_chunk, "in [1, 65535]")


# --------------------------------------------------------------------------- inits
@dataclass
class GateHP:
    """Mean-field hyperparameters of one gate (docs/theory.md §1): bias ~ N(mu, rho^2) per unit,
    recurrent entries N(0, sigma^2/hidden) (or sigma x Haar-orthogonal), input N(0, nu^2/n_in)."""

    mu: float = 0.0
    rho: float = 0.0
    sigma: float = 1.0
    nu: float = 1.0


@dataclass
class LstmGates:
    """nn.LSTM's gate order: input i, forget f, candidate g, output o."""

    i: GateHP = field(default_factory=GateHP)
    f: GateHP = field(default_factory=GateHP)
    g: GateHP = field(default_factory=GateHP)
    o: GateHP = field(default_factory=GateHP)


@dataclass
class GruGates:
    """nn.GRU's gate order: reset r, update z (the keep gate), candidate n."""

    r: GateHP = field(default_factory=GateHP)
    z: GateHP = field(default_factory=GateHP)
    n: GateHP = field(default_factory=GateHP)


@dataclass
class DriveConfig:
    """The input scales of the gates and of the candidate, for every init (docs/theory.md §10.8): the gates'
    input weights (every gate but the candidate) N(0, gates^2 / n_in), the candidate's N(0, candidate^2 /
    n_in), written after the init's own scheme. null keeps the init's own scales (init=critical: the gates'
    scale chosen by the theory of the write, the candidate's 1)."""

    gates: Optional[float] = None
    candidate: Optional[float] = None
    # true: the scales init=critical would use for this task and cell (the theory's choice), for any init
    theory: bool = False
    pairs: int = 16  # the theory of the write: pairs of training examples with different labels it reads
    population: int = 2000  # ... and the units of its tied population
    # ... and, where the long stretch carries input, the last steps its tied kernel covers (cost ~ window^3)
    window: int = 256

    def __post_init__(self) -> None:
        for key in ("gates", "candidate"):
            if getattr(self, key) is not None:
                _non_negative(f"init.drive.{key}", getattr(self, key))
        _require(not (self.theory and (self.gates is not None or self.candidate is not None)), "init.drive.theory",
                 self.theory, "false when init.drive.gates or init.drive.candidate is given (one source for the drive)")
        _require(self.pairs >= 1, "init.drive.pairs", self.pairs, "an integer >= 1")
        _require(self.population >= 100, "init.drive.population", self.population, "an integer >= 100")
        _require(self.window >= 1, "init.drive.window", self.window, "an integer >= 1")


@dataclass
class InitConfig:
    scheme: InitScheme = MISSING
    drive: DriveConfig = field(default_factory=DriveConfig)


@dataclass
class ChronoInitConfig(InitConfig):
    """Tallec & Ollivier 2018; t_max defaults to the task's sequence length."""

    scheme: InitScheme = InitScheme.chrono
    t_max: Optional[int] = None

    def __post_init__(self) -> None:
        if self.t_max is not None:
            _require(self.t_max >= 3, "init.t_max", self.t_max, "null or an integer >= 3")


@dataclass
class MeanFieldInitConfig(InitConfig):
    scheme: InitScheme = InitScheme.meanfield
    recurrent: Recurrent = Recurrent.gaussian
    gates: Any = MISSING  # LstmGates or GruGates, chosen by the cell (conf/gates/)
    # orthogonal only: the largest eigen-angle of the recurrent blocks (docs/theory.md §10.6); pi: Haar
    phase: float = math.pi

    def __post_init__(self) -> None:
        _require(math.isfinite(self.phase) and 0 <= self.phase <= math.pi, "init.phase", self.phase, "in [0, pi]")
        _require(self.phase == math.pi or self.recurrent is Recurrent.orthogonal, "init.phase", self.phase,
                 "pi unless init.recurrent=orthogonal (a phase limit is a property of orthogonal weights)")
        for gate, hp in dataclasses.asdict(self.gates).items():
            for name in ("rho", "sigma", "nu"):
                _non_negative(f"init.gates.{gate}.{name}", hp[name])
            _require(math.isfinite(hp["mu"]), f"init.gates.{gate}.mu", hp["mu"], "finite")


@dataclass
class CriticalInitConfig(InitConfig):
    """The critical initialization (docs/theory.md §10): meanfield hyperparameters solved for the task's
    T and inputs. Fixed choices of the family are fields; the keep gate and the candidate's recurrent
    scale are solved."""

    scheme: InitScheme = InitScheme.critical
    criterion: Criterion = Criterion.tied
    log10_gain: float = -0.5  # eq. (T35): log10 rms gain of the tied T-step product (< 0)
    t: Optional[int] = None  # the steps to span; null: the task's sequence length
    recurrent: Recurrent = Recurrent.orthogonal
    gate_sigma: float = 0.0  # recurrent scale of the gates (0: gates deterministic at the operating point)
    # the gates' and the candidate's input scales are init.drive's (every init has it): null gates are
    # chosen by the theory of the write (docs/theory.md §10.8), a null candidate is 1
    open_bias: float = 3.0  # LSTM output gate, GRU reset gate
    isometry: Isometry = Isometry.auto  # docs/theory.md §10.2 (gain) and §10.6 (phase)
    write: float = 30.0  # isometry=phase: T(1 - f), the keep gate's write over the T steps
    log10_min_gain: float = -0.5  # isometry=phase: log10 of the product's smallest singular value (< 0)
    cache: bool = True  # reuse a solution from $MFTRNN_CACHE/critical (default ~/.cache/mftrnn/critical)

    def __post_init__(self) -> None:
        _require(math.isfinite(self.log10_gain) and self.log10_gain < 0, "init.log10_gain", self.log10_gain, "< 0")
        if self.t is not None:
            _require(self.t >= 1, "init.t", self.t, "null or an integer >= 1")
        _non_negative("init.gate_sigma", self.gate_sigma)
        _require(math.isfinite(self.open_bias), "init.open_bias", self.open_bias, "finite")
        _require(math.isfinite(self.write) and self.write > 0, "init.write", self.write, "> 0")
        _require(math.isfinite(self.log10_min_gain) and self.log10_min_gain < 0, "init.log10_min_gain",
                 self.log10_min_gain, "< 0")
        if self.isometry is Isometry.phase:
            _require(self.criterion is Criterion.tied and self.recurrent is Recurrent.orthogonal, "init.isometry",
                     "phase", "used with init.criterion=tied and init.recurrent=orthogonal (eigen-angles of "
                     "orthogonal weights at spectral radius 1)")


def _check_gates(init: Any, cell: CellConfig) -> None:
    """Per-gate values belong to init=meanfield, with the cell's own gate names."""
    gates = getattr(init, "gates", None)
    if gates is None:
        return
    want = LstmGates if cell.kind is CellKind.lstm else GruGates
    names = ", ".join(f.name for f in dataclasses.fields(want))
    if not isinstance(init, MeanFieldInitConfig):
        raise ConfigError(f"init.gates: per-gate values need init=meanfield (init={init.scheme.value} has none); "
                          f"cell={cell.kind.value} has gates {names}")
    _require(isinstance(gates, want), "init.gates", type(gates).__name__,
             f"{want.__name__} for cell={cell.kind.value} (gates {names})")


# --------------------------------------------------------------------------- training
@dataclass
class OptimConfig:
    name: OptimName = MISSING
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0  # sgd and rmsprop
    clip: Optional[float] = 1.0  # global gradient-norm clip; null disables
    # After every optimizer step, the candidate's recurrent block (LSTM U_g, GRU U_n) of each layer is
    # scaled down to this spectral norm where it exceeds it; null: no bound (docs/theory.md §10.5)
    candidate_norm_cap: Optional[float] = None
    # Linear learning-rate warm-up: step s (1-based) uses lr · min(1, s / warmup_steps); 0: none. Adam's
    # first steps at the full rate can push a critical network's radius past 1 (docs/theory.md §10.6)
    warmup_steps: int = 0

    def lr_at(self, step: int) -> float:
        """The learning rate of optimizer step `step` (1-based), with the warm-up."""
        return self.lr * min(1.0, step / self.warmup_steps) if self.warmup_steps else self.lr

    def __post_init__(self) -> None:
        _positive("optim.lr", self.lr)
        _require(self.warmup_steps >= 0, "optim.warmup_steps", self.warmup_steps, "an integer >= 0")
        if self.candidate_norm_cap is not None:
            _positive("optim.candidate_norm_cap", self.candidate_norm_cap)
        _non_negative("optim.weight_decay", self.weight_decay)
        _require(0 <= self.momentum < 1, "optim.momentum", self.momentum, "in [0, 1)")
        if self.clip is not None:
            _positive("optim.clip", self.clip)


@dataclass
class DataConfig:
    root: str = "${oc.env:MFTRNN_DATA,./data}"
    download: bool = False
    val_size: int = 5000
    limit: Optional[int] = None  # keep the first N examples of each split (smoke tests)

    def __post_init__(self) -> None:
        _require(self.val_size >= 1, "data.val_size", self.val_size, "an integer >= 1")
        if self.limit is not None:
            _require(self.limit >= 1, "data.limit", self.limit, "null or an integer >= 1")


@dataclass
class LoopConfig:
    steps: int = 20_000
    batch_size: int = 128
    eval_every: int = 1000
    eval_batch_size: int = 1000
    log_every: int = 50
    ckpt_every: int = 500
    resume: Resume = Resume.auto
    fail_on_divergence: bool = False
    progress: bool = True  # tqdm progress bar
    # also evaluate the test split at every evaluation (test/acc curves, as the paper draws them); the
    # test set is never used to select anything
    eval_test: bool = False

    def __post_init__(self) -> None:
        _require(self.steps >= 0, "train.steps", self.steps, "an integer >= 0")
        for key in ("batch_size", "eval_every", "eval_batch_size", "log_every", "ckpt_every"):
            value = getattr(self, key)
            _require(value >= 1, f"train.{key}", value, "an integer >= 1")


@dataclass
class WandbConfig:
    mode: WandbMode = WandbMode.offline
    project: str = "mftrnn"
    entity: Optional[str] = None
    group: Optional[str] = None  # default: experiment_name (the sweep's name)
    tags: List[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """The whole configuration of `mftrnn train` (conf/train.yaml composes it)."""

    task: Any = MISSING  # one of the TaskConfig subclasses
    cell: CellConfig = MISSING
    init: Any = MISSING  # InitConfig or a subclass
    optim: OptimConfig = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: LoopConfig = field(default_factory=LoopConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    seed: int = 0
    deterministic: bool = True
    device: Device = Device.auto
    experiment_name: str = "adhoc"
    # budgets of the reproduction experiments (conf/scale/*.yaml: smoke, quick, full), read by their
    # presets (conf/experiment/*.yaml) through interpolation; None outside them
    scale: Any = None

    def __post_init__(self) -> None:
        _check_gates(self.init, self.cell)


# --------------------------------------------------------------------------- theory
class GruForm(Enum):
    reset_after = "reset_after"  # nn.GRU / cuDNN: n = tanh(W x + b + r * (U h + b_hn))
    reset_before = "reset_before"  # the paper's: n = tanh(W x + U (r * h) + b)


class TheoryMethod(Enum):
    auto = "auto"  # closed: the per-unit quadrature (docs/theory.md §2.5)
    closed = "closed"
    population = "population"


class TheoryWeights(Enum):
    untied = "untied"  # the paper's mean field: recurrent weights as if redrawn every step
    tied = "tied"  # one weight matrix at every step, as real networks (docs/theory.md §7)


class InputSource(Enum):
    scenario = "scenario"  # i.i.d. Gaussian inputs of second moment R, independent up to the split
    task = "task"  # two real examples of the configured task (theory/input=task)


@dataclass
class InputConfig:
    """The two input sequences (conf/theory/input/<source>.yaml)."""

    source: InputSource = InputSource.scenario
    R: float = 1.0  # scenario: per-step input second moment |x|^2 / n_in
    examples: List[int] = field(default_factory=lambda: [0, 1])  # task: two indices into the test split

    def __post_init__(self) -> None:
        _non_negative("theory.input.R", self.R)
        _require(len(self.examples) == 2 and self.examples[0] != self.examples[1] and min(self.examples) >= 0,
                 "theory.input.examples", list(self.examples), "two different test-set indices >= 0")


@dataclass
class GridConfig:
    """A 2-D slice of hyperparameters: [key, min, max, points], key = init.gates.<gate>.<mu|rho|sigma|nu>
    or theory.input.R."""

    x: Optional[List[Any]] = None
    y: Optional[List[Any]] = None
    c: List[float] = field(default_factory=lambda: [1.0, 3.0, 6.0])  # contours c * xi_C = T
    T: Optional[int] = None  # the memory both contours mark (steps); null = theory.steps - theory.split
    horizon: bool = False  # also the memory-horizon grid of both theories (a population per point)
    population: int = 2000  # units per grid point of the memory-horizon grids (both theories)
    chunk_gb: float = 4.0  # device memory for the horizon grid's points computed at once

    def __post_init__(self) -> None:
        for name in ("x", "y"):
            axis = getattr(self, name)
            if axis is None:
                continue
            key = f"theory.grid.{name}"
            _require(len(axis) == 4, key, axis, "[key, min, max, points]")
            try:
                lo, hi, n = float(axis[1]), float(axis[2]), int(axis[3])
            except (TypeError, ValueError):
                raise ConfigError(f"{key}={axis!r} is not allowed: {key} must be [key, min, max, points] "
                                  f"with numbers for min, max and points") from None
            _require(n >= 2 and hi > lo, key, axis, "[key, min, max, points] with max > min and points >= 2")
        _require(self.population >= 100, "theory.grid.population", self.population, "an integer >= 100")
        _require(self.T is None or self.T >= 1, "theory.grid.T", self.T, "null or an integer >= 1")
        _require(self.chunk_gb > 0, "theory.grid.chunk_gb", self.chunk_gb, "a number > 0")
        _require((self.x is None) == (self.y is None), "theory.grid", [self.x, self.y], "both x and y, or neither")


@dataclass
class SpectrumConfig:
    density: bool = True  # the density of squared singular values of one Jacobian
    product: bool = False  # ... and of the product of `product_steps` Jacobians (slower)
    points: int = 200  # lambda grid of the one-step density
    product_steps: int = 10  # T of the product of Jacobians
    product_points: int = 60  # lambda grid of the product's density
    product_method: str = "exact"  # exact (block linearization, eq. (T33)) | free (S-transforms, eq. (T32))
    population: int = 4000  # samples of the per-unit Jacobian diagonals

    def __post_init__(self) -> None:
        _require(self.points >= 10, "theory.spectrum.points", self.points, "an integer >= 10")
        _require(self.product_steps >= 1, "theory.spectrum.product_steps", self.product_steps, "an integer >= 1")
        _require(self.population >= 100, "theory.spectrum.population", self.population, "an integer >= 100")
        _require(self.product_method in ("exact", "free"), "theory.spectrum.product_method", self.product_method,
                 "exact or free")
        _require(self.product_points >= 10, "theory.spectrum.product_points", self.product_points, "an integer >= 10")


@dataclass
class TheoryOptions:
    gru_form: GruForm = GruForm.reset_after
    weights: TheoryWeights = TheoryWeights.untied
    method: TheoryMethod = TheoryMethod.auto  # of the untied theory
    steps: int = 100  # T of the two-sequence scenario
    split: int = 20  # inputs independent for t <= split, identical after
    input: InputConfig = field(default_factory=InputConfig)
    population: Optional[int] = None  # units of the sampled solvers; null: their defaults (200,000 untied, 20,000 tied)
    horizon_eps: float = 1e-2  # memory horizon: 1 - C/Q below horizon_eps x its value at the split
    simulate: bool = False
    width: int = 1000  # simulated networks (meanfield, critical; pytorch, standard and chrono use model.hidden)
    seeds: int = 2
    grid: GridConfig = field(default_factory=GridConfig)
    spectrum: SpectrumConfig = field(default_factory=SpectrumConfig)

    def __post_init__(self) -> None:
        _require(self.steps >= 1, "theory.steps", self.steps, "an integer >= 1")
        _require(0 <= self.split <= self.steps, "theory.split", self.split, "in [0, theory.steps]")
        _require(self.population is None or self.population >= 100, "theory.population", self.population,
                 "null or an integer >= 100")
        _require(0 < self.horizon_eps < 1, "theory.horizon_eps", self.horizon_eps, "a number in (0, 1)")
        _require(self.width >= 2, "theory.width", self.width, "an integer >= 2")
        _require(self.seeds >= 1, "theory.seeds", self.seeds, "an integer >= 1")


@dataclass
class TheoryConfig:
    """The whole configuration of `mftrnn theory` (conf/theory.yaml composes it)."""

    cell: CellConfig = MISSING
    init: Any = MISSING
    theory: TheoryOptions = field(default_factory=TheoryOptions)
    # The task sets the input size and length an init is drawn for (pytorch, standard: the input
    # scale; chrono: T_max) and, with theory/input=task, feeds its examples.
    task: Any = None
    model: ModelConfig = field(default_factory=ModelConfig)  # hidden: the width an init is drawn for
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    device: Device = Device.auto

    def __post_init__(self) -> None:
        if self.task is None:
            raise ConfigError("task: `mftrnn theory` needs a task (task=padded_mnist, ...)")


# --------------------------------------------------------------------------- critical
@dataclass
class VerifyConfig:
    """The check of a critical solution by the tied population solver on two real examples of the task
    (docs/theory.md §7.7), for T <= max_steps (its cost grows like T^2); longer T: the linearized
    tied theory alone (docs/theory.md §10.3)."""

    enabled: bool = True
    max_steps: int = 1100
    population: int = 2000
    examples: List[int] = field(default_factory=lambda: [0, 1])
    eps: float = 1e-2  # memory horizon: distance below eps x its value at the split, eq. (T29)

    def __post_init__(self) -> None:
        _require(self.max_steps >= 1, "verify.max_steps", self.max_steps, "an integer >= 1")
        _require(self.population >= 100, "verify.population", self.population, "an integer >= 100")
        _require(0 < self.eps < 1, "verify.eps", self.eps, "a number in (0, 1)")


@dataclass
class CriticalConfig:
    """The whole configuration of `mftrnn critical` (conf/critical.yaml composes it)."""

    cell: CellConfig = MISSING
    init: Any = MISSING  # CriticalInitConfig: the solver's options
    task: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    seed: int = 0
    device: Device = Device.cpu

    def __post_init__(self) -> None:
        scheme = getattr(self.init, "scheme", None)
        _require(isinstance(self.init, CriticalInitConfig), "init", getattr(scheme, "value", scheme),
                 "critical (`mftrnn critical` solves init=critical; its options are init.*)")


@dataclass
class DiagnoseTheoryConfig:
    """The theory beside the measurements: the untied and tied two-sequence trajectories on the first
    pair (the tied population solver only for T <= max_steps: its cost grows like T^2)."""

    enabled: bool = True
    max_steps: int = 1100
    population: int = 2000

    def __post_init__(self) -> None:
        _require(self.population >= 100, "theory.population", self.population, "an integer >= 100")


@dataclass
class DiagnoseConfig:
    """The whole configuration of `mftrnn diagnose` (conf/diagnose.yaml composes it)."""

    task: Any = MISSING
    cell: CellConfig = MISSING
    init: Any = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ckpt: Optional[str] = None  # a checkpoint (ckpt_*.pt) or init.pt of `mftrnn train`: diagnose those weights
    pairs: int = 8  # pairs of test examples with different labels
    probes: int = 4  # random directions u per sequence for the gains
    eps: float = 1e-2  # memory horizon, eq. (T29)
    theory: DiagnoseTheoryConfig = field(default_factory=DiagnoseTheoryConfig)
    seed: int = 0
    device: Device = Device.auto

    def __post_init__(self) -> None:
        _require(self.pairs >= 1, "pairs", self.pairs, "an integer >= 1")
        _require(self.probes >= 1, "probes", self.probes, "an integer >= 1")
        _require(0 < self.eps < 1, "eps", self.eps, "a number in (0, 1)")
        _check_gates(self.init, self.cell)


# --------------------------------------------------------------------------- registry
def run_tag(override_dirname: str) -> str:
    """The run-dir component made from a job's overrides (Hydra's `override_dirname`).

    Empty overrides give "default"; '/' in a value would nest dirs (hydra#3018), so it becomes '_', as do
    the commas inside a list value (whose brackets are dropped);
    an over-long name is shortened with a hash so that it stays a valid, deterministic file name.
    """
    # A list value (theory.grid.x=[key,lo,hi,n]) loses its brackets, its commas become '_'; the commas
    # between overrides stay.
    tag = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).replace(",", "_"), override_dirname)
    tag = tag.replace("/", "_") or "default"
    if len(tag) > 160:
        tag = tag[:140] + "-" + hashlib.sha1(tag.encode()).hexdigest()[:12]
    return tag


# Keys that may differ between a checkpoint and the run that resumes it: they change neither the
# model nor the data order (train.steps may grow, to continue a finished run). conf/train.yaml keeps
# the same keys out of run-dir names, and `mftrnn report` never labels runs by them.
VOLATILE_KEYS = ("train.steps", "train.resume", "train.ckpt_every", "train.progress", "train.eval_every", "train.eval_test",
                 "train.eval_batch_size", "train.log_every", "device", "data.root", "data.download", "wandb",
                 "experiment_name", "scale")


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config dict as {"a.b.c": value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def under(key: str, prefixes) -> bool:
    """`key` is one of `prefixes` or lies below one of them (wandb.mode under wandb)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def register_configs() -> None:
    """Store the schemas in Hydra's ConfigStore under `schema/...` (never as group choices)."""
    OmegaConf.register_new_resolver("run_tag", run_tag, replace=True)
    from mftrnn.gpus import gpu_count  # `hydra/launcher=gpus`: n_jobs = ${mftrnn_gpus:}

    OmegaConf.register_new_resolver("mftrnn_gpus", gpu_count, replace=True)
    # ${mftrnn_neg:x} = -x: a preset ties one hyperparameter to another (the LSTM heat map's i.mu = -f.mu)
    OmegaConf.register_new_resolver("mftrnn_neg", lambda x: -float(x), replace=True)
    cs = ConfigStore.instance()
    cs.store(name="base_train", node=TrainConfig)
    cs.store(name="base_theory", node=TheoryConfig)
    cs.store(name="base_critical", node=CriticalConfig)
    cs.store(name="base_diagnose", node=DiagnoseConfig)
    for name, node in {
        "padded_mnist": PaddedMnistConfig,
        "unrolled_mnist": UnrolledMnistConfig,
        "cifar10": Cifar10Config,
        "repeated_pixel": RepeatedPixelConfig,
    }.items():
        cs.store(group="schema/task", name=name, node=node)
    cs.store(group="schema/cell", name="base", node=CellConfig)
    cs.store(group="schema/init", name="base", node=InitConfig)
    cs.store(group="schema/init", name="chrono", node=ChronoInitConfig)
    cs.store(group="schema/init", name="meanfield", node=MeanFieldInitConfig)
    cs.store(group="schema/init", name="critical", node=CriticalInitConfig)
    cs.store(group="schema/gates", name="lstm", node=LstmGates)
    cs.store(group="schema/gates", name="gru", node=GruGates)
    cs.store(group="schema/optim", name="base", node=OptimConfig)


def to_objects(cfg: DictConfig) -> Any:
    """Resolve the composed config and turn it into dataclass objects, running every check.

    Raises ConfigError (one line, naming the key) on a bad value or a missing mandatory value.
    """
    try:
        obj = OmegaConf.to_object(cfg)
    except ConfigError:
        raise
    except Exception as exc:  # OmegaConf's own errors: missing values, failed interpolations
        msg = str(exc).splitlines()[0]
        key = getattr(exc, "full_key", None)
        raise ConfigError(f"{key}: {msg}" if key else msg) from None
    assert dataclasses.is_dataclass(obj)
    unknown = _unknown_keys(OmegaConf.to_container(cfg, resolve=False), obj)
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]} (added with '+'?); "
                          f"`--cfg job` lists the keys")
    return obj


def _unknown_keys(container: Any, obj: Any, prefix: str = "") -> list:
    """Keys of the composed config that no schema dataclass declares (added with `+key=`)."""
    if not (dataclasses.is_dataclass(obj) and isinstance(container, dict)):
        return []
    names = {f.name for f in dataclasses.fields(obj)}
    found = []
    for key, value in container.items():
        if key not in names:
            found.append(prefix + key)
        else:
            found += _unknown_keys(value, getattr(obj, key), f"{prefix}{key}.")
    return found
