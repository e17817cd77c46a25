"""The 8x8 handwritten digits (17 grey levels), shipped inside the package.

UCI "Optical Recognition of Handwritten Digits", CC BY 4.0 (see DIGITS_LICENSE.md).
Rows are in scikit-learn's order; `numpy.random.default_rng(0).permutation(1797)` splits them:
its first 300 indices are test, the next 200 val, the remaining 1,297 train.
"""
from __future__ import annotations

import gzip
from importlib import resources

import numpy as np
import torch

from ..errors import GenzooError
from .spec import Dataset, DataSpec, check_split

NUM_IMAGES = 1797
SPEC = DataSpec(channels=1, height=8, width=8, levels=17)
_SPLIT_SIZES = {"test": (0, 300), "val": (300, 500), "train": (500, NUM_IMAGES)}


def _read_rows() -> np.ndarray:
    raw = resources.files("genzoo.data").joinpath("digits.csv.gz").read_bytes()
    rows = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",", dtype=np.int64)
    if rows.shape != (NUM_IMAGES, 65):
        raise GenzooError(f"the packaged digits.csv.gz has shape {rows.shape}, expected ({NUM_IMAGES}, 65); "
                          "the installation is damaged.")
    return rows


def load_digits(split: str = "train", root: str | None = None) -> Dataset:
    """Load a split of the packaged digits; `root` is ignored (nothing is read from disk)."""
    check_split(split)
    rows = _read_rows()
    lo, hi = _SPLIT_SIZES[split]
    idx = np.random.default_rng(0).permutation(NUM_IMAGES)[lo:hi]
    x = torch.from_numpy(rows[idx, :64].reshape(-1, 1, 8, 8).copy())
    labels = torch.from_numpy(rows[idx, 64].copy())
    info = {"split_rule": "numpy.random.default_rng(0).permutation(1797): test [0,300), val [300,500), train [500,1797)"}
    return Dataset(x, SPEC, labels, name="digits", split=split, info=info)
