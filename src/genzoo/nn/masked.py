"""Masked convolutions for raster-order autoregressive models, over pixels and colour channels.

Order: pixels in raster order (row by row, left to right); within a pixel, channel 0 (R), then
1 (G), then 2 (B). Feature maps are split into C contiguous groups, group c carrying the
prediction of channel c. At the kernel centre a type-A mask lets group c see input groups < c,
a type-B mask groups <= c; pixels above and to the left are seen by every group.
van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.4.

        type A (first layer)   type B (later layers)
            1 1 1                  1 1 1
            1 0 0                  1 x 0       x: by channel group at the centre
            0 0 0                  0 0 0

The rows below the centre are all zero, so a k x k masked convolution is computed as one with the
k//2 + 1 kept rows of the kernel and the input padded k//2 rows on top, none below: the same
output for about half the work of the full kernel. The weight keeps its full k x k shape.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pointwise import conv1x1


def channel_groups(num_features: int, num_groups: int) -> Tensor:
    """Group of each feature: contiguous blocks, feature f -> floor(f * G / F)."""
    return torch.arange(num_features) * num_groups // num_features


def raster_mask(mask_type: Literal["A", "B"], out_channels: int, in_channels: int, kernel_size: tuple[int, int],
                num_groups: int, in_groups: Tensor | None = None) -> Tensor:
    """(out, in, kh, kw) mask: above/left always 1, centre by channel group, below/right 0.

    `in_groups` overrides the input grouping; a group of -1 marks an input every output may see
    at the centre (e.g. a constant channel that carries no data).
    """
    kh, kw = kernel_size
    mask = torch.ones(out_channels, in_channels, kh, kw)
    mask[:, :, kh // 2, kw // 2 + 1:] = 0
    mask[:, :, kh // 2 + 1:] = 0
    g_out = channel_groups(out_channels, num_groups)[:, None]
    g_in = channel_groups(in_channels, num_groups)[None, :] if in_groups is None else in_groups[None, :]
    centre = (g_in < g_out) if mask_type == "A" else (g_in <= g_out)
    mask[:, :, kh // 2, kw // 2] = (centre | (g_in < 0)).float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """Conv2d that sees only earlier pixels, and earlier (A) or earlier-and-same (B) channel groups."""

    def __init__(self, mask_type: Literal["A", "B"], in_channels: int, out_channels: int, kernel_size: int,
                 num_groups: int = 1, in_groups: Tensor | None = None, bias: bool = True) -> None:
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
        self.mask_type = mask_type
        mask = raster_mask(mask_type, out_channels, in_channels, self.kernel_size, num_groups, in_groups)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        if kh == kw == 1:
            return conv1x1(x, self.weight * self.mask, self.bias)
        if kh % 2 == 0:  # no centre row: the full kernel
            return F.conv2d(x, self.weight * self.mask, self.bias, self.stride, self.padding)
        rows = kh // 2 + 1
        weight = self.weight[:, :, :rows] * self.mask[:, :, :rows]  # (out, in, kh//2 + 1, kw)
        if kh > 1 or kw > 1:
            x = F.pad(x, (self.padding[1], self.padding[1], self.padding[0], 0))
        return F.conv2d(x, weight, self.bias, self.stride)
