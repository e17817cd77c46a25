"""Any directory of PNG/JPEG images, resized, centre-cropped and quantized.

Files: every `*.png`, `*.jpg`, `*.jpeg` (any case) under `root`, recursively, in sorted order of
their path relative to `root`; hidden files and directories (names starting with ".") and
files with other extensions are skipped. Each image is converted to RGB (or L with
`grayscale=True`; an alpha channel is dropped), resized with bicubic filtering so that its
shorter side is `size`, centre-cropped to size x size, and quantized: level = floor(v * levels / 256).

Split: an image's split is fixed by its relative path alone, so it never changes when other
images are added or removed: u = the first 8 bytes of sha256(relative path, posix, UTF-8) as a
fraction of 2^64; u < 0.1 is test, u < 0.2 is val, the rest train (`split_of`).

Labels: if every image lies inside a subdirectory of `root` (root/CLASS/.../image.png), the label
is the index of its top-level subdirectory among their sorted names; otherwise None.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import GenzooError
from .idx import check_root
from .limits import MAX_IMAGE_PIXELS
from .spec import Dataset, DataSpec, check_split

EXTENSIONS = (".png", ".jpg", ".jpeg")
TEST_FRACTION = 0.1
VAL_FRACTION = 0.1


def split_of(relative_path: str) -> str:
    """The split of an image, from its path relative to the folder root (posix form)."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if u < TEST_FRACTION else "val" if u < TEST_FRACTION + VAL_FRACTION else "train"


def list_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, sorted by relative path; hidden ones, and links that
    lead outside `root`, skipped."""
    found, base = [], root.resolve()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.suffix.lower() in EXTENSIONS and not any(p.startswith(".") for p in rel.parts) and path.is_file():
            if path.resolve().is_relative_to(base):  # a link that leads out of the root is not followed
                found.append(rel)
    return sorted(found, key=lambda p: p.as_posix())


def read_image(path: Path, size: int, grayscale: bool) -> np.ndarray:
    """One image as (C, size, size) uint8: shorter side resized to `size`, centre-cropped."""
    try:
        with warnings.catch_warnings():  # the pixel cap below decides, with its own sentence
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img_file = Image.open(path, formats=("PNG", "JPEG"))
        with img_file as img:
            expected = "PNG" if path.suffix.lower() == ".png" else "JPEG"
            if img.format != expected:
                raise GenzooError(f"{path} holds a {img.format} image under a {path.suffix} name; genzoo reads "
                                  f"only PNG and JPEG files by their right names.")
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise GenzooError(f"{path} claims {w} x {h} pixels, more than genzoo decodes in one image "
                                  f"({MAX_IMAGE_PIXELS:,}).")
            img = img.convert("L" if grayscale else "RGB")
    except MemoryError as e:
        raise GenzooError(f"{path} does not fit in memory once decoded.") from e
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError, EOFError) as e:
        raise GenzooError(f"{path} is not a readable PNG or JPEG image: it is corrupt, truncated or of another format.") from e
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    a = np.asarray(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (C, size, size)


def load_folder(split: str = "train", root: str | None = None, size: int = 32,
                grayscale: bool = False, levels: int = 256) -> Dataset:
    """A split of the PNG/JPEG images under `root` as (C, size, size) images with `levels` levels."""
    check_split(split)
    base = check_root(root, "folder", "PNG or JPEG images")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise GenzooError(f"size must be a positive integer, got {size!r}.")
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 2 <= levels <= 256:
        raise GenzooError(f"levels must be an integer from 2 to 256, got {levels!r}.")
    size, levels = int(size), int(levels)
    images = list_images(base)
    if not images:
        raise GenzooError(f"folder {base} holds no PNG or JPEG images ({', '.join(EXTENSIONS)}).")
    classes = sorted({p.parts[0] for p in images}) if all(len(p.parts) > 1 for p in images) else None
    chosen = [p for p in images if split_of(p.as_posix()) == split]
    if not chosen:
        raise GenzooError(f"folder {base} has {len(images)} images but none in the {split} split "
                          "(about 10% of images go to test and 10% to val); add more images.")
    x = np.stack([read_image(base / p, size, grayscale) for p in chosen]).astype(np.int64)
    x = (x * levels) // 256
    index = {} if classes is None else {c: i for i, c in enumerate(classes)}
    labels = None if classes is None else torch.tensor([index[p.parts[0]] for p in chosen], dtype=torch.int64)
    info = {"split_rule": "sha256 of the relative path: first 8 bytes / 2^64 < 0.1 test, < 0.2 val, else train",
            "root": str(base), "files": [p.as_posix() for p in chosen], "classes": classes,
            "size": size, "grayscale": grayscale, "levels": levels}
    spec = DataSpec(1 if grayscale else 3, size, size, levels)
    return Dataset(torch.from_numpy(x), spec, labels, name="folder", split=split, info=info)
