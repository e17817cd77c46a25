"""MaskedConv2d computes only the kept rows of its kernel, with the output of the full masked kernel."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genzoo.nn.masked import MaskedConv2d


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("in_channels, out_channels, kernel_size, num_groups, in_groups", [
    (1, 6, 5, 1, None),                                   # grey
    (4, 9, 7, 3, torch.tensor([0, 1, 2, -1])),            # colour, with a constant channel seen by all
    (6, 6, 3, 3, None),                                   # colour, a later layer
    (6, 9, 1, 3, None),                                   # 1x1
])
def test_kept_rows_give_the_full_masked_kernels_output_in_float64(mask_type, in_channels, out_channels, kernel_size,
                                                                   num_groups, in_groups):
    torch.manual_seed(0)
    conv = MaskedConv2d(mask_type, in_channels, out_channels, kernel_size, num_groups, in_groups).double()
    with torch.no_grad():  # random weights everywhere, the masked-out rows included
        conv.weight.normal_()
        conv.bias.normal_()
    x = torch.randn(2, in_channels, 9, 8, dtype=torch.float64)
    expected = F.conv2d(x, conv.weight * conv.mask, conv.bias, padding=kernel_size // 2)
    torch.testing.assert_close(conv(x), expected, rtol=1e-12, atol=1e-12)


def test_the_weight_keeps_its_full_shape_and_checkpoints_load():
    conv = MaskedConv2d("A", 3, 6, 15, 3)
    assert conv.weight.shape == (6, 3, 15, 15)
    assert set(conv.state_dict()) == {"weight", "bias"}
    MaskedConv2d("A", 3, 6, 15, 3).load_state_dict(conv.state_dict())
