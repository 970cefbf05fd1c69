"""Long-sequence classification tasks built from MNIST and CIFAR-10 (docs/usage.md, Tasks).

A task turns a batch of uint8 images that already sit on the training device into a float
sequence (T, B, n_in), time-major as cuDNN wants it, with tensor operations only: no per-step
Python and no host-to-device copy of sequences. Every task is 10-way classification with the label
read from the last hidden state.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import torch

from mftrnn.schema import (Cifar10Config, Dataset, Layout, PaddedMnistConfig, PadValue, RepeatedPixelConfig,
                           TaskConfig, TaskName, UnrolledMnistConfig)
if TYPE_CHECKING:  # torchvision, which mftrnn.data loads, costs ~2 s of start-up: not needed to build a task
    from mftrnn.data import Splits



class SequenceTask:
    """Base class. Subclasses set `dataset`, `seq_len`, `input_size` and implement `_base`."""

    dataset: Dataset
    seq_len: int  # T
    input_size: int  # n_in

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg

    def fit(self, splits: Splits) -> None:
        """Take statistics the sequences need from the training split (default: none)."""

    def sequences(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """uint8 images (B, ...) on any device -> float32 sequences (T, B, n_in) on the same device.

        `generator` (on the images' device) drives random padding; tasks without it ignore it.
        """
        return self._base(images.float().div_(255.0))  # (T, B, n_in)

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.cfg.name.value}: {self.seq_len} steps x {self.input_size} inputs"

    @property
    def content_steps(self) -> int:
        """Steps 1..content_steps carry the example; the rest (if any) is padding."""
        return self.seq_len

    def long_stretch_r(self, splits: Splits, n: int = 64) -> torch.Tensor:
        """The per-step input second moments |x_t|^2 / n_in over the long stretch of the sequence, which
        holds the network at its operating point (the critical solver's, docs/theory.md §10.1, §10.8): the
        padding steps, or all steps when there is no padding, of the first n training images: (steps, n)."""
        gen = torch.Generator(device=splits.train_x.device).manual_seed(0)
        x = self.sequences(splits.train_x[:n], gen)  # (T, n, n_in)
        tail = x[self.content_steps:] if self.content_steps < self.seq_len else x
        return tail.double().pow(2).mean(-1).cpu()


def _mnist_pixels(x: torch.Tensor) -> torch.Tensor:
    """(B, 28, 28) in [0, 1] -> (784, B, 1), raster order."""
    return x.reshape(x.shape[0], -1).t().unsqueeze(-1)


class PaddedMnist(SequenceTask):
    """The image (rows, pixels or one step), then `pad` steps of zeros or Gaussian noise."""

    dataset = Dataset.mnist
    cfg: PaddedMnistConfig

    def __init__(self, cfg: PaddedMnistConfig) -> None:
        super().__init__(cfg)
        self.image_steps, self.input_size = {Layout.rows: (28, 28), Layout.pixels: (784, 1),
                                             Layout.image: (1, 784)}[cfg.layout]
        self.seq_len = self.image_steps + cfg.pad

    @property
    def content_steps(self) -> int:
        return self.image_steps

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if self.cfg.layout is Layout.rows:
            return x.permute(1, 0, 2)  # (28, B, 28): step t reads row t
        if self.cfg.layout is Layout.pixels:
            return _mnist_pixels(x)
        return x.reshape(1, b, 784)

    def sequences(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        x = super().sequences(images)
        if self.cfg.pad == 0:
            return x.contiguous()
        shape = (self.cfg.pad, x.shape[1], self.input_size)
        if self.cfg.pad_value is PadValue.zeros:
            pad = x.new_zeros(shape)
        else:
            pad = torch.randn(shape, generator=generator, device=x.device).mul_(self.cfg.noise_std)
        return torch.cat([x, pad], dim=0)  # (image_steps + pad, B, n_in)


class UnrolledMnist(SequenceTask):
    """Pixel by pixel; with `permute`, one fixed permutation drawn from `permutation_seed`."""

    dataset = Dataset.mnist
    seq_len = 784
    input_size = 1
    cfg: UnrolledMnistConfig

    def __init__(self, cfg: UnrolledMnistConfig) -> None:
        super().__init__(cfg)
        self.permutation: Optional[torch.Tensor] = None
        if cfg.permute:
            g = torch.Generator().manual_seed(cfg.permutation_seed)
            self.permutation = torch.randperm(784, generator=g)

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        seq = _mnist_pixels(x)  # (784, B, 1)
        if self.permutation is not None:
            seq = seq[self.permutation.to(seq.device)]
        return seq.contiguous()


class Cifar10(SequenceTask):
    """Pixel by pixel, RGB per step, each channel normalized by the training split's mean and std."""

    dataset = Dataset.cifar10
    seq_len = 1024
    input_size = 3

    def __init__(self, cfg: TaskConfig) -> None:
        super().__init__(cfg)
        self.mean = torch.zeros(3)
        self.std = torch.ones(3)

    def fit(self, splits: Splits) -> None:
        x = splits.train_x.float().div_(255.0).reshape(-1, 3)  # (N*1024, 3)
        self.mean, self.std = x.mean(0).cpu(), x.std(0).cpu()

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean.to(x.device)) / self.std.to(x.device)  # (B, 32, 32, 3)
        return x.reshape(x.shape[0], 1024, 3).transpose(0, 1).contiguous()  # (1024, B, 3)


class RepeatedPixel(SequenceTask):
    """Each pixel of pixel-by-pixel MNIST or CIFAR-10 repeated `repeats` times in a row."""

    cfg: RepeatedPixelConfig

    def __init__(self, cfg: RepeatedPixelConfig) -> None:
        super().__init__(cfg)
        self.dataset = cfg.dataset
        self.inner: SequenceTask = (UnrolledMnist(UnrolledMnistConfig()) if cfg.dataset is Dataset.mnist
                                    else Cifar10(Cifar10Config()))
        self.seq_len = self.inner.seq_len * cfg.repeats
        self.input_size = self.inner.input_size

    def fit(self, splits: Splits) -> None:
        self.inner.fit(splits)

    def sequences(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.inner.sequences(images).repeat_interleave(self.cfg.repeats, dim=0)


TASKS: dict[TaskName, Callable[..., SequenceTask]] = {
    TaskName.padded_mnist: PaddedMnist,
    TaskName.unrolled_mnist: UnrolledMnist,
    TaskName.cifar10: Cifar10,
    TaskName.repeated_pixel: RepeatedPixel,
}


def build_task(cfg: TaskConfig) -> SequenceTask:
    return TASKS[cfg.name](cfg)
