"""The 2-D toy figure of a flow: samples beside a heat map of the learned density.

Toy data are (2, 1, 1) images of levels k on a K x K grid over a box (genzoo.data.toy: BOX =
[-4, 4]^2, 256 levels); v = (k + U) / K in [0, 1)^2 maps to the point lo + (hi - lo) v, so the
density of a point is p(v) / (hi - lo)^2. Drawn with matplotlib when it is installed, else with
Pillow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...checkpoint import atomic_write_bytes


def _box() -> tuple[float, float]:
    try:
        from ...data.toy import BOX
        return float(BOX[0]), float(BOX[1])
    except ImportError:  # toy data not installed: the unit square
        return 0.0, 1.0


@torch.no_grad()
def density_grid(model: Any, resolution: int) -> tuple[np.ndarray, tuple[float, float]]:
    """log p(point) on a resolution x resolution grid of bin centres over the box, (rows = y, cols = x)."""
    lo, hi = _box()
    c = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution
    vy, vx = torch.meshgrid(c, c, indexing="ij")
    v = torch.stack([vx.flatten(), vy.flatten()], 1).view(-1, 2, 1, 1)
    logs = [model.log_density_unit(v[i:i + 8192].to(model.device)).double().cpu() for i in range(0, len(v), 8192)]
    log_p = torch.cat(logs) - 2 * np.log(hi - lo)
    return log_p.view(resolution, resolution).numpy(), (lo, hi)


def density_figure(model: Any, data: Any, path: Path, n: int, resolution: int,
                   generator: torch.Generator | None) -> Path:
    """Write `path`: a scatter of n samples and the learned density over the box."""
    lo, hi = _box()
    x = model.sample(n, generator=generator).view(n, 2).double().cpu()
    points = lo + (x + 0.5) / model.spec.levels * (hi - lo)
    log_p, _ = density_grid(model, resolution)
    density = np.exp(log_p)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _pillow_figure(points.numpy(), density, (lo, hi), path)
    import io

    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    axes[0].scatter(points[:, 0], points[:, 1], s=1, c="k", alpha=0.5)
    axes[0].set_title(f"{n} samples")
    axes[1].imshow(density, origin="lower", extent=(lo, hi, lo, hi), cmap="viridis")
    axes[1].set_title("learned density")
    for ax in axes:
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
    fig.suptitle(f"{model.name} on {getattr(data, 'name', '') or 'toy data'}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _pillow_figure(points: np.ndarray, density: np.ndarray, box: tuple[float, float], path: Path) -> Path:
    import io

    from PIL import Image, ImageDraw

    size = density.shape[0]
    lo, hi = box
    left = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(left)
    for px, py in (points - lo) / (hi - lo) * (size - 1):
        draw.point((float(px), float(size - 1 - py)), fill=0)
    heat = (255 * density / max(float(density.max()), 1e-300)).clip(0, 255).astype(np.uint8)[::-1]
    canvas = Image.new("L", (2 * size + 8, size), 255)
    canvas.paste(left, (0, 0))
    canvas.paste(Image.fromarray(np.ascontiguousarray(heat)), (size + 8, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return path
