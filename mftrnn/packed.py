"""Several runs' networks trained as one module, in one of two layouts (`LAYOUTS`).

**scan** (`ScanPackedRNN`, the default on a GPU): every parameter is K runs' standalone tensors stacked on a
leading run axis, and one loop over time (mftrnn/scan.py) advances all K runs at once, each step one
batched matmul (torch.baddbmm) of each run's state by its own recurrent block. The work grows as K;
the loop's kernels are many and small, so on CUDA the training forward and backward are captured as
CUDA graphs with the cell's pointwise step fused by torch.compile (`capture_training`).

**blockdiag** (`PackedRNN`, the default on the CPU): one cuDNN nn.LSTM / nn.GRU of hidden K·H. In every gate block (PyTorch
stacks the gates, mftrnn/cells.py), run k owns units k·H .. (k+1)·H − 1, its recurrent weights are
the diagonal block (k, k) of each weight_hh, its input weights the block (k, k) of weight_ih against
the packed input (T, B, K·n_in). The off-block entries start at zero and their gradients are set to
zero, so with Adam (whose update is zero for a zero gradient and zero moments) they stay zero: the K
runs never mix. Its recurrent GEMM multiplies K² blocks, K of them not zero.

Either way every packed parameter has a *run axis*: viewed as (pre, K, post) (`run_view`), index k of
the middle axis holds the entries of run k. Per-run operations (norms, clipping, learning rates,
freezing a diverged run) are broadcasts over that axis, with no per-entry index maps.

Per-run optimizer settings that packing keeps: the learning rate (`PackedAdam`, otherwise
torch.optim.Adam's update) and the global gradient-norm clip (each run's norm over its own entries,
`clip_per_run`). `unpack` / `load_run` move run k's parameters (and, `split` / `merge`, any tensors
shaped like them, such as Adam's moments) to and from a standalone RNNClassifier's keys, so a packed
run's checkpoint is a standalone run's checkpoint.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import torch
from torch import nn

from mftrnn.cells import CANDIDATE
from mftrnn.models import GATES, RNNClassifier, norm_cap_factor
from mftrnn.scan import scan

log = logging.getLogger(__name__)
Tensor = torch.Tensor
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class Pack(nn.Module):
    """What every packing layout shares: K RNNClassifier runs of one shape, and the moves between a
    run's standalone tensors and its part of the packed ones. A layout defines `packed_params`,
    `run_view`, `split`, `merge`, `candidate_blocks`, `pack_inputs` and `forward`."""

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

    def unpack(self, r: int) -> dict[str, Tensor]:
        """Run r's state_dict, with the keys and shapes of a standalone RNNClassifier."""
        return self.split(dict(self.packed_params()), r)

    def load_run(self, r: int, state: dict[str, Tensor]) -> None:
        """Load a standalone RNNClassifier's state_dict into run r's part."""
        self.merge(dict(self.packed_params()), r, state)


