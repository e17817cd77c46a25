"""2-D toy densities, each point quantized on a 256 x 256 grid and stored as a (2, 1, 1) image.

Grid: the box BOX = [-4, 4] x [-4, 4] is cut into 256 bins per axis of width 8/256; a point
(x, y) becomes the levels (floor((x + 4) * 256 / 8), floor((y + 4) * 256 / 8)), clipped to
[0, 255] (points outside the box land in the edge bins), stored as x[:, 0] and x[:, 1] of a
(N, 2, 1, 1) int64 tensor with spec DataSpec(2, 1, 1, 256). `grid_to_points` maps levels back
to bin centres, `points_to_grid` maps points to levels.

Samples: numpy.random.default_rng(seed) with seed 0 for train, 1 for val, 2 for test;
default sizes 20,000 / 2,000 / 2,000 (option `n`). The densities follow the toy data of FFJORD
(Grathwohl et al. 2019): moons, 8gaussians, checkerboard, spirals ("2spirals"), rings.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

from ..errors import GenzooError
from .spec import Dataset, DataSpec, check_split

BOX = (-4.0, 4.0)
GRID = 256
SPEC = DataSpec(channels=2, height=1, width=1, levels=GRID)
SEEDS = {"train": 0, "val": 1, "test": 2}
SIZES = {"train": 20000, "val": 2000, "test": 2000}
_WIDTH = (BOX[1] - BOX[0]) / GRID


def points_to_grid(points: np.ndarray | Tensor) -> np.ndarray:
    """Points (N, 2) in BOX to int64 levels (N, 2): floor((p - lo) / width), clipped to [0, 255]."""
    p = np.asarray(points.detach().cpu() if isinstance(points, Tensor) else points, dtype=np.float64)
    return np.clip(np.floor((p - BOX[0]) / _WIDTH), 0, GRID - 1).astype(np.int64)


def grid_to_points(levels_xy: np.ndarray | Tensor) -> np.ndarray:
    """Levels (N, 2) or (N, 2, 1, 1) to the float64 bin centres (N, 2): lo + (k + 0.5) * width."""
    k = np.asarray(levels_xy.detach().cpu() if isinstance(levels_xy, Tensor) else levels_xy)
    return BOX[0] + (k.reshape(len(k), 2).astype(np.float64) + 0.5) * _WIDTH


def sample_moons(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two interleaved half circles with noise 0.1, scaled by 2 and shifted by (-1, -0.2)."""
    top = rng.random(n) < 0.5
    theta = rng.random(n) * np.pi
    xy = np.where(top[:, None], np.stack([np.cos(theta), np.sin(theta)], 1),
                  np.stack([1 - np.cos(theta), 0.5 - np.sin(theta)], 1))
    xy = xy + 0.1 * rng.standard_normal((n, 2))
    return 2 * xy + np.array([-1.0, -0.2])


def sample_8gaussians(rng: np.random.Generator, n: int) -> np.ndarray:
    """Eight Gaussians, std 0.5/sqrt(2), centred on a circle of radius 4/sqrt(2)."""
    angle = rng.integers(0, 8, n) * (np.pi / 4)
    centres = 4 * np.stack([np.cos(angle), np.sin(angle)], 1)
    return (centres + 0.5 * rng.standard_normal((n, 2))) / np.sqrt(2)


def sample_checkerboard(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniform on the black squares of a 4 x 4 checkerboard covering [-4, 4)^2."""
    x1 = rng.random(n) * 4 - 2
    x2 = rng.random(n) - rng.integers(0, 2, n) * 2 + np.floor(x1) % 2
    return 2 * np.stack([x1, x2], 1)


def sample_spirals(rng: np.random.Generator, n: int) -> np.ndarray:
    """Two interleaved spirals of 1.5 turns (radius up to about pi), uniform jitter 0.5/3, noise 0.1."""
    t = np.sqrt(rng.random(n)) * 3 * np.pi
    arm = np.where(rng.random(n) < 0.5, 1.0, -1.0)[:, None]
    xy = np.stack([-np.cos(t) * t, np.sin(t) * t], 1) + 0.5 * rng.random((n, 2))
    return arm * xy / 3 + 0.1 * rng.standard_normal((n, 2))


def sample_rings(rng: np.random.Generator, n: int) -> np.ndarray:
    """Four concentric rings of radii 0.75, 1.5, 2.25, 3 (equally likely), noise 0.08."""
    radius = 0.75 * rng.integers(1, 5, n)
    theta = rng.random(n) * 2 * np.pi
    return radius[:, None] * np.stack([np.cos(theta), np.sin(theta)], 1) + 0.08 * rng.standard_normal((n, 2))


DENSITIES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "moons": sample_moons,
    "8gaussians": sample_8gaussians,
    "checkerboard": sample_checkerboard,
    "spirals": sample_spirals,
    "rings": sample_rings,
}


def _load(name: str, split: str, n: int | None) -> Dataset:
    check_split(split)
    n = SIZES[split] if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise GenzooError(f"n must be a positive integer, got {n!r}.")
    points = DENSITIES[name](np.random.default_rng(SEEDS[split]), n)
    x = torch.from_numpy(points_to_grid(points)).view(n, 2, 1, 1)
    info = {"split_rule": f"numpy.random.default_rng({SEEDS[split]}) ({split}), {n} points",
            "box": list(BOX), "grid": GRID, "n": n}
    return Dataset(x, SPEC, None, name=name, split=split, info=info)


def load_moons(split: str = "train", root: str | None = None, n: int | None = None) -> Dataset:
    """Two moons on the 256 x 256 grid over BOX; `root` is ignored."""
    return _load("moons", split, n)


def load_8gaussians(split: str = "train", root: str | None = None, n: int | None = None) -> Dataset:
    """Eight Gaussians on the 256 x 256 grid over BOX; `root` is ignored."""
    return _load("8gaussians", split, n)


def load_checkerboard(split: str = "train", root: str | None = None, n: int | None = None) -> Dataset:
    """Checkerboard on the 256 x 256 grid over BOX; `root` is ignored."""
    return _load("checkerboard", split, n)


def load_spirals(split: str = "train", root: str | None = None, n: int | None = None) -> Dataset:
    """Two spirals on the 256 x 256 grid over BOX; `root` is ignored."""
    return _load("spirals", split, n)


def load_rings(split: str = "train", root: str | None = None, n: int | None = None) -> Dataset:
    """Four rings on the 256 x 256 grid over BOX; `root` is ignored."""
    return _load("rings", split, n)
