"""The two input sequences every two-sequence computation uses: one place that builds them.

Two sources (docs/theory.md §3, §7.7):

* the scenario: inputs i.i.d. of second moment R per entry, independent for t <= split and
  identical after (R_ab = 0, then R);
* a task: two test examples of a configured task, built by the task itself, with the padding made
  the same for both, so that the question is whether the network still tells the two images apart.
  T is the task's length and the split the last step at which the inputs differ.

Each theory takes them in its own form: the closed forms and the untied population the per-step
moments (R_a, R_b, R_ab), the tied theory the features X = x / sqrt(n_in), the simulated networks the
task's sequences themselves (or the scenario, drawn by mftrnn.theory.simulate).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from mftrnn.errors import ConfigError

Tensor = torch.Tensor


@dataclass
class TwoInputs:
    """Two input sequences of `steps` steps that are identical after step `split` (1-based)."""

    steps: int  # T
    split: int  # identical after this step
    R: float  # input second moment of the stationary quantities (fixed point, xi, spectra)
    x: Optional[Tensor] = None  # (T, 2, n_in) float64 task sequences; None: the scenario
    info: dict = field(default_factory=dict)

    @property
    def moments(self) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per step (R_a, R_b, R_ab) = (|x_a|^2, |x_b|^2, x_a . x_b) / n_in; None for the scenario, whose
        moments the solvers build from R and the split themselves."""
        if self.x is None:
            return None
        n_in = self.x.shape[2]
        xa, xb = self.x[:, 0], self.x[:, 1]
        return tuple(((u * v).sum(-1) / n_in).numpy() for u, v in ((xa, xa), (xb, xb), (xa, xb)))

    def features(self) -> Tensor:
        """(2, T, d) features of the tied theory's input kernel, eq. (T26)."""
        from mftrnn.theory import tied

        return tied.scenario_features(self.steps, self.split, self.R) if self.x is None else tied.sequence_features(self.x)


def scenario(steps: int, split: int, R: float) -> TwoInputs:
    """The two-sequence scenario: i.i.d. inputs of second moment R, independent up to `split`."""
    if steps < 1 or not 0 <= split <= steps:
        raise ConfigError(f"the scenario needs steps >= 1 and 0 <= split <= steps; got steps={steps}, split={split}")
    if not (math.isfinite(R) and R >= 0):
        raise ConfigError(f"theory.input.R={R} is not allowed: R must be finite and >= 0")
    return TwoInputs(steps, split, float(R), None, {"source": "scenario", "R": float(R), "steps": steps,
                                                     "split": split})


def task_examples(task_cfg, data_cfg, examples: list[int], seed: int = 0) -> TwoInputs:
    """Two test examples of the task `task_cfg` (a TaskConfig), built by the task itself, padding made
    the same for both. R (for the stationary quantities) is the mean |x_t|^2 / n_in after the split,
    i.e. the padding's (0 for zero padding)."""
    from mftrnn.data import load_splits
    from mftrnn.tasks import build_task

    task = build_task(task_cfg)
    splits = load_splits(task.dataset, data_cfg)
    task.fit(splits)
    idx = [int(i) for i in examples]
    if max(idx) >= len(splits.test_x):
        raise ConfigError(f"theory.input.examples={idx} is not allowed: the test split has {len(splits.test_x)} examples")
    gen = torch.Generator().manual_seed(seed)
    x = task.sequences(splits.test_x[idx], gen).to(torch.float64)  # (T, 2, n_in)
    content = getattr(task, "image_steps", task.seq_len)
    x[content:, 1] = x[content:, 0]  # the same padding for both
    differ = (x[:, 0] != x[:, 1]).any(-1).nonzero()
    split = int(differ.max()) + 1 if len(differ) else 0
    n_in = x.shape[2]
    r_a = (x[:, 0] ** 2).sum(-1) / n_in
    R = float(r_a[split:].mean()) if split < len(x) else float(r_a.mean())
    out = TwoInputs(len(x), split, R, x)
    r_a, r_b, r_ab = out.moments
    out.info = {"source": "task", "task": task_cfg.name.value, "examples": idx,
                "labels": [int(v) for v in splits.test_y[idx]], "steps": len(x), "split": split, "input_size": n_in,
                "R_stationary": R, "R_a": r_a, "R_b": r_b, "R_ab": r_ab}
    return out


def from_config(conf) -> TwoInputs:
    """The inputs a TheoryConfig asks for (theory/input=scenario or task)."""
    th = conf.theory
    if th.input.source.value == "scenario":
        return scenario(th.steps, th.split, th.input.R)
    if conf.task is None:
        raise ConfigError("theory/input=task needs a task (task=padded_mnist, ...)")
    return task_examples(conf.task, conf.data, list(th.input.examples), conf.seed)
