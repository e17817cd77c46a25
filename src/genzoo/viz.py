"""Pictures: image grids of levels as PNG, scatter plots for 2-D toy data, and the figures that
models describe as data (`GenerativeModel.figures`: ImageRows, DensityMap)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from .checkpoint import atomic_write_bytes
from .data.spec import DataSpec
from .models.base import DensityMap, Figure, ImageRows


def grid_array(x: Tensor, levels: int, nrow: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """Levels (N, C, H, W) -> uint8 (rows*H, cols*W, C) mosaic, level k shown as round(255 k / (K-1))."""
    x = x.detach().cpu().long()
    n, c, h, w = x.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol_rows = int(math.ceil(n / nrow))
    img = (x.float() * (255.0 / (levels - 1))).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.full((ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255 if c == 3 else 128, dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = img[k]
    if scale > 1:
        out = out.repeat(scale, 0).repeat(scale, 1)
    return out


def _png_bytes(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W) or (H, W, 1|3) array as PNG, atomically."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    path = Path(path)
    atomic_write_bytes(path, _png_bytes(Image.fromarray(array)))
    return path


def scatter_image(points: Tensor, levels: int, size: int = 256) -> Image.Image:
    """2-D points given as levels (N, 2) on a K x K grid -> a white image with dark dots (y up)."""
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    p = points.detach().cpu().double()
    u = ((p + 0.5) / levels * (size - 1)).numpy()
    for a, b in u:
        draw.point((float(a), float(size - 1 - b)), fill=0)
    return img


def save_grid(x: Tensor, spec: DataSpec, path: str | Path, nrow: int | None = None, scale: int | None = None) -> Path:
    """Save samples as a PNG grid; 2-D toy data (2x1x1 images) as a scatter plot instead."""
    path = Path(path)
    if spec.height == 1 and spec.width == 1 and spec.channels == 2:
        atomic_write_bytes(path, _png_bytes(scatter_image(x.view(-1, 2), spec.levels)))
        return path
    if scale is None:
        scale = max(1, 96 // max(spec.height, spec.width))
    if spec.channels not in (1, 3):
        x = x[:, :1]
    return save_png(grid_array(x, spec.levels, nrow, scale=1, pad=1).repeat(scale, 0).repeat(scale, 1), path)


def save_rows(rows: list[Tensor], spec: DataSpec, path: str | Path, scale: int | None = None) -> Path:
    """Save several equally long batches as the rows of one grid (e.g. input above, output below)."""
    n = rows[0].shape[0]
    return save_grid(torch.cat([r[:n] for r in rows]), spec, path, nrow=n, scale=scale)


def save_figure(figure: Figure, spec: DataSpec, path: str | Path) -> Path:
    """Draw a model's figure (ImageRows or DensityMap) as a PNG at `path`."""
    if isinstance(figure, ImageRows):
        return save_rows([r.cpu() for r in figure.rows], spec, path)
    if isinstance(figure, DensityMap):
        return save_density_map(figure, path)
    raise TypeError(f"not a figure: {type(figure).__name__}")


def save_density_map(figure: DensityMap, path: str | Path) -> Path:
    """Samples beside a heat map of the density over the box; matplotlib when installed, else Pillow."""
    path = Path(path)
    points = figure.points.detach().double().cpu().numpy()
    density = figure.log_density.detach().double().cpu().exp().numpy()
    lo, hi = figure.box
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _pillow_density_map(points, density, (lo, hi), path)
    import io

    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    axes[0].scatter(points[:, 0], points[:, 1], s=1, c="k", alpha=0.5)
    axes[0].set_title(f"{len(points)} samples")
    axes[1].imshow(density, origin="lower", extent=(lo, hi, lo, hi), cmap="viridis")
    axes[1].set_title("learned density")
    for ax in axes:
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
    if figure.title:
        fig.suptitle(figure.title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _pillow_density_map(points: np.ndarray, density: np.ndarray, box: tuple[float, float], path: Path) -> Path:
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
    atomic_write_bytes(path, _png_bytes(canvas))
    return path
