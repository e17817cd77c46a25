"""RealNVP: affine couplings with checkerboard and channel masks, logit preprocessing, multi-scale.

Per scale (Dinh et al. 2017, "Density estimation using Real NVP", section 3.6): couplings with
alternating checkerboard masks, a squeeze, couplings with alternating channel masks, then half of
the channels are factored out as latents (standard normal prior); the last scale has only
checkerboard couplings (channel couplings where the image is a single pixel, as for 2-D toy data).
The logit transform u = logit(alpha + (1 - 2 alpha) v) of section 4.1 enters the likelihood
through its Jacobian. Unlike the paper, no batch normalisation: the coupling networks are small
residual convolution stacks whose last layer starts at zero (each coupling starts as the identity),
and the log-scale is bounded (scale_c * tanh). With checkerboard="squeezed" a checkerboard
coupling's network sees only the pixels it keeps, squeezed to half resolution, instead of the masked
full image (a different, cheaper network; the default stays "masked"). Conventions (spaces, log_det = log abs det(dz/du),
the layout of z, the dequantized lower bound) are in genzoo.models.flows.common.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ...data.spec import DataSpec
from ...errors import GenzooError
from ...nn.flow_layers import AffineCoupling, Split, Squeeze
from ..helpers import check_positive
from .common import FlowModel, Preprocess, ScaleFn, check_preprocess, count_halvings


@dataclass(frozen=True)
class RealNVPConfig:
    """num_scales and final_couplings at 0 choose themselves from the data shape."""

    hidden_channels: int = 64  # feature maps of each coupling's s, t network
    num_blocks: int = 1            # residual blocks in each coupling's s, t network
    num_scales: int = 0            # 0: min(3, number of possible squeezes + 1)
    couplings_per_scale: int = 3   # before the squeeze (checkerboard) and again after it (channel)
    final_couplings: int = 0       # 0: 4 on images, 8 on single-pixel (2-D toy) data
    scale_fn: ScaleFn = "tanh"         # bounded log-scale: "tanh" (learned scale * tanh) or "sigmoid"
    # "masked" (full-resolution net) or "squeezed" (net on the kept half; even sizes)
    checkerboard: Literal["masked", "squeezed"] = "masked"
    preprocess: Preprocess = "logit"      # "logit" or "centered" (v - 1/2)
    alpha: float = 0.05  # the logit preprocessing's margin: logit(alpha + (1 - 2 alpha) v)
    num_classes: int = 0  # 0 for an unconditional model, else the classes of its class-conditional base
    # fields newer than some saved runs: loading those, their defaults fill them in
    added_fields: ClassVar[tuple[str, ...]] = ("num_classes",)

    def __post_init__(self) -> None:
        for name in ("hidden_channels", "couplings_per_scale"):
            check_positive(getattr(self, name), name)
        for name in ("num_blocks", "num_scales", "final_couplings"):
            check_positive(getattr(self, name), name, allow_zero=True)
        check_preprocess(self, self.alpha)


class RealNVP(FlowModel):
    """Multi-scale RealNVP density model of discrete images (uniform dequantization, lower bound)."""

    name = "realnvp"
    Config = RealNVPConfig
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 1500, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.0}

    def __init__(self, spec: DataSpec, config: RealNVPConfig) -> None:
        super().__init__(spec, config)
        C, H, W = spec.shape
        halvings = count_halvings(H, W)
        scales = config.num_scales or min(3, halvings + 1)
        if scales - 1 > halvings:
            raise GenzooError(f"num_scales={scales} needs {scales - 1} squeezes, but a {H}x{W} image allows {halvings}.")

        def coupling(mask: str, parity: int) -> AffineCoupling:
            if mask == "checkerboard" and config.checkerboard == "squeezed" and H % 2 == 0 and W % 2 == 0:
                mask = "squeezed-checkerboard"
            return AffineCoupling(C, H, W, mask, parity, config.hidden_channels, config.num_blocks, config.scale_fn)

        for _ in range(scales - 1):
            self.layers.extend(coupling("checkerboard", i % 2) for i in range(config.couplings_per_scale))
            self.layers.append(Squeeze())
            C, H, W = 4 * C, H // 2, W // 2
            self.layers.extend(coupling("channel", i % 2) for i in range(config.couplings_per_scale))
            keep = (C + 1) // 2
            self.layers.append(Split(C, keep, H, W))
            C = keep
        final = config.final_couplings or (8 if H * W == 1 else 4)
        mask = "checkerboard" if H * W >= 2 else "channel"
        self.layers.extend(coupling(mask, i % 2) for i in range(final))
        self._finish_build((C, H, W))
