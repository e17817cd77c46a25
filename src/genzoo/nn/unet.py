"""A U-Net for diffusion models: sinusoidal time embedding, residual blocks with group norm,
self-attention at chosen resolutions, skip connections between the down and up paths.

The network maps (x (B, C, H, W), t (B,) float) to (B, out_channels, H, W). It never sees a
noise schedule: t is only a position to embed (a step index, or continuous time scaled by the
caller). Ho et al. 2020, appendix B; the layout follows improved-diffusion (Nichol & Dhariwal 2021).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .pointwise import Conv1x1


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= max_groups that divides `channels`."""
    groups = math.gcd(channels, max_groups)
    return nn.GroupNorm(groups, channels)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """(B,) -> (B, dim): [cos(t w_i), sin(t w_i)] with w_i = max_period^(-i / (dim/2)).

    Vaswani et al. 2017, section 3.5, as used for diffusion time steps by Ho et al. 2020.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t.to(dtype)[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


class TimeEmbedding(nn.Module):
    """t (B,) -> (B, emb_dim): sinusoidal features through a two-layer SiLU MLP."""

    def __init__(self, base_dim: int, emb_dim: int) -> None:
        super().__init__()
        self.base_dim = base_dim
        self.mlp = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t: Tensor) -> Tensor:
        emb = sinusoidal_embedding(t, self.base_dim, dtype=self.mlp[0].weight.dtype)
        return self.mlp(emb)


class ResBlock(nn.Module):
    """x + conv(dropout(silu(gn(h) (1 + scale) + shift))), h = conv(silu(gn(x))), (scale, shift) = W emb.

    The time embedding enters after the norm (improved-diffusion's scale-shift norm): a shift added
    before a group norm with one channel per group would be normalized away. 1x1 skip when channels change.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float, max_groups: int = 32) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, max_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = group_norm(out_channels, max_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = Conv1x1(in_channels, out_channels) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """x + proj(softmax(q k^T / sqrt(d)) v) over the H*W positions, multi-head, after group norm."""

    def __init__(self, channels: int, num_heads: int = 1, max_groups: int = 32) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = group_norm(channels, max_groups)
        self.qkv = Conv1x1(channels, 3 * channels)
        self.proj = Conv1x1(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        qkv = self.qkv(self.norm(x)).view(B, 3, self.num_heads, C // self.num_heads, H * W)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (B, heads, HW, C/heads)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(h)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to `size`, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class UNet(nn.Module):
    """(x (B, C_in, H, W), t (B,)) -> (B, C_out, H, W).

    Levels i = 0..L-1 with base_channels * channel_mults[i] channels and resolution H / 2^i;
    num_res_blocks residual blocks per level on the way down (num_res_blocks + 1 on the way up,
    one per skip), attention after each block whose resolution (the smaller side) is in
    attention_resolutions, and a middle of ResBlock - attention - ResBlock.
    Group norm uses up to 32 groups; on 1x1 inputs (2-D toy data) one group, a layer norm over
    channels, since a group of one channel at one position normalizes every input to 0.
    With num_classes > 0 a class embedding is added to the time embedding; label num_classes (or
    labels=None) is the null class, the unconditional model of classifier-free guidance.
    """

    def __init__(self, in_channels: int, out_channels: int, image_size: int, base_channels: int = 64,
                 channel_mults: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 attention_resolutions: Sequence[int] = (4,), dropout: float = 0.0, num_heads: int = 1,
                 num_classes: int = 0) -> None:
        super().__init__()
        emb_dim = 4 * base_channels
        g = 32 if image_size > 1 else 1
        self.num_classes = num_classes
        self.time_embed = TimeEmbedding(base_channels, emb_dim)
        self.label_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        def attention(ch: int, res: int) -> nn.Module:
            return AttentionBlock(ch, num_heads, g) if res in attention_resolutions else nn.Identity()

        self.down = nn.ModuleList()
        skips = [base_channels]
        ch, res = base_channels, image_size
        for i, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([ResBlock(ch, base_channels * mult, emb_dim, dropout, g),
                                                attention(base_channels * mult, res)]))
                ch = base_channels * mult
                skips.append(ch)
            if i < len(channel_mults) - 1:
                self.down.append(Downsample(ch))
                skips.append(ch)
                res = (res + 1) // 2
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout, g), AttentionBlock(ch, num_heads, g),
                                  ResBlock(ch, ch, emb_dim, dropout, g)])
        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                self.up.append(nn.ModuleList([ResBlock(ch + skips.pop(), base_channels * mult, emb_dim, dropout, g),
                                              attention(base_channels * mult, res)]))
                ch = base_channels * mult
            if i > 0:
                self.up.append(Upsample(ch))
                res = res * 2
        assert not skips
        self.norm_out = group_norm(ch, g)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def guided(self, x: Tensor, t: Tensor, labels: Tensor | None, guidance: float = 1.0,
               mean_channels: int | None = None) -> Tensor:
        """The network given `labels`; with classifier-free guidance w != 1, u + w (c - u) on the first
        `mean_channels` output channels (all by default), u the null class's output and c the
        labels', the remaining channels (a learned variance) the conditional's. Ho & Salimans 2022."""
        if labels is None or guidance == 1.0:
            return self(x, t, labels)
        null = torch.full_like(labels, self.num_classes)
        u, c = self(torch.cat([x, x]), torch.cat([t, t]), torch.cat([null, labels])).chunk(2)
        k = c.shape[1] if mean_channels is None else mean_channels
        return torch.cat([u[:, :k] + guidance * (c[:, :k] - u[:, :k]), c[:, k:]], 1)

    def drop_labels(self, labels: Tensor | None, p: float) -> Tensor | None:
        """Each label replaced by the null class with probability p: the training of classifier-free
        guidance, one unconditional model inside the conditional one."""
        if labels is None:
            return None
        dropped = torch.rand(labels.shape, device=labels.device) < p
        return torch.where(dropped, torch.full_like(labels, self.num_classes), labels)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        assert x.ndim == 4 and t.shape == (x.shape[0],), \
            f"x must be (B, C, H, W) and t (B,), got {tuple(x.shape)}, {tuple(t.shape)}"
        emb = self.time_embed(t)
        if self.label_embed is not None:
            if labels is None:
                labels = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            emb = emb + self.label_embed(labels)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, Downsample):
                h = layer(h)
            else:
                block, attn = layer
                h = attn(block(h, emb))
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, Upsample):
                h = layer(h, hs[-1].shape[-2:])
            else:
                block, attn = layer
                h = attn(block(torch.cat([h, hs.pop()], dim=1), emb))
        return self.conv_out(F.silu(self.norm_out(h)))
