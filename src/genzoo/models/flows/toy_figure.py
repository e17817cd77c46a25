"""The 2-D toy figure of a flow, as data: samples beside the learned density (genzoo.viz draws it).

Toy data are (2, 1, 1) images of levels k on a K x K grid over a box (genzoo.data.toy: BOX =
[-4, 4]^2, 256 levels); v = (k + U) / K in [0, 1)^2 maps to the point lo + (hi - lo) v, so the
density of a point is p(v) / (hi - lo)^2.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ...data.toy import BOX
from ..base import DensityMap


@torch.no_grad()
def density_grid(model: Any, resolution: int) -> tuple[Tensor, tuple[float, float]]:
    """log p(point) on a resolution x resolution grid of bin centres over the box, (rows = y, cols = x)."""
    lo, hi = float(BOX[0]), float(BOX[1])
    c = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution
    vy, vx = torch.meshgrid(c, c, indexing="ij")
    v = torch.stack([vx.flatten(), vy.flatten()], 1).view(-1, 2, 1, 1)
    logs = [model.log_density_unit(v[i:i + 8192].to(model.device)).double().cpu() for i in range(0, len(v), 8192)]
    log_p = torch.cat(logs) - 2 * math.log(hi - lo)
    return log_p.view(resolution, resolution), (lo, hi)


def density_map(model: Any, data: Any, n: int, resolution: int, generator: torch.Generator | None) -> DensityMap:
    """n samples of the model, as points of the box, and its log-density on a grid."""
    log_p, (lo, hi) = density_grid(model, resolution)
    x = model.sample(n, generator=generator).view(n, 2).double().cpu()
    points = lo + (x + 0.5) / model.spec.levels * (hi - lo)
    return DensityMap(points, log_p, (lo, hi), f"{model.name} on {data.name or 'toy data'}")
