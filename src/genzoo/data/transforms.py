"""Maps between integer levels and the continuous spaces models work in.

Level k of K maps to (k + 0.5) / K in (0, 1) (bin centres) for `to_unit`, and to 2k/(K-1) - 1 in
[-1, 1] for `to_centered` (the diffusion convention).
"""
from __future__ import annotations

import torch
from torch import Tensor


def to_unit(x: Tensor, levels: int) -> Tensor:
    """Bin centres in (0, 1): (k + 0.5) / K."""
    return (x.to(torch.get_default_dtype()) + 0.5) / levels


def to_centered(x: Tensor, levels: int, dtype: torch.dtype | None = None) -> Tensor:
    """Levels to [-1, 1]: 2k/(K-1) - 1."""
    return x.to(dtype or torch.get_default_dtype()) * (2.0 / (levels - 1)) - 1.0


def from_unit(u: Tensor, levels: int) -> Tensor:
    """Continuous values in [0, 1] to levels: floor(u * K), clamped to [0, K-1]."""
    return (u * levels).floor().clamp(0, levels - 1).long()


def from_centered(v: Tensor, levels: int) -> Tensor:
    """[-1, 1] to the nearest level: round((v + 1) (K-1) / 2), clamped."""
    return ((v + 1) * ((levels - 1) / 2)).round().clamp(0, levels - 1).long()


def dequantize(x: Tensor, levels: int, generator: torch.Generator | None = None,
               dtype: torch.dtype | None = None) -> Tensor:
    """Uniform dequantization: u = (k + U(0, 1)) / K in [0, 1).

    With p(x) = integral over the bin of the density, E_u[log p(u)] - D log K <= log P(x)
    (Theis et al. 2016), so a density on [0, 1]^D gives a lower bound on the discrete probability.
    """
    dtype = dtype or torch.get_default_dtype()
    noise = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
    return (x.to(dtype) + noise) / levels
