"""convert() only swaps in a fused layer where it computes the same function on every input the
stock layers accept; otherwise it keeps the stock layers and warns once."""

import warnings

import torch
from torch import nn

from alexnet_cuda.convert import convert
from alexnet_cuda.ops._args import MAX_WINDOW_TAPS


def _relu_lrn_max_pool2d(pool):
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), pool)


def _converted(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert(model)
    return [str(w.message) for w in caught if "alexnet_cuda.convert" in str(w.message)]


def test_relu_lrn_max_pool2d_on_unbatched_3d_input_computes_what_the_stock_layers_compute():
    # stock LRN reads a 3-D input as (N, C, L); the fused stage would read (C, H, W)
    torch.manual_seed(0)
    model = nn.Sequential(nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(3, 2))
    x3, x4 = torch.randn(8, 20, 20) * 3, torch.randn(2, 8, 20, 20) * 3
    ref3, ref4 = model(x3), model(x4)
    assert _converted(model) == []
    assert type(model[0]).__name__ == "ConvertedReLULRNMaxPool2d"  # fused for 4-D input
    torch.testing.assert_close(model(x3), ref3, rtol=0, atol=0)
    torch.testing.assert_close(model(x4), ref4, rtol=1e-5, atol=1e-6)
    assert model.state_dict().keys() == set()


def test_pool_window_over_the_tap_limit_stays_stock_with_one_warning():
    torch.manual_seed(0)
    model = _relu_lrn_max_pool2d(nn.MaxPool2d(17, 1))
    assert 17 * 17 > MAX_WINDOW_TAPS
    x = torch.randn(2, 3, 24, 24, requires_grad=True)
    ref = model(x)
    messages = _converted(model)
    assert len(messages) == 1 and "1..3" in messages[0] and str(MAX_WINDOW_TAPS) in messages[0]
    assert type(model[2]) is nn.LocalResponseNorm and type(model[3]) is nn.MaxPool2d  # stock
    out = model(x)  # runs (the fused stage would raise) and computes the same
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    out.sum().backward()


def test_relu_lrn_max_pool2d_within_the_limit_is_fused_and_matches_stock_forward_and_backward():
    torch.manual_seed(1)
    model = _relu_lrn_max_pool2d(nn.MaxPool2d(3, 2))
    ref_model = _relu_lrn_max_pool2d(nn.MaxPool2d(3, 2))
    ref_model.load_state_dict(model.state_dict())
    assert _converted(model) == []
    assert type(model[1]).__name__ == "ConvertedReLULRNMaxPool2d"
    x = torch.randn(2, 3, 24, 24) * 2
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = model(xa), ref_model(xb)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(a)
    a.backward(g)
    b.backward(g)
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-6)
