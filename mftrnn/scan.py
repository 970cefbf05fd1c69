"""K runs' recurrent layers as one loop over time with batched per-run weights (the scan packing layout).

Block-diagonal packing (mftrnn/packed.py) hands K runs to one cuDNN module of hidden K·H, whose
recurrent GEMM multiplies K² blocks of which K are not zero: from K = 4 on that waste, not the kernel
launches, limits its runs/hour (docs/performance.md, Packed sweeps). Here each step multiplies each
run's state by its own (4H or 3H) × H block only, with one batched matmul (torch.baddbmm over the run
axis), so the work grows as K. The price is a loop in Python: about ten kernels per step where cuDNN
launches two, which CUDA graphs of the training forward and backward replay without the host, with
the step's pointwise part fused by torch.compile (mftrnn.packed.capture_training; measured in
docs/performance.md, Packed sweeps: 6.1× (LSTM) and 6.9× (GRU) the runs/hour of one run alone at
T = 1028 on an H200).

The equations are nn.LSTM's and nn.GRU's (docs/theory.md §1; gate order in mftrnn/cells.py), the GRU
with PyTorch's reset-after candidate, n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)). Weights are a
standalone nn.LSTM / nn.GRU layer's, stacked over a leading run axis (`stack_layers`).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from mftrnn.cells import gates_of

Tensor = torch.Tensor


def stack_layers(layers: list[nn.RNNBase], layer: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Layer `layer` of K standalone nn.LSTM / nn.GRU modules as (w_ih (K, G·H, n_in), w_hh (K, G·H, H),
    b_ih (K, G·H), b_hh (K, G·H)), G the cell's number of gates (stacked copies, not views)."""
    names = [f"{n}_l{layer}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    return tuple(torch.stack([getattr(m, n).detach() for m in layers]) for n in names)  # type: ignore[return-value]


def _input_part(x: Tensor, w_ih: Tensor, bias: Tensor) -> Tensor:
    """Every step's input projection at once: x (K, T, B, n_in) -> bias + x W_ih^T, (K, T, B, G·H)."""
    k, t, b, n_in = x.shape
    out = torch.baddbmm(bias.unsqueeze(1), x.reshape(k, t * b, n_in), w_ih.transpose(1, 2))
    return out.view(k, t, b, -1)


def lstm_pointwise(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step after the matmuls: gates (K, B, 4H) = (i, f, g, o), c (K, B, H) -> (h, c)."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def gru_pointwise(pre: Tensor, hh: Tensor, h: Tensor) -> Tensor:
    """One GRU step after the matmuls: pre = W_i x + b_i and hh = W_h h + b_h (K, B, 3H), h (K, B, H)."""
    xr, xz, xn = pre.chunk(3, dim=-1)
    hr, hz, hn = hh.chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return n + z * (h - n)  # (1 - z) n + z h, one multiply fewer


def lstm_scan(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
              state: Optional[tuple[Tensor, Tensor]] = None,
              pointwise: Callable = lstm_pointwise) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """K LSTM layers, run k on its own input x[k] (K, T, B, n_in) with its own weights (`stack_layers`).

    Returns (outputs (K, T, B, H), (h_T, c_T) each (K, B, H)), as nn.LSTM returns per run:
    gates = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh = (i, f, g, o); c_t = σ(f) c_{t-1} + σ(i) tanh(g);
    h_t = σ(o) tanh(c_t). `pointwise` may be a compiled (fused) `lstm_pointwise`."""
    k, _, b, _ = x.shape
    hidden = w_hh.shape[-1]
    pre = _input_part(x, w_ih, b_ih + b_hh)  # (K, T, B, 4H): both biases enter every gate additively
    h, c = state if state is not None else (x.new_zeros(k, b, hidden), x.new_zeros(k, b, hidden))
    w_t = w_hh.transpose(1, 2)  # (K, H, 4H)
    outs = []
    for pre_t in pre.unbind(1):  # unbind, not pre[:, t]: indexing's backward writes a zero (K, T, B, G·H)
        h, c = pointwise(torch.baddbmm(pre_t, h, w_t), c)  # tensor per step, O(T²) traffic in all
        outs.append(h)
    return torch.stack(outs, dim=1), (h, c)


def gru_scan(x: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor,
             state: Optional[Tensor] = None, pointwise: Callable = gru_pointwise) -> tuple[Tensor, Tensor]:
    """K GRU layers as `lstm_scan`, with nn.GRU's equations: r = σ(W_ir x + b_ir + W_hr h + b_hr),
    z likewise, n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h_t = (1 − z) n + z h_{t-1}.
    Returns (outputs (K, T, B, H), h_T (K, B, H))."""
    k, _, b, _ = x.shape
    hidden = w_hh.shape[-1]
    pre = _input_part(x, w_ih, b_ih)  # (K, T, B, 3H); b_hh stays with W_hh h (the reset multiplies b_hn)
    h = state if state is not None else x.new_zeros(k, b, hidden)
    w_t, bias_h = w_hh.transpose(1, 2), b_hh.unsqueeze(1)  # (K, H, 3H), (K, 1, 3H)
    outs = []
    for pre_t in pre.unbind(1):  # unbind: one gradient stack for all steps (see lstm_scan)
        h = pointwise(pre_t, torch.baddbmm(bias_h, h, w_t), h)
        outs.append(h)
    return torch.stack(outs, dim=1), h


# Steps whose input projections are computed at once: the projection of a whole sequence is (K, T, B, G·H),
# 165 GB for 8 LSTM runs at T = 5028 and evaluation's batch of 1,000; a chunk of it is a few GB.
CHUNK = 256


def scan(cell: str, x: Tensor, weights: Sequence[Tensor], pointwise: Optional[Callable] = None,
         chunk: int = CHUNK) -> Tensor:
    """The top layer's last hidden state h_T (K, B, H) of K runs of `cell` ("lstm" or "gru") on x
    (K, T, B, n_in). `weights`: 4 tensors per layer, layer by layer, each layer's as `stack_layers`
    gives them (w_ih, w_hh, b_ih, b_hh); layer l > 0 reads layer l − 1's outputs, as nn.LSTM /
    nn.GRU with num_layers > 1 do. Time runs in pieces of `chunk` steps, every layer's state carried
    from piece to piece (the same numbers; memory bounded by the piece). `pointwise` replaces the
    cell's step function after the matmuls (`lstm_pointwise`, `gru_pointwise`), e.g. by a compiled one."""
    name = getattr(cell, "value", cell)
    if name not in ("lstm", "gru"):
        raise ValueError(f"scan runs cell=lstm or cell=gru, not {name!r}")
    if not weights or len(weights) % 4:
        raise ValueError(f"scan takes 4 weight tensors per layer, not {len(weights)}")
    layers = [tuple(weights[i:i + 4]) for i in range(0, len(weights), 4)]
    for w in layers:
        rows, hidden = w[1].shape[1:]  # w_hh (K, G·H, H)
        if rows != len(gates_of(name)) * hidden:
            raise ValueError(f"weights of {rows} gate rows do not fit cell={name}")
    run = lstm_scan if name == "lstm" else gru_scan
    step = pointwise or (lstm_pointwise if name == "lstm" else gru_pointwise)
    states: list = [None] * len(layers)
    for piece in x.split(chunk, dim=1):
        for layer, w in enumerate(layers):
            piece, states[layer] = run(piece, *w, states[layer], pointwise=step)
    return states[-1][0] if name == "lstm" else states[-1]