class PackedRNN(Pack):
    """K RNNClassifier models as one: `rnn` of hidden K·H, `head_weight` (K, classes, H), `head_bias`
    (K, classes). Buffers `mask_<name>` (bool) are True on the entries that belong to some run."""

    def __init__(self, models: list[RNNClassifier]) -> None:
        super().__init__(models)
        first = models[0]
        h, k = self.hidden, self.k
        dtype = first.rnn.weight_hh_l0.dtype
        self.rnn = type(first.rnn)(k * self.input_size, k * h, num_layers=self.layers, dtype=dtype)
        self.rnn_names = [f"{name}_l{layer}" for layer in range(self.layers) for name in NAMES]
        with torch.no_grad():
            for full in self.rnn_names:
                packed = getattr(self.rnn, full)
                packed.zero_()
                mask = torch.zeros(packed.shape, dtype=torch.bool)
                for r in range(k):
                    for idx in self._blocks(full, r):
                        mask[idx] = True
                self.register_buffer(f"mask_{full}", mask, persistent=False)
            self.head_weight = nn.Parameter(torch.zeros(k, *first.head.weight.shape, dtype=dtype))
            self.head_bias = nn.Parameter(torch.zeros(k, *first.head.bias.shape, dtype=dtype))
        for r, m in enumerate(models):
            self.load_run(r, m.state_dict())
        for full in self.rnn_names:  # off-block gradients are zero (where, not *: 0 * NaN is NaN)
            getattr(self.rnn, full).register_hook(
                lambda grad, full=full: torch.where(getattr(self, f"mask_{full}"), grad, 0.0))

    # ----------------------------------------------------------------- layout
    def _blocks(self, full: str, r: int) -> list[tuple[slice, ...]]:
        """Run r's block of the packed rnn parameter `full` (e.g. weight_hh_l0), one index per gate in
        gate order: (rows, cols) of a weight, (rows,) of a bias."""
        name, layer = full.rsplit("_l", 1)
        g, h, k = len(GATES[self.cell]), self.hidden, self.k
        width = (self.input_size if layer == "0" else h) if name == "weight_ih" else h
        cols = (slice(r * width, (r + 1) * width),) if name.startswith("weight") else ()
        return [(slice(j * k * h + r * h, j * k * h + (r + 1) * h),) + cols for j in range(g)]

    def packed_params(self) -> dict[str, nn.Parameter]:
        """Packed parameters by the standalone key they hold (rnn.weight_hh_l0, ..., head.weight)."""
        out = {f"rnn.{full}": getattr(self.rnn, full) for full in self.rnn_names}
        out["head.weight"], out["head.bias"] = self.head_weight, self.head_bias
        return out

    def run_view(self, key: str, t: Tensor) -> Tensor:
        """`t` (shaped like the packed parameter `key`) as (pre, K, post): index k of axis 1 holds run k's
        rows (and, for the rnn, the off-block entries of those rows, which are zero)."""
        if key.startswith("head."):
            return t.view(1, self.k, -1)
        return t.view(len(GATES[self.cell]), self.k, -1)

    def split(self, tensors: dict[str, Tensor], r: int) -> dict[str, Tensor]:
        """Run r's part of tensors shaped like the packed parameters (keyed as `packed_params`), as a
        standalone RNNClassifier's tensors (cloned)."""
        out = {}
        for key, t in tensors.items():
            if key.startswith("head."):
                out[key] = t[r].detach().clone()
            else:
                out[key] = torch.cat([t[idx] for idx in self._blocks(key[4:], r)]).detach().clone()
        return out

    @torch.no_grad()
    def merge(self, tensors: dict[str, Tensor], r: int, run: dict[str, Tensor]) -> None:
        """Write a standalone run's tensors `run` into run r's blocks of `tensors` (in place)."""
        h = self.hidden
        for key, t in tensors.items():
            src = run[key].to(device=t.device, dtype=t.dtype)
            if key.startswith("head."):
                t[r] = src
            else:
                for j, idx in enumerate(self._blocks(key[4:], r)):
                    t[idx] = src[j * h:(j + 1) * h]

    def candidate_blocks(self, layer: int) -> Tensor:
        """(K, H, H): each run's candidate recurrent block (LSTM U_g, GRU U_n) of `layer`, a view."""
        g, k, h = len(GATES[self.cell]), self.k, self.hidden
        j = GATES[self.cell].index(CANDIDATE[self.cell.value])
        w = getattr(self.rnn, f"weight_hh_l{layer}").view(g, k, h, k, h)[j]  # (K, H, K, H)
        return torch.diagonal(w, dim1=0, dim2=2).permute(2, 0, 1)

    @staticmethod
    def pack_inputs(xs: list[Tensor]) -> Tensor:
        """K runs' batches (T, B, n_in) each -> (T, B, K n_in), the input `forward` takes."""
        return torch.cat(xs, dim=-1)

    # ----------------------------------------------------------------- compute
    def forward(self, x: Tensor) -> Tensor:
        """x: (T, B, K n_in), run k's sequences in columns k n_in .. -> logits (K, B, classes)."""
        state = None
        for piece in x.split(self.max_chunk, dim=0):
            out, state = self.rnn(piece, state)  # (t, B, K H)
        last = out[-1].view(out.shape[1], self.k, self.hidden)  # (B, K, H)
        return torch.einsum("bkh,kch->kbc", last, self.head_weight) + self.head_bias[:, None, :]


