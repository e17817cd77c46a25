"""Causal convolutions without a blind spot: the vertical and horizontal stacks of the Gated
PixelCNN and the down / down-right shifted convolutions of PixelCNN++; and the gated activation
unit of the Gated PixelCNN, shared by the model and its cached sampler.

Order: pixels in raster order, and within a pixel channel 0 (R), then 1 (G), then 2 (B), as in
nn/masked.py. A vertical convolution at row i sees rows <= i (its output is shifted down one
row before anything at row i may use it); a horizontal convolution at (i, j) sees columns <= j of
row i, and at column j only earlier (type A) or earlier-and-same (type B) channel groups.

    vertical (k = 3)    horizontal, type A      down-shifted (2x3)   down-right (2x2)
        1 1 1               1 x                     1 1 1                1 1
        1 1 1  <- row i                             0 1 0 <- output     1 0 <- output
van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders", section 2.1;
Salimans et al. 2017, "PixelCNN++", section 2.3.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pointwise import conv1x1


def down_shift(x: Tensor) -> Tensor:
    """Move every row down by one, a zero row entering at the top: y[i] = x[i - 1]."""
    return F.pad(x, (0, 0, 1, 0))[:, :, : x.shape[2]]


def right_shift(x: Tensor) -> Tensor:
    """Move every column right by one, a zero column entering at the left: y[:, j] = x[:, j - 1]."""
    return F.pad(x, (1, 0, 0, 0))[..., : x.shape[3]]


def centre_mask(mask_type: Literal["A", "B"], out_groups: Tensor, in_groups: Tensor) -> Tensor:
    """(out, in) 0/1 mask of the centre tap: output group g sees input groups < g (A) or <= g (B).

    An input group of -1 marks a channel every output may see (e.g. a constant channel).
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    g_out, g_in = out_groups[:, None], in_groups[None, :]
    centre = (g_in < g_out) if mask_type == "A" else (g_in <= g_out)
    return (centre | (g_in < 0)).float()


class VerticalConv2d(nn.Conv2d):
    """Convolution over the rows above and the current row: kernel (k//2 + 1, k), output row i sees
    input rows i - k//2 .. i, columns j - k//2 .. j + k//2. Unmasked: its output reaches row i only
    after `down_shift`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        p = kernel_size // 2
        super().__init__(in_channels, out_channels, (p + 1, kernel_size))
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        p = self.p
        return super().forward(F.pad(x, (p, p, p, 0)))


class HorizontalConv2d(nn.Conv2d):
    """Convolution over the current row, columns j - k//2 .. j, kernel (1, k//2 + 1); at column j
    output group g sees input groups < g (A) or <= g (B)."""

    def __init__(self, mask_type: Literal["A", "B"], in_channels: int, out_channels: int, kernel_size: int,
                 out_groups: Tensor, in_groups: Tensor) -> None:
        p = kernel_size // 2
        super().__init__(in_channels, out_channels, (1, p + 1))
        self.p = p
        mask = torch.ones(out_channels, in_channels, 1, p + 1)
        mask[:, :, 0, p] = centre_mask(mask_type, out_groups, in_groups)
        self.register_buffer("mask", mask, persistent=False)

    def masked_weight(self) -> Tensor:
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (self.p, 0, 0, 0)), self.masked_weight(), self.bias)


class GroupedConv1x1(nn.Conv2d):
    """1x1 convolution where output group g sees input groups <= g (type B) or < g (type A)."""

    def __init__(self, mask_type: Literal["A", "B"], in_channels: int, out_channels: int,
                 out_groups: Tensor, in_groups: Tensor) -> None:
        super().__init__(in_channels, out_channels, 1)
        self.register_buffer("mask", centre_mask(mask_type, out_groups, in_groups)[:, :, None, None], persistent=False)

    def masked_weight(self) -> Tensor:
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return conv1x1(x, self.masked_weight(), self.bias)


# -- PixelCNN++ ------------------------------------------------------------------------------------
class DownShiftedConv2d(nn.Conv2d):
    """Output (i, j) sees input rows i - kh + 1 .. i and columns j - kw//2 .. j + kw//2 (zero padded
    above and at the sides); `shift_down` then moves it one row down so it sees rows < i only."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 3),
                 stride: int = 1, shift_down: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)
        self.shift_down = shift_down

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        y = super().forward(F.pad(x, ((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)))
        return down_shift(y) if self.shift_down else y


class DownRightShiftedConv2d(nn.Conv2d):
    """Output (i, j) sees input rows i - kh + 1 .. i and columns j - kw + 1 .. j; `shift_right` then
    moves it one column right."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 2),
                 stride: int = 1, shift_right: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)
        self.shift_right = shift_right

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        y = super().forward(F.pad(x, (kw - 1, 0, kh - 1, 0)))
        return right_shift(y) if self.shift_right else y


class DownShiftedConvTranspose2d(nn.ConvTranspose2d):
    """Upsampling by 2 that keeps the down-shifted order: output row i sees input rows <= i // 2."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 3)) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=2, output_padding=1)

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        y = super().forward(x)
        H, W = y.shape[2:]
        return y[:, :, : H - kh + 1, (kw - 1) // 2: W - (kw - 1) // 2]


class DownRightShiftedConvTranspose2d(nn.ConvTranspose2d):
    """Upsampling by 2 that keeps the down-right order: output (i, j) sees inputs up to (i // 2, j // 2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 2)) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=2, output_padding=1)

    def forward(self, x: Tensor) -> Tensor:
        kh, kw = self.kernel_size
        y = super().forward(x)
        H, W = y.shape[2:]
        return y[:, :, : H - kh + 1, : W - kw + 1]


def concat_elu(x: Tensor) -> Tensor:
    """elu([x, -x]) along channels: both signs of the input survive the nonlinearity."""
    return F.elu(torch.cat([x, -x], dim=1))


def gate(a: Tensor) -> Tensor:
    """The gated activation unit tanh(f) * sigmoid(g), with [f, g] the two halves of `a` along dim 1.

    van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders", eq. 2.
    """
    f, g = a.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)
