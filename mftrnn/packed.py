"""Several runs' networks trained as one: block-diagonal packing into one cuDNN nn.LSTM / nn.GRU.

K runs of the same cell, hidden size H, input size n_in and depth become one module of hidden K·H:
in every gate block (PyTorch stacks the gates, mftrnn/cells.py), run k owns units k·H .. (k+1)·H − 1,
its recurrent weights are the diagonal block (k, k) of each weight_hh, its input weights the block
(k, k) of weight_ih against the packed input (T, B, K·n_in), run k's batch in columns k·n_in ..
The off-block entries start at zero and their gradients are masked to zero, so with Adam (whose
update is zero for a zero gradient and zero moments) they stay zero: the K runs never mix, and each
run's forward and backward are exactly its own. The readouts are K linear maps applied by one einsum.

Per-run optimizer settings that packing must keep: the learning rate (an element-wise rate map in
`PackedAdam`, otherwise torch.optim.Adam's update) and the global gradient-norm clip (each run's
norm over its own blocks, `clip_per_run`). `unpack` returns run k's state_dict with the keys of a
standalone RNNClassifier, for its run dir (init.pt, checkpoints).

This is the packing mechanism (a) of the packed-sweep work; which mechanism the launcher uses is to be
decided by measurement on the GPU (docs/performance.md).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from mftrnn.models import GATES, RNNClassifier

Tensor = torch.Tensor
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class PackedRNN(nn.Module):
    """K RNNClassifier models as one: `rnn` of hidden K·H, `head_weight` (K, classes, H), `head_bias`
    (K, classes). `masks[name]` is 1 on the entries that belong to some run, 0 off the blocks;
    `owner[name]` the run index of every entry (-1 off the blocks)."""

    def __init__(self, models: list[RNNClassifier]) -> None:
        super().__init__()
        first = models[0]
        self.k, self.cell = len(models), first.cell
        self.hidden, self.layers = first.rnn.hidden_size, first.rnn.num_layers
        self.input_size, self.max_chunk = first.rnn.input_size, first.max_chunk
        for m in models:
            if (m.cell, m.rnn.hidden_size, m.rnn.num_layers, m.rnn.input_size) != (
                    self.cell, self.hidden, self.layers, self.input_size):
                raise ValueError("packed runs must share the cell, hidden size, depth and input size")
        h, k = self.hidden, self.k
        dtype = first.rnn.weight_hh_l0.dtype
        self.rnn = type(first.rnn)(k * self.input_size, k * h, num_layers=self.layers, dtype=dtype)
        self.masks: dict[str, Tensor] = {}
        self.owner: dict[str, Tensor] = {}
        with torch.no_grad():
            for layer in range(self.layers):
                for name in NAMES:
                    full = f"{name}_l{layer}"
                    packed = getattr(self.rnn, full)
                    packed.zero_()
                    owner = torch.full(packed.shape, -1, dtype=torch.long)
                    for r, m in enumerate(models):
                        src = getattr(m.rnn, full)  # (G H, n) or (G H,), gate j in rows j H ..
                        for j, idx in enumerate(self._blocks(name, layer, r)):
                            packed[idx] = src[j * h:(j + 1) * h]
                            owner[idx] = r
                    self.owner[full] = owner
                    self.masks[full] = (owner >= 0).to(packed.dtype)
            self.head_weight = nn.Parameter(torch.stack([m.head.weight.detach().clone() for m in models]))
            self.head_bias = nn.Parameter(torch.stack([m.head.bias.detach().clone() for m in models]))
        for full, mask in self.masks.items():  # off-block gradients are zero: the runs never mix
            getattr(self.rnn, full).register_hook(lambda grad, mask=mask: grad * mask.to(grad.device))

    def _blocks(self, name: str, layer: int, r: int) -> list[tuple[slice, ...]]:
        """Run r's block of the packed parameter `name` of `layer`, one index per gate, in gate order:
        (rows, cols) of a weight, (rows,) of a bias."""
        g, h, k = len(GATES[self.cell]), self.hidden, self.k
        width = (self.input_size if layer == 0 else h) if name == "weight_ih" else h
        cols = (slice(r * width, (r + 1) * width),) if name.startswith("weight") else ()
        return [(slice(j * k * h + r * h, j * k * h + (r + 1) * h),) + cols for j in range(g)]

    def forward(self, x: Tensor) -> Tensor:
        """x: (T, B, K n_in), run k's sequences in columns k n_in .. -> logits (K, B, classes)."""
        state = None
        for piece in x.split(self.max_chunk, dim=0):
            out, state = self.rnn(piece, state)  # (t, B, K H)
        last = out[-1].view(out.shape[1], self.k, self.hidden)  # (B, K, H)
        return torch.einsum("bkh,kch->kbc", last, self.head_weight) + self.head_bias[:, None, :]

    def owners(self) -> list[tuple[nn.Parameter, Tensor]]:
        """(parameter, owner map) for every parameter: the run each entry belongs to (-1: nobody)."""
        out = [(getattr(self.rnn, name), owner) for name, owner in self.owner.items()]
        k = torch.arange(self.k)
        out.append((self.head_weight, k[:, None, None].expand(self.head_weight.shape)))
        out.append((self.head_bias, k[:, None].expand(self.head_bias.shape)))
        return out

    @torch.no_grad()
    def unpack(self, r: int) -> dict[str, Tensor]:
        """Run r's state_dict, with the keys and shapes of a standalone RNNClassifier."""
        state = {}
        for layer in range(self.layers):
            for name in NAMES:
                packed = getattr(self.rnn, f"{name}_l{layer}")
                blocks = [packed[idx] for idx in self._blocks(name, layer, r)]
                state[f"rnn.{name}_l{layer}"] = torch.cat(blocks).detach().clone()
        state["head.weight"] = self.head_weight[r].detach().clone()
        state["head.bias"] = self.head_bias[r].detach().clone()
        return state