class ScanPackedRNN(Pack):
    """K RNNClassifier models as stacked per-run weights, run by one batched loop over time
    (mftrnn/scan.py): `weight_ih_l<l>` (K, G·H, n_in), `weight_hh_l<l>` (K, G·H, H), `bias_ih_l<l>` and
    `bias_hh_l<l>` (K, G·H), `head_weight` (K, classes, H), `head_bias` (K, classes). Index k of every
    parameter's leading axis is run k's standalone tensor, so nothing is off-block: each step multiplies
    each run's state by its own recurrent block only, and the work grows as K, not K². `pointwise`, when
    set (`capture_training`), replaces the cell's step function while gradients are recorded."""

    def __init__(self, models: list[RNNClassifier]) -> None:
        super().__init__(models)
        self.rnn_names = [f"{name}_l{layer}" for layer in range(self.layers) for name in NAMES]
        for full in self.rnn_names:
            self.register_parameter(full, nn.Parameter(torch.stack([getattr(m.rnn, full).detach() for m in models])))
        self.head_weight = nn.Parameter(torch.stack([m.head.weight.detach() for m in models]))
        self.head_bias = nn.Parameter(torch.stack([m.head.bias.detach() for m in models]))
        self.pointwise = None

    def packed_params(self) -> dict[str, nn.Parameter]:
        """Packed parameters by the standalone key they hold (rnn.weight_hh_l0, ..., head.weight)."""
        out = {f"rnn.{full}": getattr(self, full) for full in self.rnn_names}
        out["head.weight"], out["head.bias"] = self.head_weight, self.head_bias
        return out

    def run_view(self, key: str, t: Tensor) -> Tensor:
        """`t` (shaped like the packed parameter `key`) as (1, K, post): run k's tensor, flattened."""
        return t.view(1, self.k, -1)

    def split(self, tensors: dict[str, Tensor], r: int) -> dict[str, Tensor]:
        """Run r's part of tensors shaped like the packed parameters, as a standalone run's (cloned)."""
        return {key: t[r].detach().clone() for key, t in tensors.items()}

    @torch.no_grad()
    def merge(self, tensors: dict[str, Tensor], r: int, run: dict[str, Tensor]) -> None:
        """Write a standalone run's tensors `run` into run r's part of `tensors` (in place)."""
        for key, t in tensors.items():
            t[r] = run[key].to(device=t.device, dtype=t.dtype)

    def candidate_blocks(self, layer: int) -> Tensor:
        """(K, H, H): each run's candidate recurrent block (LSTM U_g, GRU U_n) of `layer`, a view."""
        j, h = GATES[self.cell].index(CANDIDATE[self.cell.value]), self.hidden
        return getattr(self, f"weight_hh_l{layer}")[:, j * h:(j + 1) * h]

    @staticmethod
    def pack_inputs(xs: list[Tensor]) -> Tensor:
        """K runs' batches (T, B, n_in) each -> (K, T, B, n_in), the input `forward` takes."""
        return torch.stack(xs)

    def forward(self, x: Tensor) -> Tensor:
        """x: (K, T, B, n_in), run k's sequences at index k -> logits (K, B, classes)."""
        step = self.pointwise if torch.is_grad_enabled() else None  # compiled for training's shapes only
        h = scan(self.cell, x, [getattr(self, full) for full in self.rnn_names], step)  # (K, B, H)
        return torch.baddbmm(self.head_bias.unsqueeze(1), h, self.head_weight.transpose(1, 2))


# The packing layouts, by the name hydra.launcher.mechanism takes (docs/usage.md, Packed sweeps).
LAYOUTS = {"scan": ScanPackedRNN, "blockdiag": PackedRNN}


