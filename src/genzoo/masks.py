"""Masks for `genzoo inpaint`: which sub-pixels of an image are given (True) and which the model fills.

A mask names the region to fill: `top`, `bottom`, `left`, `right` (that half of the image), `center`
(the middle square, half the side), `random:FRACTION` (each pixel, all its channels, with that
probability), or a PNG of the image's size whose non-zero pixels mark the region to fill.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .data.spec import DataSpec
from .errors import GenzooError

NAMES = ("top", "bottom", "left", "right", "center", "random:FRACTION", "a PNG file")


def known_mask(text: str, spec: DataSpec, n: int, generator: torch.Generator | None = None) -> Tensor:
    """The boolean mask (n, C, H, W) of the given sub-pixels, False in the region `text` names."""
    C, H, W = spec.shape
    fill = torch.zeros(n, 1, H, W, dtype=torch.bool)
    rows, cols = torch.arange(H).view(H, 1), torch.arange(W).view(1, W)
    regions = {"top": rows < H // 2, "bottom": rows >= H // 2, "left": cols < W // 2, "right": cols >= W // 2,
               "center": (abs(2 * rows - (H - 1)) < H / 2) & (abs(2 * cols - (W - 1)) < W / 2)}
    if text in regions:
        fill[:] = regions[text].expand(H, W)
    elif text.startswith("random:"):
        try:
            fraction = float(text.split(":", 1)[1])
        except ValueError:
            fraction = -1.0
        if not 0 < fraction < 1:
            raise GenzooError(f"--mask random:FRACTION needs a fraction between 0 and 1, got {text!r}.")
        fill = torch.rand(n, 1, H, W, generator=generator) < fraction
    elif text.lower().endswith(".png"):
        fill[:] = torch.from_numpy(_png_region(Path(text), H, W))
    else:
        raise GenzooError(f"unknown mask {text!r}; choose one of {', '.join(NAMES)}.")
    return ~fill.expand(n, C, H, W).clone()


def _png_region(path: Path, height: int, width: int) -> np.ndarray:
    if not path.is_file():
        raise GenzooError(f"the mask file {str(path)!r} does not exist.")
    try:
        with Image.open(path, formats=("PNG",)) as img:
            if img.size != (width, height):
                raise GenzooError(f"the mask {str(path)!r} is {img.size[0]}x{img.size[1]} pixels; the model's images "
                                  f"are {width}x{height}.")
            region = np.asarray(img.convert("L")) > 0
    except (OSError, ValueError) as e:  # not a PNG, or a broken one
        raise GenzooError(f"the mask {str(path)!r} is not a readable PNG image ({type(e).__name__}).") from None
    return region
