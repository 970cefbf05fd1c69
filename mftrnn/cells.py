"""Gate names per cell: the one table that the models, the inits, the theory and the simulator share.

Names and block order are PyTorch's (docs/theory.md §1): nn.LSTM stacks its gates as (i, f, g, o),
nn.GRU as (r, z, n). "gru_reset_before" is the paper's GRU form, which only the theory and the
simulator run; it reuses nn.GRU's names. The keep gate (the paper's f: the fraction of the state
carried over) is f in the LSTM and z in the GRU; the candidate is g and n.
"""
from __future__ import annotations

CELLS: tuple[str, ...] = ("lstm", "gru", "gru_reset_before")
GATES: dict[str, tuple[str, ...]] = {
    "lstm": ("i", "f", "g", "o"),
    "gru": ("r", "z", "n"),
    "gru_reset_before": ("r", "z", "n"),
}
KEEP: dict[str, str] = {"lstm": "f", "gru": "z", "gru_reset_before": "z"}
CANDIDATE: dict[str, str] = {"lstm": "g", "gru": "n", "gru_reset_before": "n"}


def gates_of(cell) -> tuple[str, ...]:
    """The gate names of `cell`, given as a name or as an Enum whose value is one (CellKind)."""
    name = getattr(cell, "value", cell)
    if name not in GATES:
        raise ValueError(f"cell={name!r} is not allowed: cell must be one of {CELLS}")
    return GATES[name]