# GPU memory a scan-layout run holds while it trains, in bytes per step of the sequence, example of the
# batch, hidden unit and layer: the activations its backward needs (kept in the CUDA graphs' pool), its
# gradients and workspace. Measured on an H200: 8 LSTM runs at T = 5028, batch 128, hidden 256 held
# 54 GiB in the graphs' pool, 44 bytes; rounded up (docs/performance.md, Packed sweeps).
SCAN_BYTES = 48


def runs_that_fit(seq_len: int, batch: int, hidden: int, layers: int, free_bytes: int) -> int:
    """How many scan-layout runs of this shape fit in `free_bytes` of GPU memory with a quarter of it left
    free (evaluation, the allocator's slack); at least 1."""
    return max(1, int(0.75 * free_bytes) // (SCAN_BYTES * seq_len * batch * hidden * layers))


def capture_training(model: Pack, sample: Tensor) -> str:
    """Speed up `model`'s training forward and backward on CUDA (the scan layout only); returns what was
    done, for the log. The cell's pointwise step is compiled by torch.compile into one fused kernel
    forward and one backward, and the whole forward and backward are captured by
    torch.cuda.make_graphed_callables, so that a training step replays the T steps' kernels without the
    host (the optimizer, clipping and the rest stay eager). `sample`: an input of the training shape;
    the graphs replay only in training mode with that shape (evaluation runs eager, as
    make_graphed_callables arranges). Where compiling fails, the graphs are captured without it."""
    if not isinstance(model, ScanPackedRNN) or sample.device.type != "cuda":
        return "eager"
    import torch._dynamo

    from mftrnn.scan import gru_pointwise, lstm_pointwise

    # every pack size, depth and cell of a worker's packs is a shape of its own: room for all of them
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 256)
    fn = lstm_pointwise if model.cell.value == "lstm" else gru_pointwise
    model.pointwise = torch.compile(fn, dynamic=False, fullgraph=True)
    try:
        torch.cuda.make_graphed_callables(model, (sample,))
        return "CUDA graphs, fused pointwise step"
    except Exception as exc:  # noqa: BLE001 - no compiler on this machine: the graphs alone still pay
        log.warning("torch.compile of the %s step failed (%s: %s); capturing without it", model.cell.value,
                    type(exc).__name__, str(exc)[:200])
        model.pointwise = None
        torch.cuda.synchronize()
        torch.cuda.make_graphed_callables(model, (sample,))
        return "CUDA graphs"


@torch.no_grad()
def clip_per_run(model: Pack, max_norms: list[float] | Tensor, ok: Optional[Tensor] = None) -> Tensor:
    """Clip each run's gradient to its own global norm (torch.nn.utils.clip_grad_norm_'s rule, per run,
    over the entries it owns); returns the K norms before clipping (float64). `ok` (K,) bool: runs whose
    gradient is set to zero instead (a diverged run, frozen); a run with a non-finite norm is zeroed too,
    so that nothing non-finite ever reaches the shared parameters."""
    params = {key: p for key, p in model.packed_params().items() if p.grad is not None}
    device = next(iter(params.values())).device
    sq = torch.zeros(model.k, dtype=torch.float64, device=device)
    for key, p in params.items():
        sq += model.run_view(key, p.grad).double().pow(2).sum(dim=(0, 2))
    norms = sq.sqrt()  # (K,)
    limits = torch.as_tensor(max_norms, dtype=torch.float64, device=device)
    keep = torch.isfinite(norms) if ok is None else ok & torch.isfinite(norms)
    # torch's rule: scale by max_norm / (norm + 1e-6), clamped to at most 1
    factor = torch.clamp(limits / (norms + 1e-6), max=1.0)
    for key, p in params.items():
        g = model.run_view(key, p.grad)
        g.mul_(factor.to(g.dtype).view(1, -1, 1)).masked_fill_(~keep.view(1, -1, 1), 0.0)  # NaN entries too
    return norms


