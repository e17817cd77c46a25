"""The training options (TrainConfig, with each model's own defaults), the device they name, and what a
training call reached (TrainResult): what genzoo.training and its loop (genzoo.training_loop) share.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import configs, precision
from .errors import GenzooError
from .models.base import GenerativeModel
from .models.helpers import check_choices
from .registry import check_seed

# Old names of training options, read from the records of earlier runs.
RENAMED_OPTIONS = {"num_samples": "grid_size"}


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; a model's `train_defaults` replace these defaults.

    grid_size is the number of images in each sample grid written during and after training.
    max_seconds > 0 ends each stage early, after a last validation, once the stage has run for
    max_seconds / (number of stages) wall-clock seconds (an equal-time budget); 0 means no limit.
    precision is fp32, bf16, fp16 or auto (genzoo.precision). channels_last stores the convolution
    weights (and so the activations) in NHWC order; compile runs the loss through torch.compile.
    Both change how the step is computed, not what is saved: the weights are written in the
    standard layout, and load without either.
    """

    steps: int = 2000  # optimizer steps (per stage, for models trained in stages)
    batch_size: int = 64  # images per step, the global batch under torchrun
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_steps: int = 100  # steps of linear warm-up before the cosine decay
    min_lr_ratio: float = 0.05  # the learning rate at the end, as a fraction of lr
    grad_clip: float = 1.0  # largest gradient norm (0: no clipping)
    ema_decay: float = 0.999  # decay of the exponential moving average of the weights that are evaluated and saved
    eval_every: int = 250  # steps between validations, each of which saves the resumable state
    sample_every: int = 1000  # steps between sample grids written to samples/ (0: none)
    grid_size: int = 64  # images in each sample grid (0: none)
    seed: int = 0  # decides the initial weights, the data order, dropout and sampling
    device: str = "auto"  # auto (CUDA where available), cpu, cuda, cuda:N or mps
    val_batch_size: int = 256  # images per batch of validation and evaluation
    max_seconds: float = 0.0  # > 0: end each stage after its share of these wall-clock seconds (0: no limit)
    # fp32; bf16 or fp16 under autocast (fp16 with loss scaling, on a GPU); auto: bf16 where CUDA has it
    precision: precision.Name = "fp32"
    channels_last: bool = False  # store convolution kernels larger than 1x1 in NHWC order (same results, maybe faster)
    compile: bool = False  # run the loss through torch.compile (same results; pays only on long runs)

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_choices(self)
        for name in ("steps", "batch_size", "eval_every", "val_batch_size"):
            if int(getattr(self, name)) < 1:
                raise GenzooError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("warmup_steps", "sample_every", "grid_size"):
            if int(getattr(self, name)) < 0:
                raise GenzooError(f"{name} must be at least 0, got {getattr(self, name)!r}.")
        if not self.max_seconds >= 0:
            raise GenzooError(f"max_seconds must be at least 0, got {self.max_seconds!r}.")
        if not self.lr > 0:
            raise GenzooError(f"lr must be positive, got {self.lr!r}.")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise GenzooError("weight_decay and grad_clip must be at least 0.")
        if not 0 <= self.ema_decay < 1:
            raise GenzooError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise GenzooError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}.")


def train_defaults_for(cls: type[GenerativeModel]) -> dict[str, Any]:
    """Every TrainConfig field's default for model class `cls`: TrainConfig's, then the model's own."""
    return {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **cls.train_defaults}


def train_config_for(model: GenerativeModel | type[GenerativeModel], **overrides: Any) -> TrainConfig:
    """TrainConfig from the defaults, then the model's `train_defaults`, then `overrides` (None: unset)."""
    overrides = {RENAMED_OPTIONS.get(k, k): v for k, v in overrides.items()}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise GenzooError(f"unknown training option {unknown[0]!r}; the options are: {', '.join(sorted(known))}.")
    values = {**model.train_defaults, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = configs.build(TrainConfig, values, "the training options", max_int=None)  # steps and seeds may be large
    resolve_device(cfg.device)
    return cfg


@dataclass
class TrainResult:
    """What a training call reached: the best validation score (`metric`: "val_bpd" in bits/dim with
    its `kind`, or "val_loss" in the model's `loss_unit`), its step, the optimizer steps this call
    took (`steps`, fewer than configured when max_seconds ends it), the throughput, and the run
    directory (`out`)."""

    best_value: float = math.inf
    best_step: int = -1
    metric: str = "val_bpd"
    kind: str = ""
    steps: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    total_steps: int = 0  # the run's global steps, every stage's together
    already_finished: bool = False  # a resume found the run finished and trained nothing
    out: Path | None = None  # the run directory


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise GenzooError(f"unknown device {name!r}.") from e
    if device.type not in ("cpu", "cuda", "mps"):
        raise GenzooError(f"genzoo trains on cpu, cuda or mps, not on {name!r}.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GenzooError(f"device {name!r} was asked for but MPS is not available here.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenzooError(f"device {name!r} was asked for but CUDA is not available here.")
    return device
