"""What every continuous-time model shares: one U-Net configuration, uniform dequantization, and the
bound on log P(x) of the discrete image from the density of an ODE (score-sde, flow-matching).

Levels k of K map to 2k/(K-1) - 1 in [-1, 1] and are dequantized uniformly within their bin of
width w = 2/(K-1). For any density p of the continuous y = centre(x) + u, u ~ U(-w/2, w/2)^D,
    log P(x) >= E_u[log p(centre(x) + u)] + D log w                (Jensen; Theis et al. 2016),
and p comes from the instantaneous change of variables along the model's ODE (ode.py), its
divergence exact for at most `exact_divergence_max_dims` dimensions, else Hutchinson's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from ...data.spec import DataSpec
from ...data.transforms import to_centered
from ...errors import GenzooError
from ...functional import float32
from ...nn.unet import UNet
from ..base import LogLikelihood
from ..helpers import check_positive, check_range, eval_mode
from .ode import change_of_variables
from .reverse import DiffusionModel

DIVERGENCES = ("auto", "exact", "hutchinson")


@dataclass(frozen=True)
class UNetFields:
    """The U-Net of every diffusion-family model (nn/unet.py): base width, width multipliers per
    resolution, residual blocks per resolution, the resolutions with attention, heads, dropout, and
    its classes (num_classes, each label dropped with probability label_dropout in training, for
    classifier-free guidance)."""

    base_channels: int = 32  # feature maps of the U-Net's first resolution
    channel_mults: tuple[int, ...] = (1, 2)  # width multiplier of each resolution, comma-separated (e.g. 1,2)
    num_res_blocks: int = 1  # residual blocks per resolution
    attention_resolutions: tuple[int, ...] = (4,)  # resolutions (image sides) with self-attention, comma-separated
    num_heads: int = 1  # heads of each self-attention layer
    dropout: float = 0.1  # dropout probability in the residual blocks
    num_classes: int = 0  # 0 for an unconditional model, else the number of classes it is conditioned on
    label_dropout: float = 0.1  # probability of dropping a label in training (classifier-free guidance)
    # fields newer than some saved runs: loading those, their defaults fill them in
    added_fields: ClassVar[tuple[str, ...]] = ("num_classes", "label_dropout")

    def __post_init__(self) -> None:
        check_positive(self.num_classes, "num_classes", allow_zero=True)
        check_range(self.label_dropout, "label_dropout", 0.0, 1.0)
        for name in ("base_channels", "num_res_blocks", "num_heads"):
            check_positive(getattr(self, name), name)
        if not self.channel_mults or any(m < 1 for m in self.channel_mults):
            raise GenzooError(f"channel_mults must be a non-empty tuple of positive integers, got {self.channel_mults!r}.")
        if any(r < 1 for r in self.attention_resolutions):
            raise GenzooError(f"attention_resolutions must hold positive integers, got {self.attention_resolutions!r}.")
        if self.base_channels % self.num_heads:
            raise GenzooError(f"base_channels ({self.base_channels}) must be divisible by num_heads ({self.num_heads}).")
        check_range(self.dropout, "dropout", 0.0, 0.99)


@dataclass(frozen=True)
class UNetConfig(UNetFields):
    """The U-Net of every continuous-time model (UNetFields, as DDPM's), and how its ODE
    likelihood is solved: exact divergence up to exact_divergence_max_dims dimensions; validation by
    RK4 with validation_steps steps; log_likelihood by RK45 with ode_rtol and ode_atol."""

    # the ODE likelihood takes the exact divergence up to this many dimensions, else Hutchinson's
    exact_divergence_max_dims: int = 16
    validation_steps: int = 10  # RK4 steps of the validation estimate of the ODE likelihood
    ode_rtol: float = 1e-5  # relative tolerance of the RK45 solver of log_likelihood
    ode_atol: float = 1e-5  # absolute tolerance of the RK45 solver of log_likelihood

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("validation_steps", "ode_rtol", "ode_atol"):
            check_positive(getattr(self, name), name)
        check_positive(self.exact_divergence_max_dims, "exact_divergence_max_dims", allow_zero=True)


def build_unet(spec: DataSpec, config: UNetFields, num_classes: int = 0, in_channels: int | None = None) -> UNet:
    """The shared U-Net for images of `spec`, C channels out and `in_channels` (default C) in."""
    C = spec.channels
    return UNet(in_channels or C, C, min(spec.height, spec.width), config.base_channels, config.channel_mults,
                config.num_res_blocks, config.attention_resolutions, config.dropout, config.num_heads,
                num_classes=num_classes)


class ContinuousTimeModel(DiffusionModel):
    """A likelihood model whose density is that of an ODE on dequantized data; holds `self.net`, the
    shared U-Net (with the config's classes), and trains by default as every such model does."""

    config: Any
    net: UNet
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 2000, "batch_size": 64, "lr": 2e-3, "warmup_steps": 100,
                                                "ema_decay": 0.995, "eval_every": 500}

    def __init__(self, spec: DataSpec, config: Any) -> None:
        super().__init__(spec, config)
        self.net = build_unet(spec, config, config.num_classes)

    @property
    def bin_width(self) -> float:
        """Width of a level's bin in model space, 2/(K-1)."""
        return 2.0 / (self.spec.levels - 1)

    def dequantize(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Levels -> 2k/(K-1) - 1 + u, u ~ U(-w/2, w/2) with w the bin width."""
        centre = to_centered(x, self.spec.levels, dtype=self._dtype())
        u = torch.rand(x.shape, generator=generator, dtype=centre.dtype, device=x.device) - 0.5
        return centre + u * self.bin_width

    @float32
    def ode_bound(self, x: Tensor, field: Callable[[Tensor, Tensor], Tensor], t0: float, t1: float,
                  prior_log_prob: Callable[[Tensor], Tensor], generator: torch.Generator | None, divergence: str,
                  method: str, steps: int, rtol: float | None, atol: float | None) -> LogLikelihood:
        """The bound of the module docstring, nats (B,), one dequantization draw per image: the ODE
        dy/dt = field(y, t) from the data at t0 to the prior at t1, where log p_t1 = prior_log_prob.
        Float32 under mixed precision, network included: the divergence is integrated along the path
        (score-sde's bound moved by 0.025 bits/dim under bf16 autocast otherwise)."""
        x = self.check_input(x)
        rtol = self.config.ode_rtol if rtol is None else rtol
        atol = self.config.ode_atol if atol is None else atol
        if divergence not in DIVERGENCES:
            raise GenzooError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}.")
        if divergence == "auto":
            divergence = "exact" if self.spec.dims <= self.config.exact_divergence_max_dims else "hutchinson"
        with eval_mode(self):
            y = self.dequantize(x, generator)
            z, delta, _ = change_of_variables(field, y, t0, t1, divergence, method, steps, rtol, atol, generator)
        return LogLikelihood(prior_log_prob(z) + delta + self.spec.dims * math.log(self.bin_width), "lower_bound")

    @torch.no_grad()
    def validation_nats(self, x: Tensor, **options: Any) -> LogLikelihood:
        """A cheap estimate of log_likelihood, nats per image (B,), kind "lower_bound": one
        dequantization draw, the ODE by RK4 with validation_steps steps and Hutchinson's divergence,
        generator seeded 0."""
        generator = torch.Generator(device=self.device).manual_seed(0)
        return self.log_likelihood(x, generator=generator, divergence="hutchinson", method="rk4",
                                   steps=self.config.validation_steps, **options)