@torch.no_grad()
def cap_candidate_per_run(model: Pack, caps: Tensor, frozen: Optional[Tensor] = None) -> None:
    """`mftrnn.models.cap_candidate_norm` for each run of the pack: run r's candidate recurrent block of
    every layer scaled to spectral norm at most caps[r] ((K,) on the parameters' device, inf: no bound).
    `frozen` (K,) bool: runs left as they are."""
    for layer in range(model.layers):
        blocks = model.candidate_blocks(layer)  # (K, H, H), a view of run r's own block
        factor = norm_cap_factor(blocks, caps.to(blocks.dtype))
        if frozen is not None:
            factor = torch.where(frozen, 1.0, factor)
        blocks.mul_(factor.view(model.k, 1, 1))


# A run whose weights exceed this is treated as diverged (`guard_params`): below it every activation and
# logit of a cell whose gates and states are bounded stays finite in float32, above it a sum can overflow,
# and inf - inf in one run's state would reach the others through the zero off-block weights (0 * NaN).
PARAM_BOUND = 1e15


@torch.no_grad()
def guard_params(model: Pack, bound: float = PARAM_BOUND) -> Tensor:
    """(K,) bool: runs with a parameter beyond `bound` (or non-finite); their parameters are set to zero,
    so they stay harmless to the rest of the pack (a diverged run's weights are not used again)."""
    params = model.packed_params()
    device = next(iter(params.values())).device
    big = torch.zeros(model.k, dtype=torch.bool, device=device)
    for key, p in params.items():
        v = model.run_view(key, p)
        big |= ~(v.abs().amax(dim=(0, 2)) <= bound)  # NaN compares False: caught too
    for key, p in params.items():
        model.run_view(key, p).masked_fill_(big.view(1, -1, 1), 0.0)  # in place; NaN entries too
    return big


class PackedAdam(torch.optim.Optimizer):
    """torch.optim.Adam (no amsgrad) with a learning rate per run (`lrs`, settable). Betas, eps and weight
    decay are shared by the pack, and so is the step count (every run of a pack starts at the same step).
    `frozen`: (K,) bool on the parameters' device, or None; a frozen run's parameters do not move."""

    def __init__(self, model: Pack, lrs: list[float], betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        self.model = model
        self.keys = dict(model.packed_params())
        super().__init__(list(self.keys.values()), dict(betas=betas, eps=eps, weight_decay=weight_decay))
        self.names = {id(p): key for key, p in self.keys.items()}
        self.lrs = torch.tensor(lrs, dtype=torch.float64)
        self._lrs_on: dict = {}  # the rates on the parameters' device (one copy, not one per step)
        self.frozen: Optional[Tensor] = None
        self.step_count = 0

    def moments(self) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(exp_avg, exp_avg_sq) by packed key, created (zero) where missing."""
        m, v = {}, {}
        for key, p in self.keys.items():
            st = self.state[p]
            if not st:
                st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            m[key], v[key] = st["exp_avg"], st["exp_avg_sq"]
        return m, v

    @torch.no_grad()
    def step(self, closure=None):
        self.step_count += 1
        group = self.param_groups[0]
        b1, b2 = group["betas"]
        bc1, bc2 = 1 - b1 ** self.step_count, 1 - b2 ** self.step_count
        m_all, v_all = self.moments()
        first = next(iter(self.keys.values()))
        where = (first.device, first.dtype)
        if where not in self._lrs_on:
            self._lrs_on = {where: self.lrs.to(device=first.device, dtype=first.dtype)}
        size = self._lrs_on[where] / bc1
        if self.frozen is not None:
            size = torch.where(self.frozen, 0.0, size)
        size = size.view(1, -1, 1)  # (1, K, 1)
        for key, p in self.keys.items():
            if p.grad is None:
                continue
            grad = p.grad
            if group["weight_decay"]:
                grad = grad.add(p, alpha=group["weight_decay"])
            m, v = m_all[key], v_all[key]
            m.lerp_(grad, 1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(bc2)).add_(group["eps"])
            self.model.run_view(key, p).sub_(self.model.run_view(key, m / denom) * size)
        return None

    def set_lr(self, r: int, lr: float) -> None:
        self.lrs[r] = lr
        self._lrs_on = {}
