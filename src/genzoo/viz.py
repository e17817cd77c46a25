"""Pictures: image grids of levels as PNG, scatter plots for 2-D toy data, and the figures that
models describe as data (`GenerativeModel.figures`: ImageRows, DensityMap)."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .checkpoint import atomic_write_bytes
from .data.spec import DataSpec
from .models.base import DensityMap, Figure, GenerativeModel, ImageRows


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


def scatter_image(points: Tensor, levels: int, size: int = 256, reference: Tensor | None = None) -> Image.Image:
    """2-D points given as levels (N, 2) on a K x K grid -> red dots (y up) over the density of the
    `reference` points (levels (M, 2), e.g. the data), drawn as a grey 2-D histogram, when given."""
    img = Image.new("RGB", (size, size), "white")
    if reference is not None and len(reference):
        bins = 64
        idx = (reference.detach().cpu().long().view(-1, 2) * bins // levels).clamp(0, bins - 1)
        hist = torch.zeros(bins, bins, dtype=torch.float64)
        hist.index_put_((idx[:, 1], idx[:, 0]), torch.ones(len(idx), dtype=torch.float64), accumulate=True)
        shade = (255 - 150 * (hist / hist.max()).sqrt()).flip(0).round().to(torch.uint8).numpy()  # row 0: top
        img.paste(Image.fromarray(np.ascontiguousarray(shade)).resize((size, size), Image.NEAREST).convert("RGB"))
    draw = ImageDraw.Draw(img)
    u = ((points.detach().cpu().double() + 0.5) / levels * (size - 1)).numpy()
    for a, b in u:
        draw.ellipse((a - 1.5, size - 1 - b - 1.5, a + 1.5, size - 1 - b + 1.5), fill=(200, 30, 30))
    return img


def _font(size: int = 12) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1: the small bitmap font
        return ImageFont.load_default()


def with_labels(array: np.ndarray, cell: tuple[int, int], pad: int, rows: tuple[str, ...] = (),
                cols: tuple[str, ...] = ()) -> Image.Image:
    """A grid (H, W, C) uint8 of cells `cell` = (height, width) pixels apart after `pad` pixels, with
    each row's name in a left margin and each column's above it, centred on the row or column."""
    img = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).convert("RGB")
    if not rows and not cols:
        return img
    font, text_height = _font(), 12
    measure = ImageDraw.Draw(img)
    left = int(max(measure.textlength(t, font=font) for t in rows)) + 10 if rows else 0
    top = text_height + 6 if cols else 0
    canvas = Image.new("RGB", (img.width + left, img.height + top), "white")
    canvas.paste(img, (left, top))
    draw = ImageDraw.Draw(canvas)
    h, w = cell
    for r, text in enumerate(rows):
        y = top + pad + r * h + (h - pad) / 2 - text_height / 2
        draw.text((left - 5 - draw.textlength(text, font=font), y), text, fill="black", font=font)
    for c, text in enumerate(cols):
        x = left + pad + c * w + (w - pad) / 2 - draw.textlength(text, font=font) / 2
        draw.text((x, 2), text, fill="black", font=font)
    return canvas


def save_grid(x: Tensor, spec: DataSpec, path: str | Path, nrow: int | None = None, scale: int | None = None,
              row_labels: tuple[str, ...] = (), col_labels: tuple[str, ...] = (),
              reference: Tensor | None = None) -> Path:
    """Save samples as a PNG grid, with row and column names when given; 2-D toy data (2x1x1 images)
    as a scatter plot instead, over the density of `reference` levels (e.g. the data) when given."""
    path = Path(path)
    if spec.height == 1 and spec.width == 1 and spec.channels == 2:
        ref = None if reference is None else reference.reshape(-1, 2)
        atomic_write_bytes(path, _png_bytes(scatter_image(x.reshape(-1, 2), spec.levels, reference=ref)))
        return path
    if scale is None:
        scale = max(1, 96 // max(spec.height, spec.width))
    if spec.channels not in (1, 3):
        x = x[:, :1]
    array = grid_array(x, spec.levels, nrow, scale=1, pad=1).repeat(scale, 0).repeat(scale, 1)
    if not row_labels and not col_labels:
        return save_png(array, path)
    cell = (scale * (spec.height + 1), scale * (spec.width + 1))
    atomic_write_bytes(path, _png_bytes(with_labels(array, cell, scale, row_labels, col_labels)))
    return path


def save_rows(rows: list[Tensor], spec: DataSpec, path: str | Path, scale: int | None = None,
              labels: tuple[str, ...] = ()) -> Path:
    """Save several equally long batches as the rows of one grid (e.g. input above, output below),
    each row's name in a left margin when `labels` are given."""
    n = rows[0].shape[0]
    return save_grid(torch.cat([r[:n] for r in rows]), spec, path, nrow=n, scale=scale, row_labels=labels)


