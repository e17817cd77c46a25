"""`genzoo diffuse`: pictures of the forward process q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I).

For images: a grid, one row per image, columns x_0 -> x_T at the chosen (0-based) steps, values
in model space [-1, 1] (level k -> 2k/(K-1) - 1) shown on 256 grey levels, clipped.
For 2-D toy data (2x1x1 "images"): samples of x_t and the exact marginal
q(x_t) = (1/N) sum_i N(x_t; sqrt(abar_t) x0_i, (1 - abar_t) I) -- the data distribution scaled and
convolved with a Gaussian -- at each step, ending beside N(0, I). matplotlib if importable, else Pillow.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import data as gdata
from .data.spec import DataSpec
from .data.transforms import from_centered, to_centered
from .errors import GenzooError
from .functional import standard_normal_log_prob
from .models.diffusion.schedules import alpha_bar_of, make_betas, q_sample
from .registry import check_seed

BOX = 3.5  # half-width of the 2-D panels in model space


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `genzoo diffuse`."""
    parser.add_argument("--data", default="digits", help="dataset name (default digits)")
    parser.add_argument("--root", default=None, help="directory of the dataset's files")
    parser.add_argument("--split", default="train", help="split to draw x_0 from (default train)")
    parser.add_argument("--out", default="diffusion", help="output directory (default ./diffusion)")
    parser.add_argument("--steps", default=None,
                        help="comma-separated 0-based steps t to show (default: 8 steps from 0 to T-1)")
    parser.add_argument("--n", type=int, default=8, help="images (rows) in the image grid (default 8)")
    parser.add_argument("--points", type=int, default=2000, help="points drawn for 2-D data (default 2000)")
    parser.add_argument("--schedule", default="linear", help="linear or cosine (default linear)")
    parser.add_argument("--timesteps", type=int, default=1000, help="T (default 1000)")
    parser.add_argument("--beta-start", type=float, default=1e-4, help="first beta of the linear schedule")
    parser.add_argument("--beta-end", type=float, default=0.02, help="last beta of the linear schedule")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def parse_steps(text: str | None, timesteps: int) -> list[int]:
    """'0,100,999' -> [0, 100, 999]; None -> 8 steps spread from 0 to T-1 (denser early, where images change)."""
    if text is None:
        fractions = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
        return sorted({round(f * (timesteps - 1)) for f in fractions})
    try:
        steps = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise GenzooError(f"--steps must be comma-separated integers, got {text!r}.") from None
    if not steps or any(not 0 <= s < timesteps for s in steps):
        raise GenzooError(f"--steps must be 0-based steps in [0, {timesteps - 1}], got {text!r}.")
    return sorted(set(steps))


def forward_images(x0: Tensor, alpha_bar: Tensor, steps: list[int], generator: torch.Generator) -> Tensor:
    """(n, C, H, W) x_0 in model space -> (n, len(steps), C, H, W) x_t, one eps per image shared by all t."""
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    cols = [q_sample(alpha_bar, x0, torch.full((x0.shape[0],), t), eps) for t in steps]
    return torch.stack(cols, dim=1)


def marginal_density(points: Tensor, abar: float, grid: Tensor) -> Tensor:
    """q(x_t) on grid points (G, 2): the mean over data points of N(x; sqrt(abar) x0_i, (1 - abar) I)."""
    var = 1.0 - abar
    d2 = torch.cdist(grid, math.sqrt(abar) * points).pow(2)  # (G, N)
    log_k = -0.5 * d2 / var - math.log(2 * math.pi * var)
    return torch.logsumexp(log_k, dim=1).sub(math.log(points.shape[0])).exp()


def _write_image_grid(xt: Tensor, steps: list[int], path: Path) -> Path:
    """One row per image, one column per step, each column headed by its t."""
    from .viz import save_grid

    n, cols, C, H, W = xt.shape
    shown = from_centered(xt, 256).view(n * cols, C, H, W)
    return save_grid(shown, DataSpec(C, H, W, 256), path, nrow=cols, col_labels=tuple(f"t = {t}" for t in steps))


def _toy_panels(points: Tensor, alpha_bar: Tensor, steps: list[int], generator: torch.Generator,
                res: int = 128) -> list[tuple[str, Tensor, Tensor]]:
    """(title, samples (N, 2), density (res, res) with row 0 at the top) per step, then N(0, I)."""
    lin = torch.linspace(-BOX, BOX, res, dtype=torch.float64)
    gy, gx = torch.meshgrid(lin.flip(0), lin, indexing="ij")
    grid = torch.stack([gx.flatten(), gy.flatten()], dim=1)
    panels = []
    eps = torch.randn(points.shape, generator=generator, dtype=points.dtype)
    for t in tqdm(steps, desc="q(x_t)", leave=False, disable=None):
        abar = float(alpha_bar[t])
        xt = math.sqrt(abar) * points + math.sqrt(1 - abar) * eps
        panels.append((f"t = {t}", xt, marginal_density(points, abar, grid).view(res, res)))
    normal = torch.randn(points.shape, generator=generator, dtype=points.dtype)
    dens = standard_normal_log_prob(grid).exp()
    panels.append(("N(0, I)", normal, dens.view(res, res)))
    return panels


