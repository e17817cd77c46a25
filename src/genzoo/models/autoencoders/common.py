"""What the autoencoders share: image grids of levels written as PNG, and a checked latent size."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def save_rows(rows: list[Tensor], levels: int, path: str | Path, scale: int = 4, pad: int = 1) -> Path:
    """Write rows of level images, each (N, C, H, W) with C in {1, 3}, as one PNG grid.

    Row r of the grid is rows[r]; levels map linearly to 0..255; `pad` pixels of mid grey between
    cells. Images are enlarged `scale` times with nearest neighbours so 8x8 digits stay legible.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    C, H, W = rows[0].shape[1:]
    ncol = max(len(r) for r in rows)
    cell_h, cell_w = H * scale + pad, W * scale + pad
    canvas = np.full((len(rows) * cell_h + pad, ncol * cell_w + pad, 3), 128, dtype=np.uint8)
    for r, row in enumerate(rows):
        img = (row.detach().cpu().double() * (255.0 / (levels - 1))).round().clamp(0, 255).to(torch.uint8)
        img = img.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        img = img.expand(-1, 3, -1, -1) if C == 1 else img[:, :3]
        for c, one in enumerate(img.permute(0, 2, 3, 1).numpy()):
            y, x = pad + r * cell_h, pad + c * cell_w
            canvas[y:y + H * scale, x:x + W * scale] = one
    Image.fromarray(canvas).save(path)
    return path
