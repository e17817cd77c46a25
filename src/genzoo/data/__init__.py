"""Datasets as tensors of integer levels (N, C, H, W) with a DataSpec.

    train = genzoo.data.load("digits", split="train")
    genzoo.data.names()
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from ..errors import GenzooError
from .spec import SPLITS, Dataset, DataSpec, check_split, holdout_split
from .transforms import dequantize, from_unit, to_centered, to_unit

# name -> "module:function"; each function takes (split, root, **options) and returns a Dataset.
_LOADERS: dict[str, str] = {
    "digits": "genzoo.data.digits:load_digits",
    "mnist": "genzoo.data.idx:load_mnist",
    "fashion-mnist": "genzoo.data.idx:load_fashion_mnist",
    "cifar10": "genzoo.data.cifar:load_cifar10",
    "folder": "genzoo.data.folder:load_folder",
    "moons": "genzoo.data.toy:load_moons",
    "8gaussians": "genzoo.data.toy:load_8gaussians",
    "checkerboard": "genzoo.data.toy:load_checkerboard",
    "spirals": "genzoo.data.toy:load_spirals",
    "rings": "genzoo.data.toy:load_rings",
}


def _available() -> dict[str, Any]:
    found = {}
    for name, target in _LOADERS.items():
        module, func = target.split(":")
        try:
            found[name] = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError):
            continue
    return found


def names() -> list[str]:
    """The built-in dataset names."""
    return list(_available())


def load(name: str, split: str = "train", root: str | None = None, **options: Any) -> Dataset:
    """Load split "train", "val" or "test" of dataset `name`; `root` is its directory if not shipped."""
    loaders = _available()
    if name not in loaders:
        raise GenzooError(f"unknown dataset {name!r}; choose one of {', '.join(loaders)}.")
    check_split(split)
    loader = loaders[name]
    params = inspect.signature(loader).parameters
    for key in options:
        if key not in params:
            allowed = [p for p in params if p not in ("split", "root")]
            raise GenzooError(f"dataset {name!r} has no option {key!r}; its options are: {', '.join(allowed) or 'none'}.")
    return loader(split=split, root=root, **options)


__all__ = ["DataSpec", "Dataset", "SPLITS", "load", "names", "check_split", "holdout_split",
           "dequantize", "to_unit", "to_centered", "from_unit"]