def _write_toy_matplotlib(panels: list[tuple[str, Tensor, Tensor]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(panels)
    fig, axes = plt.subplots(2, k, figsize=(2.2 * k, 4.6), squeeze=False)
    for j, (name, pts, dens) in enumerate(panels):
        a, b = axes[0, j], axes[1, j]
        a.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=3, alpha=0.6, color="black")
        b.imshow(dens.numpy(), extent=(-BOX, BOX, -BOX, BOX), cmap="viridis")
        a.set_title(name, fontsize=9)
        for ax in (a, b):
            ax.set_xlim(-BOX, BOX)
            ax.set_ylim(-BOX, BOX)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
    axes[0, 0].set_ylabel("samples of x_t", fontsize=9)
    axes[1, 0].set_ylabel("q(x_t)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def _write_toy_pillow(panels: list[tuple[str, Tensor, Tensor]], path: Path) -> Path:
    from PIL import Image, ImageDraw

    from .checkpoint import atomic_write_bytes
    from .viz import _png_bytes

    size, pad = 160, 4
    k = len(panels)
    img = Image.new("L", (k * (size + pad) + pad, 2 * (size + pad) + pad + 14), 255)
    draw = ImageDraw.Draw(img)
    for j, (name, pts, dens) in enumerate(panels):
        x0 = pad + j * (size + pad)
        draw.text((x0 + 2, 1), name, fill=0)
        u = ((pts + BOX) / (2 * BOX) * (size - 1)).numpy()
        for a, b in u:
            if 0 <= a < size and 0 <= b < size:
                draw.point((x0 + float(a), 14 + pad + size - 1 - float(b)), fill=0)
        heat = (255 * (1 - dens / dens.max().clamp_min(1e-30))).round().clamp(0, 255).to(torch.uint8).numpy()
        img.paste(Image.fromarray(heat).resize((size, size)), (x0, 14 + 2 * pad + size))
    atomic_write_bytes(path, _png_bytes(img))
    return path


def run(args: Any) -> int:
    """Write the forward-process figure(s) for `--data` into `--out`; print their paths."""
    if args.timesteps < 2:
        raise GenzooError(f"--timesteps must be at least 2, got {args.timesteps}.")
    if args.n < 1 or args.points < 1:
        raise GenzooError("--n and --points must be positive.")
    check_seed(args.seed)
    try:
        betas = make_betas(args.schedule, args.timesteps, args.beta_start, args.beta_end)
    except ValueError as e:
        raise GenzooError(f"--schedule: {e}.") from None
    if not 0 < args.beta_start <= args.beta_end < 1:
        raise GenzooError("need 0 < --beta-start <= --beta-end < 1.")
    alpha_bar = alpha_bar_of(betas)
    steps = parse_steps(args.steps, args.timesteps)
    dataset = gdata.load(args.data, split=args.split, root=args.root)
    spec = dataset.spec
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)
    written = []
    if spec.channels == 2 and spec.height == 1 and spec.width == 1:
        idx = torch.randperm(len(dataset), generator=g)[: args.points]
        points = to_centered(dataset.x[idx], spec.levels, dtype=torch.float64).view(-1, 2)
        panels = _toy_panels(points, alpha_bar, steps, g)
        path = out / "forward_marginals.png"
        try:
            title = f"{args.data}: q(x_t) is the data scaled by sqrt(abar_t), convolved with N(0, (1 - abar_t) I)"
            written.append(_write_toy_matplotlib(panels, path, title))
        except ImportError:
            written.append(_write_toy_pillow(panels, path))
    else:
        idx = torch.randperm(len(dataset), generator=g)[: args.n]
        x0 = to_centered(dataset.x[idx], spec.levels, dtype=torch.float64)
        xt = forward_images(x0, alpha_bar, steps, g)
        written.append(_write_image_grid(xt, steps, out / "forward_process.png"))
    print(f"steps (0-based): {', '.join(map(str, steps))}; abar_t: "
          + ", ".join(f"{float(alpha_bar[t]):.3g}" for t in steps))
    for p in written:
        print(p)
    return 0
