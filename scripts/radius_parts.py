#!/usr/bin/env python3
"""What moves the spectral radius at the zero state during training (docs/theory.md §10.4): the radius of
the one-step Jacobian at h = c = 0, x = 0 (eq. (T34)) for the initialization, the trained weights, and
the two mixtures (trained recurrent weights with the init's biases, and the reverse), with the gates'
mean keep / write / open values and the spectral norm of the candidate's recurrent block.

    python scripts/radius_parts.py lstm:critical+init.log10_gain=-0.42:5000:path/to/model_1000.pt ...

Cases as in scripts/diagnose_table.py (`cell:init[+overrides]:pad:checkpoint`); the init is rebuilt as
`mftrnn train` builds it, and the checkpoint read, by `mftrnn diagnose`'s own code (seed 0, hidden 256).
Checkpoints: the model_N.pt kept by scripts/gpu/evidence.py.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from hydra import compose, initialize_config_module


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def jacobian_at_zero(cell: str, st: dict, H: int) -> tuple[np.ndarray, dict]:
    """The one-step Jacobian of the state at zero state and zero input (H x H), and the gates there."""
    b = (st["rnn.bias_ih_l0"] + st["rnn.bias_hh_l0"]).numpy()
    U = st["rnn.weight_hh_l0"].numpy()
    blk = lambda v, k: v[k * H:(k + 1) * H]  # noqa: E731
    if cell == "lstm":  # gates i, f, g, o; c' = f c + i tanh(g + U_g h), h = o tanh(c)
        i, f, g, o = (_sig(blk(b, 0)), _sig(blk(b, 1)), blk(b, 2), _sig(blk(b, 3)))
        J = np.diag(f) + (i * (1 - np.tanh(g) ** 2))[:, None] * blk(U, 2) * o[None, :]
        return J, {"keep": float(f.mean()), "write": float(i.mean()), "open": float(o.mean()),
                   "candidate_norm": float(np.linalg.norm(blk(U, 2), 2))}
    # GRU, gates r, z, n: h' = z h + (1 - z) tanh(W x + b_in + r (U_n h + b_hn))
    bi, bh = st["rnn.bias_ih_l0"].numpy(), st["rnn.bias_hh_l0"].numpy()
    r, z = _sig(blk(b, 0)), _sig(blk(b, 1))
    pre = blk(bi, 2) + r * blk(bh, 2)
    J = np.diag(z) + ((1 - z) * (1 - np.tanh(pre) ** 2) * r)[:, None] * blk(U, 2)
    return J, {"keep": float(z.mean()), "write": float((1 - z).mean()), "open": float(r.mean()),
               "candidate_norm": float(np.linalg.norm(blk(U, 2), 2))}


def radius(cell: str, st: dict, H: int) -> tuple[float, dict]:
    J, gates = jacobian_at_zero(cell, st, H)
    return float(np.abs(np.linalg.eigvals(J)).max()), gates


def weights(cell: str, init: str, pad: int, hidden: int, ckpt: str | None = None) -> dict:
    """The init's weights as `mftrnn train` builds them (mftrnn diagnose's build_model: seed 0, module,
    init), or with `ckpt` the checkpoint's, as float64 tensors."""
    from mftrnn.data import load_splits
    from mftrnn.diagnose_app import build_model
    from mftrnn.schema import to_objects
    from mftrnn.tasks import build_task

    scheme, *extra = init.split("+")
    with initialize_config_module(config_module="mftrnn.conf", version_base="1.3"):
        cfg = compose(config_name="diagnose", overrides=[f"cell={cell}", f"init={scheme}", *extra, f"task.pad={pad}",
                                                          f"model.hidden={hidden}"] + ([f"ckpt='{ckpt}'"] if ckpt else []))
    conf = to_objects(cfg)
    task = build_task(conf.task)
    splits = load_splits(task.dataset, conf.data)
    task.fit(splits)
    model, _ = build_model(conf, task, splits)
    return {k: v.detach().double() for k, v in model.state_dict().items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="+")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rows = []
    print("| case | radius: init | trained | trained recurrent weights, init biases | init weights, trained biases "
          "| keep / write / open (trained) | ‖U_cand‖₂ init → trained |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for case in a.cases:
        cell, init, pad, ckpt = case.split(":", 3)
        s0 = weights(cell, init, int(pad), a.hidden)
        st = weights(cell, init, int(pad), a.hidden, ckpt)
        u_only = {**s0, "rnn.weight_hh_l0": st["rnn.weight_hh_l0"]}
        b_only = {**s0, "rnn.bias_ih_l0": st["rnn.bias_ih_l0"], "rnn.bias_hh_l0": st["rnn.bias_hh_l0"]}
        (r0, g0), (r1, g1) = radius(cell, s0, a.hidden), radius(cell, st, a.hidden)
        ru, rb = radius(cell, u_only, a.hidden)[0], radius(cell, b_only, a.hidden)[0]
        rows.append({"case": case, "radius_init": r0, "radius_trained": r1, "radius_trained_recurrent": ru,
                     "radius_trained_biases": rb, "gates_trained": g1, "candidate_norm_init": g0["candidate_norm"]})
        print(f"| {cell} {init} pad {pad} {ckpt.rsplit('/', 1)[-1]} | {r0:.5f} | {r1:.5f} | {ru:.5f} | {rb:.5f} | "
              f"{g1['keep']:.5f} / {g1['write']:.5f} / {g1['open']:.3f} | {g0['candidate_norm']:.2f} → "
              f"{g1['candidate_norm']:.2f} |", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