def save_figure(figure: Figure, spec: DataSpec, path: str | Path) -> Path:
    """Draw a model's figure (ImageRows or DensityMap) as a PNG at `path`."""
    if isinstance(figure, ImageRows):
        return save_rows([r.cpu() for r in figure.rows], spec, path, labels=figure.labels)
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
    axes[0].scatter(points[:, 0], points[:, 1], s=4, c="tab:red", alpha=0.7)
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


def write_samples(model: GenerativeModel, path: Any, n: int, seed: int, data: Tensor | None = None) -> dict[str, Any]:
    """A PNG grid of n samples drawn with the model's `quick_sample_options` and a generator seeded by
    `seed` (nothing for conditional models); 2-D toy samples are drawn over the density of `data`.
    Returns the metrics of the draw: sample_seconds, and sampler and sample_nfe where the model records them."""
    if model.conditional or n == 0 or path is None:
        return {}
    g = torch.Generator(device=model.device).manual_seed(seed)
    t0 = time.perf_counter()
    x = model.sample(n, generator=g, **model.quick_sample_options)
    row: dict[str, Any] = {"sample_seconds": time.perf_counter() - t0}
    stats = model.sample_stats()
    if stats is not None:
        row.update(sampler=stats.sampler, sample_nfe=stats.nfe)
    save_grid(x, model.spec, path, reference=data)
    return row


def save_trajectory(frames: list[Tensor], spec: DataSpec, path: str | Path, columns: int = 8, rows: int = 4,
                    seconds: float = 4.0) -> tuple[Path, Path]:
    """A sampler's states (each (n, C, H, W) levels) as an animated GIF of the grid at every state,
    lasting about `seconds` and holding the last frame, and beside it (same name, .png) a strip:
    the first `rows` images, each at `columns` evenly spaced states from the first to the last."""
    import io

    path = Path(path)
    scale = max(1, 96 // max(spec.height, spec.width))
    grids = [Image.fromarray(_squeeze(grid_array(f[:, :1] if spec.channels not in (1, 3) else f, spec.levels,
                                                 scale=scale))) for f in frames]
    buf = io.BytesIO()
    duration = max(20, int(1000 * seconds / len(grids)))
    grids[0].save(buf, format="GIF", save_all=True, append_images=grids[1:], loop=0,
                  duration=[duration] * (len(grids) - 1) + [1500])
    atomic_write_bytes(path, buf.getvalue())
    picks = sorted({round(k * (len(frames) - 1) / max(1, columns - 1)) for k in range(columns)})
    shown = min(rows, len(frames[0]))
    strip = torch.stack([frames[k][:shown] for k in picks], 1).flatten(0, 1)  # image-major: a row per image
    return path, save_grid(strip, spec, path.with_suffix(".png"), nrow=len(picks))


def _squeeze(array: np.ndarray) -> np.ndarray:
    return array[:, :, 0] if array.shape[2] == 1 else array