def pack_inputs(xs: list[Tensor]) -> Tensor:
    """K runs' batches (T, B, n_in) each -> (T, B, K n_in)."""
    return torch.cat(xs, dim=-1)


@torch.no_grad()
def clip_per_run(model: PackedRNN, max_norms: list[float]) -> Tensor:
    """Clip each run's gradient to its own global norm (torch.nn.utils.clip_grad_norm_ per run, over the
    entries it owns); returns the K norms before clipping."""
    k = model.k
    sq = None
    pairs = [(p, o.to(p.device)) for p, o in model.owners() if p.grad is not None]
    for p, owner in pairs:
        part = torch.zeros(k + 1, dtype=torch.float64, device=p.device)
        part.index_add_(0, (owner + 1).reshape(-1), p.grad.reshape(-1).double() ** 2)
        sq = part if sq is None else sq + part
    norms = sq[1:].sqrt()  # (K,)
    limits = torch.tensor(max_norms, dtype=torch.float64, device=norms.device)
    # torch's rule: scale by max_norm / (norm + 1e-6), only when below 1
    factor = torch.clamp(limits / (norms + 1e-6), max=1.0)
    for p, owner in pairs:
        scale = torch.cat([torch.zeros(1, dtype=torch.float64, device=p.device), factor])[owner + 1]
        p.grad.mul_(scale.to(p.grad.dtype))
    return norms


class PackedAdam(torch.optim.Optimizer):
    """torch.optim.Adam (no amsgrad) with a learning rate per run: the step of every entry uses the rate
    of the run that owns it. Betas, eps and weight decay are shared by the pack."""

    def __init__(self, model: PackedRNN, lrs: list[float], betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        pairs = model.owners()
        super().__init__([p for p, _ in pairs], dict(betas=betas, eps=eps, weight_decay=weight_decay))
        rate = torch.cat([torch.zeros(1, dtype=torch.float64), torch.tensor(lrs, dtype=torch.float64)])
        self.rates = {p: rate[o + 1] for p, o in pairs}  # per-entry learning rate (0 off the blocks)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.zeros_like(p)
                st["step"] += 1
                m, v = st["exp_avg"], st["exp_avg_sq"]
                m.lerp_(grad, 1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                bc1, bc2 = 1 - b1 ** st["step"], 1 - b2 ** st["step"]
                denom = (v.sqrt() / math.sqrt(bc2)).add_(group["eps"])
                rate = self.rates[p].to(device=p.device, dtype=p.dtype)
                p.addcdiv_(m * (rate / bc1), denom, value=-1.0)
        return None
