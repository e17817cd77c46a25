"""DataSpec and Dataset: every dataset is a tensor of integer levels.

Convention (the contract of docs/models.md): `x` has shape (N, C, H, W), dtype int64, values in
{0, ..., K-1} with K = `spec.levels`. Models do their own preprocessing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import GenzooError

MAX_CHANNELS, MAX_SIDE, MAX_LEVELS = 64, 4096, 65536


@dataclass(frozen=True)
class DataSpec:
    """Shape and number of levels of a discrete image: (channels, height, width), K levels, each
    within the caps below (what a model can be built for without exhausting memory)."""

    channels: int
    height: int
    width: int
    levels: int

    def __post_init__(self) -> None:
        for name, lo, hi in (("channels", 1, MAX_CHANNELS), ("height", 1, MAX_SIDE), ("width", 1, MAX_SIDE),
                             ("levels", 2, MAX_LEVELS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise GenzooError(f"DataSpec.{name} must be an integer from {lo} to {hi:,}, got {value!r}.")

    @property
    def dims(self) -> int:
        """Number of sub-pixels, C*H*W."""
        return self.channels * self.height * self.width

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def to_dict(self) -> dict[str, int]:
        return {"channels": self.channels, "height": self.height, "width": self.width, "levels": self.levels}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataSpec":
        if not isinstance(d, dict) or set(d) != {"channels", "height", "width", "levels"}:
            raise GenzooError(f"a data spec needs exactly channels, height, width and levels, got {d!r}.")
        return cls(d["channels"], d["height"], d["width"], d["levels"])

    @torch.compiler.disable  # data-dependent checks: run eagerly, outside a compiled graph
    def check(self, x: Any, what: str = "x") -> Tensor:
        """`x` as int64 levels (B, C, H, W) of this spec, B >= 1, or one GenzooError sentence.

        Integer tensors of any width (uint8, int32, ...) and numpy arrays are converted to int64.
        """
        if type(x).__module__ == "numpy" and hasattr(x, "dtype"):
            try:
                x = torch.from_numpy(x)
            except TypeError as e:
                raise GenzooError(f"{what} has a numpy dtype torch cannot read: {x.dtype}.") from e
        if not isinstance(x, Tensor):
            raise GenzooError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}.")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.shape:
            raise GenzooError(f"{what} must have shape (B, {self.channels}, {self.height}, {self.width}), got {tuple(x.shape)}.")
        if x.shape[0] == 0:
            raise GenzooError(f"{what} is an empty batch; give at least one image.")
        if x.dtype.is_floating_point or x.dtype == torch.bool or x.dtype.is_complex:
            raise GenzooError(f"{what} must hold integer levels (int64), got dtype {x.dtype}.")
        if int(x.min()) < 0 or int(x.max()) > self.levels - 1:
            raise GenzooError(f"{what} must hold levels in [0, {self.levels - 1}], "
                              f"got values in [{int(x.min())}, {int(x.max())}].")
        return x.long()


@dataclass
class Dataset:
    """A split of a dataset: levels `x` (N, C, H, W) int64, its `spec`, optional `labels` (N,)."""

    x: Tensor
    spec: DataSpec
    labels: Tensor | None = None
    name: str = ""
    split: str = "train"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.x = self.x.long()
        self.spec.check(self.x, f"dataset {self.name!r}")
        if self.labels is not None and len(self.labels) != len(self.x):
            raise GenzooError(f"dataset {self.name!r} has {len(self.x)} images but {len(self.labels)} labels.")

    def __len__(self) -> int:
        return len(self.x)

    @property
    def num_classes(self) -> int:
        return 0 if self.labels is None else int(self.labels.max()) + 1


SPLITS = ("train", "val", "test")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise GenzooError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}.")


def holdout_split(n: int, split: str, val_fraction: float = 0.1) -> slice:
    """Train/val rows of a training file: val is its last `val_fraction`, train the rest."""
    n_val = int(round(n * val_fraction))
    return slice(0, n - n_val) if split == "train" else slice(n - n_val, n)
