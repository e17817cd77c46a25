"""The contract every genzoo model keeps (DESIGN.md section 2).

A model is a `torch.nn.Module` built as `Model(spec, config)` from a `DataSpec` and a frozen
config dataclass. It takes discrete levels x (B, C, H, W) int64 in [0, K-1] and does its own
preprocessing. Likelihoods are in nats, of the *discrete* image, and carry their kind.

Methods:
    loss(x)                      scalar training objective, nats per dimension
    log_likelihood(x, ...)       LogLikelihood(nats (B,), kind "exact" | "lower_bound") -- optional
    sample(n, generator, ...)    (n, C, H, W) int64 levels

Optional hooks used generically by the trainer, `genzoo eval` and `genzoo sample`
(no model names anywhere outside the model files):
    train_defaults: ClassVar[dict]   TrainConfig fields this model trains best with
    stages: tuple[str, ...]          training stages, run in order (default: one stage "main")
    begin_stage(name, train_data)    called once before a stage starts (and again on resume)
    stage_parameters(name)           the parameters a stage optimizes (default: all)
    task_metrics(data, generator)    dict of extra metrics (PSNR, codebook usage, ...)
    visualize(out_dir, data, generator, **options) -> list[Path]: extra figures for `genzoo sample`
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Iterator, Literal, NamedTuple

import torch
from torch import Tensor, nn

from ..data.spec import DataSpec
from ..errors import GenzooError

Kind = Literal["exact", "lower_bound"]


@dataclasses.dataclass(frozen=True)
class ImageRows:
    """A figure: equally long rows of images of levels, each (n, C, H, W), drawn one under another
    (for example inputs above their reconstructions)."""

    rows: tuple[Tensor, ...]


@dataclasses.dataclass(frozen=True)
class DensityMap:
    """A 2-D toy figure: sample points beside a heat map of the learned density over a square box.

    points (n, 2) in box coordinates; log_density (R, R) on a grid of bin centres, rows along y
    (row 0 at the bottom), columns along x; box (lo, hi) is the square [lo, hi]^2.
    """

    points: Tensor
    log_density: Tensor
    box: tuple[float, float]
    title: str = ""


Figure = ImageRows | DensityMap


class LogLikelihood(NamedTuple):
    """log P(x) of discrete images in nats, shape (B,), and whether it is exact or a lower bound."""

    nats: Tensor
    kind: Kind


class GenerativeModel(nn.Module):
    """Base class: holds `spec` and the frozen `config`; subclasses define the objective."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]
    train_defaults: ClassVar[dict[str, Any]] = {}
    stages: ClassVar[tuple[str, ...]] = ("main",)

    def __init__(self, spec: DataSpec, config: Any) -> None:
        super().__init__()
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
        self.spec = spec
        self.config = config

    # -- contract -----------------------------------------------------------------------------
    def loss(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None, **options: Any) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    # -- optional hooks with defaults ---------------------------------------------------------
    def begin_stage(self, name: str, train_data: Any) -> None:
        """Prepare stage `name` (e.g. extract codes for a prior). Default: nothing."""

    def stage_parameters(self, name: str) -> Iterator[nn.Parameter]:
        """Parameters optimized in stage `name`. Default: all."""
        return self.parameters()

    # -- helpers ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def check_input(self, x: Tensor, what: str = "x") -> None:
        """One clear sentence unless x is (B, C, H, W) integer levels of this model's spec."""
        self.spec.check(x, what)

    def check_n(self, n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise GenzooError(f"the number of samples must be a positive integer, got {n!r}.")
        return n


def check_positive(value: float, name: str, allow_zero: bool = False) -> None:
    """Raise a GenzooError naming the config field when `value` is not positive."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = "at least 0" if allow_zero else "positive"
        raise GenzooError(f"{name} must be {bound}, got {value!r}.")


def check_range(value: float, name: str, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise GenzooError(f"{name} must be between {lo} and {hi}, got {value!r}.")


def check_temperature(temperature: float) -> float:
    if not isinstance(temperature, (int, float)) or not temperature > 0:
        raise GenzooError(f"temperature must be a positive number, got {temperature!r}.")
    return float(temperature)
