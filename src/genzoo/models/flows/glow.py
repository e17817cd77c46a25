"""Glow: steps of actnorm -> invertible 1x1 convolution -> affine coupling, multi-scale with learned
split priors, sampling with temperature.

Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions". Each level
squeezes (while the image allows it), runs `steps_per_level` flow steps and, except the last,
factors out half of the channels. The learned prior of a factored-out half, N(mu(h), sigma(h)^2)
given the kept half h, and the learned top prior are written as affine layers that standardise
the latents (genzoo.nn.flow_layers.GaussianizeSplit / GaussianizeTop), so `encode` returns a z
that is N(0, I) under the model and the conditional density sits in log_det. Conventions (spaces,
log_det = log abs det(dz/du), the layout of z, the dequantized lower bound) are in
genzoo.models.flows.common.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...data.spec import DataSpec
from ...errors import GenzooError
from ...nn.flow_layers import ActNorm, AffineCoupling, GaussianizeSplit, GaussianizeTop, InvConv1x1, InvConv1x1LU, Split, Squeeze
from ..helpers import check_positive
from .common import FlowModel, Preprocess, ScaleFn, check_preprocess, count_halvings


@dataclass(frozen=True)
class GlowConfig:
    """num_levels at 0 chooses itself from the data shape: min(3, number of possible squeezes), at least 1."""

    hidden_channels: int = 64  # feature maps of each coupling's s, t network
    num_blocks: int = 1            # residual blocks in each coupling's s, t network
    num_levels: int = 0  # levels (squeeze, steps, split); 0: min(3, number of possible squeezes), at least 1
    steps_per_level: int = 8  # flow steps (actnorm, 1x1 convolution, coupling) per level
    lu: bool = True                # LU-decomposed 1x1 convolutions (O(C) log-det) or plain ones
    learn_prior: bool = True       # learned split and top priors; else N(0, I) for every latent
    scale_fn: ScaleFn = "sigmoid"      # bounded log-scale: "sigmoid" (Glow) or "tanh"
    preprocess: Preprocess = "logit"      # "logit" or "centered" (v - 1/2)
    alpha: float = 0.05  # the logit preprocessing's margin: logit(alpha + (1 - 2 alpha) v)
    num_classes: int = 0  # 0 for an unconditional model, else the classes of its class-conditional base
    # fields newer than some saved runs: loading those, their defaults fill them in
    added_fields: ClassVar[tuple[str, ...]] = ("num_classes",)

    def __post_init__(self) -> None:
        for name in ("hidden_channels", "steps_per_level"):
            check_positive(getattr(self, name), name)
        for name in ("num_blocks", "num_levels"):
            check_positive(getattr(self, name), name, allow_zero=True)
        check_preprocess(self, self.alpha)


class Glow(FlowModel):
    """Multi-scale Glow density model of discrete images (uniform dequantization, lower bound)."""

    name = "glow"
    Config = GlowConfig
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 1500, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}

    def __init__(self, spec: DataSpec, config: GlowConfig) -> None:
        super().__init__(spec, config)
        C, H, W = spec.shape
        halvings = count_halvings(H, W)
        levels = config.num_levels or max(1, min(3, halvings))
        for level in range(levels):
            if level < halvings:
                self.layers.append(Squeeze())
                C, H, W = 4 * C, H // 2, W // 2
            for k in range(config.steps_per_level):
                self.layers.append(ActNorm(C))
                self.layers.append(InvConv1x1LU(C) if config.lu else InvConv1x1(C))
                mask = "channel" if C >= 2 else "checkerboard"
                self.layers.append(AffineCoupling(C, H, W, mask, k % 2, config.hidden_channels, config.num_blocks,
                                                  config.scale_fn))
            if level < levels - 1:
                if C < 2:
                    raise GenzooError(f"num_levels={levels} is too many for a {spec.height}x{spec.width} image: "
                                      f"level {level + 1} has a single channel left to split.")
                keep = (C + 1) // 2
                if config.learn_prior:
                    self.layers.append(GaussianizeSplit(C, keep, config.hidden_channels, H, W))
                self.layers.append(Split(C, keep, H, W))
                C = keep
        if config.learn_prior:
            self.layers.append(GaussianizeTop(C, H, W))
        self._finish_build((C, H, W))
