"""VQ-VAE-2: two levels of discrete codes, a prior over the top codes and a conditional prior
over the bottom codes given the top ones.

Razavi et al. 2019: the bottom encoder maps x to features at the bottom grid; the top encoder
halves them once more and quantises (top codes); the top codes, decoded back to the bottom grid and
concatenated with the bottom features, give the bottom codes. The decoder sees the bottom codes
and the upsampled top codes. Priors:

    p(top, bottom) = p(top) p(bottom | top)

p(top) is an autoregressive model of the PixelCNN family (config `prior`, a PriorConfig);
p(bottom | top) is a ConditionalPixelCNN (models.autoregressive.code_prior): masked convolutions
over the bottom codes, the top codes entering every layer unmasked, since they are given.
Stages, objective, bound and sampling are VQ-VAE's (models.autoencoders.vqvae).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ...data.spec import DataSpec
from ...errors import GenzooError
from ...nn.pointwise import Conv1x1
from ...nn.quantize import Quantized
from ..autoregressive.code_prior import ConditionalPixelCNN, build_code_prior
from ..helpers import check_positive, check_range
from .vqvae import VQVAE, Downsampler, Upsampler, VQModel, VQVAEConfig, grid_sizes, halve


@dataclass(frozen=True)
class VQVAE2Config(VQVAEConfig):
    """As VQVAEConfig, for both levels; `prior` is the top prior. The bottom prior p(bottom | top)
    is a ConditionalPixelCNN, sized by the bottom_prior_* fields."""

    bottom_prior_channels: int = 64  # feature maps of the bottom prior p(bottom | top)
    bottom_prior_blocks: int = 4  # residual blocks of the bottom prior
    bottom_prior_dropout: float = 0.1  # dropout probability of the bottom prior

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.bottom_prior_channels, "bottom_prior_channels")
        check_positive(self.bottom_prior_blocks, "bottom_prior_blocks")
        check_range(self.bottom_prior_dropout, "bottom_prior_dropout", 0.0, 0.99)


class VQVAE2(VQVAE):
    """VQ-VAE-2: top and bottom codes, p(top) a PixelCNN-family prior, p(bottom | top) a conditional PixelCNN."""

    name = "vqvae2"
    Config = VQVAE2Config
    code_levels: ClassVar[tuple[str, ...]] = ("top", "bottom")
    prior_modules = ("top_prior", "bottom_prior")
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 1000, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.0}

    def __init__(self, spec: DataSpec, config: VQVAE2Config) -> None:
        VQModel.__init__(self, spec, config)  # its own modules; VQVAE lends only encode/decode helpers
        C, H, W = spec.shape
        sizes = grid_sizes(H, W, config.downsamples)
        d, self.grid = len(sizes) - 1, sizes[-1]
        self.top_grid = halve(self.grid)
        ch, nb, D = config.hidden_channels, config.num_blocks, config.code_dim
        self.encoder = Downsampler(C, ch, ch, d, nb)                  # x -> bottom features
        self.top_encoder = Downsampler(ch, ch, D, 1, nb)               # bottom features -> z_e top
        self.top_decoder = Upsampler(D, ch, ch, [self.grid], nb)       # z_q top -> bottom grid
        self.bottom_input = Conv1x1(2 * ch, D)                    # [features, decoded top] -> z_e bottom
        self.quantizers = nn.ModuleList([self._quantizer(), self._quantizer()])
        self.top_upsample = nn.Sequential(nn.Upsample(size=self.grid, mode="nearest"), nn.Conv2d(D, D, 3, padding=1))
        self.decoder = Upsampler(2 * D, ch, C * spec.levels, sizes[-2::-1], nb)
        self.top_prior = build_code_prior(config.prior, self.top_grid, config.num_codes, config.num_classes)
        self.bottom_prior = ConditionalPixelCNN(config.num_codes, config.num_codes, self.grid,
                                                config.bottom_prior_channels, config.bottom_prior_blocks,
                                                config.bottom_prior_dropout)

    def _forward(self, v: Tensor, update: bool) -> tuple[Tensor, list[Quantized]]:
        quant_top, quant_bottom = self.quantizers
        h = self.encoder(v)
        z_e_top = self.top_encoder(h)
        if update:
            quant_top.update(z_e_top)
        q_top = quant_top(z_e_top)
        z_e_bottom = self.bottom_input(torch.cat([h, self.top_decoder(q_top.z_q)], 1))
        if update:
            quant_bottom.update(z_e_bottom)
        q_bottom = quant_bottom(z_e_bottom)
        return self._decode_vectors(q_top.z_q, q_bottom.z_q), [q_top, q_bottom]

    def _decode_vectors(self, z_q_top: Tensor, z_q_bottom: Tensor) -> Tensor:
        return self._logits_view(self.decoder(torch.cat([z_q_bottom, self.top_upsample(z_q_top)], 1)))

    def _decode(self, codes: list[Tensor]) -> Tensor:
        top, bottom = codes
        return self._decode_vectors(self.quantizers[0].lookup(top), self.quantizers[1].lookup(bottom))

    def _prior_log_probs(self, codes: list[Tensor], labels: Tensor | None = None) -> list[Tensor]:
        top, bottom = codes
        return [self.top_prior.log_likelihood(top[:, None], labels).nats, self.bottom_prior.log_prob(bottom, top)]

    def _sample_codes(self, n: int, temperature: float, generator: torch.Generator | None,
                      labels: Tensor | None = None) -> list[Tensor]:
        top = self.top_prior.sample(n, generator, temperature=temperature, labels=labels)[:, 0]
        return [top, self.bottom_prior.sample(top, temperature, generator)]

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        """(top codes (B, h', w'), bottom codes (B, h, w)), int64, of levels x (B, C, H, W)."""
        x = self.check_input(x)
        with torch.no_grad():
            top, bottom = self._codes(x)
        return top, bottom

    def decode(self, codes: tuple[Tensor, Tensor]) -> Tensor:  # type: ignore[override]
        """The decoder's most probable levels (B, C, H, W) given (top codes, bottom codes)."""
        if not isinstance(codes, (tuple, list)) or len(codes) != 2:
            raise GenzooError("codes must be a pair (top codes, bottom codes).")
        top, bottom = codes
        self._check_codes(top, self.top_grid, "top codes")
        self._check_codes(bottom, self.grid, "bottom codes")
        if len(top) != len(bottom):
            raise GenzooError(f"top and bottom codes must hold the same number of images, got {len(top)} and {len(bottom)}.")
        with torch.no_grad():
            return self._to_levels(self._decode([top, bottom]))
