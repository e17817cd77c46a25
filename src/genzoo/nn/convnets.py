"""Convolutional encoder and decoder for autoencoders: images of any size <-> flat vectors.

The encoder halves the resolution (stride-2 convolutions, sizes rounded up) until the smaller
side is at most `min_size`, doubling the channels at each step up to `max_mult` times the first
width; the last feature map is flattened and projected linearly. The decoder mirrors it:
a linear map to the smallest feature map, then nearest-neighbour upsampling to the encoder's
exact sizes, so odd sizes (28 -> 14 -> 7 -> 4) come back exactly. GroupNorm keeps every image's
output independent of the rest of its batch.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


def feature_sizes(height: int, width: int, min_size: int = 4) -> list[tuple[int, int]]:
    """Spatial sizes from the input down: halve (rounding up) while min(h, w) > min_size."""
    sizes = [(height, width)]
    while min(sizes[-1]) > min_size:
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def group_norm(channels: int, spatial: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups, fewer where a group would hold under 16 values (tiny maps)."""
    groups = math.gcd(channels, 8)
    while groups > 1 and (channels // groups) * spatial < 16:
        groups //= 2
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """x + conv(silu(norm(dropout(conv(silu(norm(x))))))), 3x3 convolutions."""

    def __init__(self, channels: int, spatial: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = group_norm(channels, spatial)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = group_norm(channels, spatial)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return x + h


def _widths(hidden_channels: int, levels: int, max_mult: int) -> list[int]:
    return [hidden_channels * min(2 ** i, max_mult) for i in range(levels)]


class ConvEncoder(nn.Module):
    """(B, C, H, W) real -> (B, out_features): residual stages with stride-2 downsampling between."""

    def __init__(self, in_channels: int, height: int, width: int, hidden_channels: int, out_features: int,
                 num_blocks: int = 1, dropout: float = 0.0, min_size: int = 4, max_mult: int = 2) -> None:
        super().__init__()
        self.sizes = feature_sizes(height, width, min_size)
        widths = _widths(hidden_channels, len(self.sizes), max_mult)
        self.input = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        stages = []
        for i, ch in enumerate(widths):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(nn.Conv2d(widths[i - 1], ch, 3, stride=2, padding=1))
            layers.extend(ResBlock(ch, self.sizes[i][0] * self.sizes[i][1], dropout) for _ in range(num_blocks))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        h, w = self.sizes[-1]
        self.norm = group_norm(widths[-1], h * w)
        self.output = nn.Linear(widths[-1] * h * w, out_features)

    def forward(self, v: Tensor) -> Tensor:
        h = self.input(v)
        for stage in self.stages:
            h = stage(h)
        return self.output(F.silu(self.norm(h)).flatten(1))


class ConvDecoder(nn.Module):
    """(B, in_features) -> (B, out_channels, H, W): the mirror of ConvEncoder, upsampling to its sizes."""

    def __init__(self, in_features: int, out_channels: int, height: int, width: int, hidden_channels: int,
                 num_blocks: int = 1, dropout: float = 0.0, min_size: int = 4, max_mult: int = 2) -> None:
        super().__init__()
        self.sizes = feature_sizes(height, width, min_size)[::-1]  # smallest first
        widths = _widths(hidden_channels, len(self.sizes), max_mult)[::-1]
        h, w = self.sizes[0]
        self.input = nn.Linear(in_features, widths[0] * h * w)
        stages = []
        for i, ch in enumerate(widths):
            layers: list[nn.Module] = []
            if i > 0:
                layers.append(nn.Conv2d(widths[i - 1], ch, 3, padding=1))
            layers.extend(ResBlock(ch, self.sizes[i][0] * self.sizes[i][1], dropout) for _ in range(num_blocks))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.norm = group_norm(widths[-1], height * width)
        self.output = nn.Conv2d(widths[-1], out_channels, 3, padding=1)
        self.first_width = widths[0]

    def forward(self, z: Tensor) -> Tensor:
        h0, w0 = self.sizes[0]
        h = self.input(z).view(z.shape[0], self.first_width, h0, w0)  # (B, ch, h0, w0)
        for i, stage in enumerate(self.stages):
            if i > 0:
                h = F.interpolate(h, size=self.sizes[i], mode="nearest")
            h = stage(h)
        return self.output(F.silu(self.norm(h)))
