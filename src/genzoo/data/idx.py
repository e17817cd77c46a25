"""MNIST and Fashion-MNIST from the standard IDX files, raw or gzip-compressed.

IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a big-endian header of two zero
bytes, a dtype byte (0x08 = unsigned byte, the only one these datasets use), the number of
dimensions d, then d uint32 sizes, then prod(sizes) bytes in C order. Images have magic number
0x00000803 (N, H, W), labels 0x00000801 (N,).

Files are looked up in `root` (and in the torchvision layout `root/MNIST/raw` or
`root/FashionMNIST/raw`), each as `NAME` or `NAME.gz`; a gzip stream is recognised by its
content, so either name works. Splits: "train" is the first 90% of the training file, "val"
its last 10% (`holdout_split`), "test" the t10k files. Levels are the 256 grey values; option
`levels=L` requantizes them to floor(v * L / 256).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ..errors import GenzooError
from . import limits
from .limits import gunzip, is_gzip, read_raw
from .spec import Dataset, DataSpec, check_split, holdout_split

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def declared_bytes(head: bytes, path: Path, ndim: int | None) -> int:
    """The size a well-formed IDX header declares (header and data), refused beyond the file cap;
    the cap itself for a header that is not well formed (read_idx then says what is wrong)."""
    d = head[3] if len(head) >= 4 else 0
    if head[:3] != b"\x00\x00\x08" or d < 1 or (ndim is not None and d != ndim) or len(head) < 4 + 4 * d:
        return limits.MAX_FILE_BYTES
    size = 4 + 4 * d + math.prod(int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(d))
    if size > limits.MAX_FILE_BYTES:
        raise GenzooError(f"{path} declares {size:,} bytes in its header, more than genzoo reads from one file "
                          f"({limits.MAX_FILE_BYTES:,}).")
    return size


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read an unsigned-byte IDX file (raw or gzip) into a uint8 array of the header's shape.

    Checks the magic number (0x0000 08 d; with `ndim`, d must equal it) and that the file holds
    exactly the prod(sizes) bytes its header promises.
    """
    path = Path(path)
    data = read_raw(path)
    if is_gzip(path, data):  # decompress one byte beyond what the header declares: a gzip bomb stops there
        size = declared_bytes(gunzip(data, path, 4 + 4 * 255, at_limit="stop", truncated_ok=True), path, ndim)
        data = gunzip(data, path, min(size + 1, limits.MAX_FILE_BYTES), at_limit="stop")
    if len(data) < 4:
        raise GenzooError(f"{path} is not an IDX file: it holds only {len(data)} bytes, fewer than a header.")
    magic = int.from_bytes(data[:4], "big")
    d = data[3]
    if data[:3] != b"\x00\x00\x08" or d < 1 or (ndim is not None and d != ndim):
        expected = f"0x{0x800 | ndim:08x}" if ndim is not None else "0x000008NN"
        raise GenzooError(f"{path} is not an unsigned-byte IDX file of the expected kind: "
                          f"its magic number is 0x{magic:08x}, expected {expected}.")
    header = 4 + 4 * d
    if len(data) < header:
        raise GenzooError(f"{path} is truncated: its header promises {d} dimension sizes "
                          f"but the file ends after {len(data)} bytes.")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(d))
    need = math.prod(shape)
    have = len(data) - header
    if have != need:
        what = "is truncated" if have < need else "is corrupt"
        raise GenzooError(f"{path} {what}: its header promises shape {shape} ({need} bytes of data) but it holds {have}.")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(root: Path, dirs: list[Path], name: str, dataset: str) -> Path:
    for d in dirs:
        for candidate in (d / name, d / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise GenzooError(f"missing file {root / name}[.gz]: the {dataset} loader needs the standard IDX files in that directory.")


def check_root(root: str | Path | None, dataset: str, what: str) -> Path:
    """The data directory `root` as a Path; a GenzooError if it is not given or not a directory."""
    if root is None:
        raise GenzooError(f"dataset {dataset!r} is not shipped with genzoo: "
                          f"give root=DIR (--root DIR), the directory holding {what}.")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise GenzooError(f"data directory {path} for dataset {dataset!r} does not exist or is not a directory.")
    return path


def requantize(x: np.ndarray, levels: int | None, source_levels: int = 256) -> tuple[np.ndarray, int]:
    """Levels v in [0, source_levels) to floor(v * levels / source_levels); None keeps them."""
    if levels is None or levels == source_levels:
        return x, source_levels
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or not 2 <= levels <= source_levels:
        raise GenzooError(f"levels must be an integer from 2 to {source_levels}, got {levels!r}.")
    return (x.astype(np.int64) * int(levels)) // source_levels, int(levels)


def _load(dataset: str, subdir: str, split: str, root: str | None, levels: int | None) -> Dataset:
    check_split(split)
    base = check_root(root, dataset, "train-images-idx3-ubyte[.gz] and the other IDX files")
    dirs = [base, base / subdir / "raw"]
    image_name, label_name = _FILES["test" if split == "test" else "train"]
    image_path = _find(base, dirs, image_name, dataset)
    label_path = _find(base, dirs, label_name, dataset)
    images = read_idx(image_path, ndim=3)
    labels = read_idx(label_path, ndim=1)
    if len(images) != len(labels):
        raise GenzooError(f"{label_path} holds {len(labels)} labels but {image_path} holds {len(images)} images.")
    if labels.size and labels.max() > 9:
        raise GenzooError(f"{label_path} is corrupt: it holds label {labels.max()}, but {dataset} labels are 0 to 9.")
    rows = slice(None) if split == "test" else holdout_split(len(images), split)
    x, k = requantize(images[rows], levels)
    _, h, w = images.shape
    x = torch.from_numpy(x.astype(np.int64)).unsqueeze(1)  # (N, 1, H, W)
    y = torch.from_numpy(labels[rows].astype(np.int64))
    rule = "the t10k files" if split == "test" else "train: first 90% of the training file; val: its last 10%"
    info = {"split_rule": rule, "files": [str(image_path), str(label_path)],
            "rows": [rows.start or 0, rows.stop if rows.stop is not None else len(images)],
            "levels": k}
    return Dataset(x, DataSpec(1, h, w, k), y, name=dataset, split=split, info=info)


def load_mnist(split: str = "train", root: str | None = None, levels: int | None = None) -> Dataset:
    """MNIST (1, 28, 28, 256 levels) from the IDX files in `root`; `levels` requantizes."""
    return _load("mnist", "MNIST", split, root, levels)


def load_fashion_mnist(split: str = "train", root: str | None = None, levels: int | None = None) -> Dataset:
    """Fashion-MNIST (1, 28, 28, 256 levels) from the IDX files in `root`; `levels` requantizes."""
    return _load("fashion-mnist", "FashionMNIST", split, root, levels)
