"""`mftrnn theory theory.simulate=true`: simulated networks beside the theory, on the same inputs."""
from __future__ import annotations

import logging

import numpy as np

from mftrnn.schema import InitScheme, TheoryConfig
from mftrnn.theory.hyper import Hyper
from mftrnn.theory.inputs import TwoInputs

log = logging.getLogger(__name__)


def simulate_all(hp: Hyper, conf: TheoryConfig, inp: TwoInputs, device: str) -> dict:
    """Tied networks (initialized by the configured init, as `mftrnn train` does) and untied ones
    (fresh weights from the same law every step), of width theory.width, theory.seeds seeds each:
    the two-sequence trajectories on the theory's inputs (mean over seeds) and the Jacobian spectra
    (first seed) at the theory's stationary input moment R."""
    from mftrnn.theory.simulate import jacobian_spectra, simulate_trajectory

    th = conf.theory
    seq_len = int(hp.source.get("seq_len", inp.steps))
    # The scenario's inputs: 200 of them (the theory takes n_in -> inf), but where the init's input
    # scale depends on n_in (pytorch, standard, chrono) the task's own input size.
    width_free = conf.init.scheme in (InitScheme.meanfield, InitScheme.critical)
    n_in = 200 if width_free else int(hp.source["input_size"])
    # pytorch, standard and chrono take their scales from the layer's shape (Glorot's input scale falls
    # with the hidden size): their networks are drawn at the model's hidden size, the one the theory's
    # hyperparameters describe, not at theory.width, where they would be another network
    width = th.width if width_free else int(hp.source["hidden"])
    # init=critical was solved into the Hyper: its networks are drawn as meanfield with those values
    init = None if conf.init.scheme is InitScheme.critical else conf.init
    out: dict = {"width": width, "seeds": th.seeds, "R_spectra": inp.R, "input_size": n_in}
    for tied in (True, False):
        name = "tied" if tied else "untied"
        runs = [simulate_trajectory(hp, width, inp.steps, inp.split, inp.R, n_in, tied=tied, seed=conf.seed + s,
                                    device=device, inputs=inp.x, init=init, seq_len=seq_len)
                for s in range(th.seeds)]
        mean = lambda key: np.mean([getattr(r, key) for r in runs], axis=0)  # noqa: E731
        per_seed = [r.d_h / np.sqrt(np.maximum(r.q_h_a * r.q_h_b, 1e-300)) for r in runs]
        entry = {"Q_h_a": mean("q_h_a"), "Q_h_b": mean("q_h_b"), "C_h": mean("c_h"), "distance": mean("d_h"),
                 "one_minus_c": np.mean(per_seed, axis=0)}
        if runs[0].q_s_a is not None:
            entry["Q_s_a"] = mean("q_s_a")
        try:
            spec = jacobian_spectra(hp, width, inp.R, product_steps=th.spectrum.product_steps, input_size=n_in, tied=tied,
                                    seed=conf.seed, device=device, init=init, seq_len=seq_len)
            entry["jacobian"] = {"m1": spec.m1, "m2": spec.m2, "one_step": np.sort(spec.one_step),
                                 "product": np.sort(spec.product)}
        except NotImplementedError as exc:
            entry["jacobian"] = {"note": str(exc)}
        out[name] = entry
        log.info("simulated %s %s networks (width %d, %d seeds)", name, hp.cell, width, th.seeds)
    return out
