"""The classifier: a cuDNN LSTM or GRU over the whole sequence and a linear readout of h^T.

Parameter names are PyTorch's: the recurrent module is `rnn` (nn.LSTM / nn.GRU, gate blocks LSTM
i, f, g, o and GRU r, z, n) and the readout is `head`, so `init.pt` and checkpoints load into
plain PyTorch code.
"""
from __future__ import annotations

import torch
from torch import nn

from mftrnn.cells import CANDIDATE
from mftrnn.cells import GATES as _GATE_NAMES
from mftrnn.schema import CellKind, ModelConfig

CELLS: dict[CellKind, type[nn.RNNBase]] = {CellKind.lstm: nn.LSTM, CellKind.gru: nn.GRU}
# Gate blocks of each module, in order (the names live in mftrnn/cells.py)
GATES: dict[CellKind, tuple[str, ...]] = {kind: _GATE_NAMES[kind.value] for kind in CellKind}


class RNNClassifier(nn.Module):
    """logits = head(h^T), h^T the top layer's last hidden state (docs/theory.md §1)."""

    def __init__(self, cell: CellKind, input_size: int, cfg: ModelConfig, num_classes: int = 10) -> None:
        super().__init__()
        self.cell = cell
        self.max_chunk = cfg.max_chunk
        self.rnn = CELLS[cell](input_size, cfg.hidden, num_layers=cfg.layers)  # time-major (T, B, n_in)
        self.head = nn.Linear(cfg.hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (T, B, n_in) -> logits (B, num_classes).

        cuDNN rejects T > 65,535 (pytorch#133751): longer sequences run in chunks with the state
        carried across, so gradients still flow through every step (full BPTT).
        """
        state = None
        for piece in x.split(self.max_chunk, dim=0):
            out, state = self.rnn(piece, state)  # out: (t, B, H)
        return self.head(out[-1])  # (B, num_classes)


def norm_cap_factor(blocks: torch.Tensor, cap: float | torch.Tensor) -> torch.Tensor:
    """min(1, cap / ||W||_2) for a stack of square blocks (..., H, H); `cap`, a number or a tensor,
    broadcasts against the leading dims. Non-finite entries count as zero (a diverged run is stopped elsewhere; svdvals must not
    fail on it)."""
    norms = torch.linalg.svdvals(torch.nan_to_num(blocks, nan=0.0, posinf=0.0, neginf=0.0))[..., 0]
    return torch.clamp(cap / norms.clamp_min(1e-30), max=1.0)


@torch.no_grad()
def cap_candidate_norm(rnn: nn.RNNBase, cap: float) -> None:
    """Scale the candidate's recurrent block of every layer (rows of gate g / n of weight_hh, (H, H)) so
    that its spectral norm is at most `cap` (docs/theory.md §10.5: the training-side condition)."""
    kind = CellKind.lstm if isinstance(rnn, nn.LSTM) else CellKind.gru
    j, h = GATES[kind].index(CANDIDATE[kind.value]), rnn.hidden_size
    for layer in range(rnn.num_layers):
        block = getattr(rnn, f"weight_hh_l{layer}")[j * h:(j + 1) * h]  # (H, H), a view
        block.mul_(norm_cap_factor(block, cap))
