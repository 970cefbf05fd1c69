"""Shapes and contents of every task's sequences, and the chunked forward pass."""
from __future__ import annotations

import pytest
import torch

from conftest import compose_train
from mftrnn.data import load_splits
from mftrnn.models import RNNClassifier
from mftrnn.schema import CellKind, Dataset, ModelConfig, to_objects
from mftrnn.tasks import build_task


@pytest.fixture(scope="module")
def mnist(data_root):
    conf = to_objects(compose_train(["data.limit=64"]))
    return load_splits(Dataset.mnist, conf.data)


@pytest.fixture(scope="module")
def cifar(data_root):
    conf = to_objects(compose_train(["task=cifar10", "data.limit=512"]))
    return load_splits(Dataset.cifar10, conf.data)


def make(overrides):
    return build_task(to_objects(compose_train(overrides)).task)


def test_padded_rows_then_zero_padding(mnist):
    task = make(["task.pad=50"])
    imgs = mnist.train_x[:8]
    x = task.sequences(imgs)
    assert x.shape == (28 + 50, 8, 28) == (task.seq_len, 8, task.input_size) and x.dtype == torch.float32
    assert torch.equal(x[:28], imgs.float().permute(1, 0, 2) / 255)  # step t = row t
    assert torch.all(x[28:] == 0)
    assert 0 <= x.min() and x.max() <= 1


def test_padded_noise_padding_is_gaussian_and_seeded(mnist):
    task = make(["task.pad=400", "task.pad_value=noise", "task.noise_std=0.5"])
    imgs = mnist.train_x[:32]
    x = task.sequences(imgs, torch.Generator().manual_seed(1))
    pad = x[28:]
    assert pad.std().item() == pytest.approx(0.5, rel=0.02) and abs(pad.mean().item()) < 0.01
    assert torch.equal(x, task.sequences(imgs, torch.Generator().manual_seed(1)))
    assert not torch.equal(x, task.sequences(imgs, torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("layout,shape", [("pixels", (784 + 5, 4, 1)), ("image", (1 + 5, 4, 784))])
def test_padded_layouts(mnist, layout, shape):
    imgs = mnist.train_x[:4]
    x = make([f"task.layout={layout}", "task.pad=5"]).sequences(imgs)
    assert x.shape == shape
    flat = imgs.float().reshape(4, 784) / 255
    got = x[:784, :, 0].T if layout == "pixels" else x[0]
    assert torch.equal(got, flat)


def test_unrolled_and_permuted(mnist):
    imgs = mnist.train_x[:4]
    x = make(["task=unrolled_mnist"]).sequences(imgs)
    assert x.shape == (784, 4, 1)
    assert torch.equal(x[:, :, 0].T, imgs.float().reshape(4, 784) / 255)
    perm_task = make(["task=unrolled_mnist", "task.permute=true"])
    xp = perm_task.sequences(imgs)
    assert torch.equal(xp, x[perm_task.permutation])  # one fixed permutation for every example
    assert sorted(perm_task.permutation.tolist()) == list(range(784))
    assert torch.equal(perm_task.permutation, make(["task=unrolled_mnist", "task.permute=true"]).permutation)
    other = make(["task=unrolled_mnist", "task.permute=true", "task.permutation_seed=1"]).permutation
    assert not torch.equal(perm_task.permutation, other)


def test_cifar_pixels_rgb_normalized(cifar):
    task = make(["task=cifar10"])
    task.fit(cifar)
    x = task.sequences(cifar.train_x)
    assert x.shape == (1024, len(cifar.train_x), 3)
    chan = x.reshape(-1, 3)
    assert torch.allclose(chan.mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(chan.std(0), torch.ones(3), atol=1e-3)
    # step 33 is pixel (row 1, col 1), RGB
    raw = cifar.train_x[0, 1, 1].float() / 255
    assert torch.allclose(x[33, 0], (raw - task.mean) / task.std)


@pytest.mark.parametrize("dataset,base,n_in", [("mnist", 784, 1), ("cifar10", 1024, 3)])
def test_repeated_pixel(mnist, cifar, dataset, base, n_in):
    k = 3
    task = make(["task=repeated_pixel", f"task.dataset={dataset}", f"task.repeats={k}"])
    splits = mnist if dataset == "mnist" else cifar
    task.fit(splits)
    imgs = splits.train_x[:2]
    x = task.sequences(imgs)
    assert x.shape == (base * k, 2, n_in) == (task.seq_len, 2, task.input_size)
    plain = task.inner.sequences(imgs)
    for j in range(k):
        assert torch.equal(x[j::k], plain)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_chunked_forward_equals_one_piece(cell):
    """Sequences over cuDNN's limit run in chunks; outputs and gradients must not change."""
    torch.manual_seed(0)
    x = torch.randn(50, 3, 4)
    whole = RNNClassifier(CellKind(cell), 4, ModelConfig(hidden=8, layers=2))
    chunked = RNNClassifier(CellKind(cell), 4, ModelConfig(hidden=8, layers=2, max_chunk=7))
    chunked.load_state_dict(whole.state_dict())
    out_w, out_c = whole(x), chunked(x)
    assert torch.allclose(out_w, out_c, atol=1e-6)
    out_w.sum().backward()
    out_c.sum().backward()
    for (name, p), q in zip(whole.named_parameters(), chunked.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5), name
