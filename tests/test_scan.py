"""mftrnn.scan: K runs in one batched loop equal each run of nn.LSTM / nn.GRU alone (outputs, final
states and gradients), in float64 on the CPU."""
import pytest
import torch
from torch import nn

from mftrnn.scan import gru_scan, lstm_scan, scan, stack_layers

K, T, B, N_IN, H = 3, 7, 4, 5, 6


def _runs(kind):
    torch.manual_seed(0)
    mods = [kind(N_IN, H, dtype=torch.float64) for _ in range(K)]
    with torch.no_grad():  # biases of different size per run, so that a mix-up of runs would show
        for r, m in enumerate(mods):
            m.bias_hh_l0.add_(0.3 * r)
    return mods


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_scan_equals_each_run_alone(kind):
    mods = _runs(kind)
    x = torch.randn(K, T, B, N_IN, dtype=torch.float64)
    weights = [w.clone().requires_grad_(True) for w in stack_layers(mods)]
    xs = x.clone().requires_grad_(True)
    if kind is nn.LSTM:
        out, (h_t, c_t) = lstm_scan(xs, *weights)
    else:
        out, h_t = gru_scan(xs, *weights)
    probe = torch.randn_like(out)  # a loss that weighs every step's output differently
    (out * probe).sum().backward()
    for r, m in enumerate(mods):
        xr = x[r].clone().requires_grad_(True)
        ref_out, ref_state = m(xr)  # (T, B, H)
        torch.testing.assert_close(out[r], ref_out, rtol=1e-10, atol=1e-12)
        ref_h = ref_state[0] if kind is nn.LSTM else ref_state
        torch.testing.assert_close(h_t[r], ref_h[0], rtol=1e-10, atol=1e-12)
        if kind is nn.LSTM:
            torch.testing.assert_close(c_t[r], ref_state[1][0], rtol=1e-10, atol=1e-12)
        m.zero_grad()
        (ref_out * probe[r]).sum().backward()
        torch.testing.assert_close(xs.grad[r], xr.grad, rtol=1e-9, atol=1e-12)
        for w, name in zip(weights, ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")):
            torch.testing.assert_close(w.grad[r], getattr(m, name).grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_scan_carries_a_given_state(kind):
    mods = _runs(kind)
    x = torch.randn(K, T, B, N_IN, dtype=torch.float64)
    h0 = torch.randn(K, B, H, dtype=torch.float64)
    c0 = torch.randn(K, B, H, dtype=torch.float64)
    w = stack_layers(mods)
    got = lstm_scan(x, *w, (h0, c0))[1][0] if kind is nn.LSTM else gru_scan(x, *w, h0)[1]
    for r, m in enumerate(mods):
        state = (h0[r:r + 1], c0[r:r + 1]) if kind is nn.LSTM else h0[r:r + 1]
        _, ref = m(x[r], state)
        torch.testing.assert_close(got[r], (ref[0] if kind is nn.LSTM else ref)[0], rtol=1e-10, atol=1e-12)


def test_scan_checks_the_cell():
    w = stack_layers(_runs(nn.GRU))
    x = torch.randn(K, T, B, N_IN, dtype=torch.float64)
    assert scan("gru", x, w).shape == (K, B, H)
    with pytest.raises(ValueError, match="do not fit cell=lstm"):
        scan("lstm", x, w)
    with pytest.raises(ValueError, match="cell=lstm or cell=gru"):
        scan("rnn", x, w)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_scan_of_two_layers_equals_each_run_alone(kind):
    torch.manual_seed(1)
    mods = [kind(N_IN, H, num_layers=2, dtype=torch.float64) for _ in range(K)]
    x = torch.randn(K, T, B, N_IN, dtype=torch.float64)
    got = scan("lstm" if kind is nn.LSTM else "gru", x, [*stack_layers(mods, 0), *stack_layers(mods, 1)])
    for r, m in enumerate(mods):
        out, _ = m(x[r])
        torch.testing.assert_close(got[r], out[-1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", [nn.LSTM, nn.GRU])
def test_scan_in_pieces_of_time_equals_the_whole(kind):
    torch.manual_seed(2)
    mods = [kind(N_IN, H, num_layers=2, dtype=torch.float64) for _ in range(K)]
    x = torch.randn(K, T, B, N_IN, dtype=torch.float64)
    w = [*stack_layers(mods, 0), *stack_layers(mods, 1)]
    cell = "lstm" if kind is nn.LSTM else "gru"
    whole = scan(cell, x, w, chunk=T)
    for chunk in (1, 3):  # pieces of one step, and pieces that do not divide T
        torch.testing.assert_close(scan(cell, x, w, chunk=chunk), whole, rtol=1e-12, atol=1e-14)
    for r, m in enumerate(mods):
        torch.testing.assert_close(whole[r], m(x[r])[0][-1], rtol=1e-10, atol=1e-12)
