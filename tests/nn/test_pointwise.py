"""1x1 convolutions as matrix products equal torch's convolution in float64, forward and backward."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genzoo.nn.pointwise import Conv1x1, conv1x1, conv2d


@pytest.mark.parametrize("shape, out", [((5, 3, 1, 1), 4), ((5, 3, 2, 2), 7), ((5, 6, 4, 3), 2), ((2, 8, 8, 8), 16)])
@pytest.mark.parametrize("bias", [True, False])
def test_conv1x1_equals_the_convolution_and_its_gradients_in_float64(shape, out, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(out, shape[1], 1, 1, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(out, generator=g, dtype=torch.float64, requires_grad=True) if bias else None
    grad_out = torch.randn(shape[0], out, *shape[2:], generator=g, dtype=torch.float64)
    inputs = [t for t in (x, w, b) if t is not None]
    y = conv1x1(x, w, b)
    y_ref = F.conv2d(x, w, b)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(y, inputs, grad_out), torch.autograd.grad(y_ref, inputs, grad_out)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_channels_last_inputs_give_the_convolution_in_channels_last_order():
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    layer = Conv1x1(4, 6).double()
    y = layer(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    y_ref = F.conv2d(x, layer.weight, layer.bias)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(y_ref)
    params = [x, layer.weight, layer.bias]
    for got, want in zip(torch.autograd.grad(y, params, grad_out), torch.autograd.grad(y_ref, params, grad_out)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_the_module_is_a_conv2d_with_the_same_parameters_and_initialisation():
    torch.manual_seed(0)
    ours = conv2d(6, 3, 1)
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(6, 3, 1)
    assert isinstance(ours, Conv1x1) and isinstance(ours, torch.nn.Conv2d)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))
    assert type(conv2d(6, 3, 3, padding=1)) is torch.nn.Conv2d
