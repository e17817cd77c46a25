"""Autoencoder and denoising autoencoder: z = E(x), x_hat = G(z), L2 reconstruction.

Levels k of K are mapped to v = 2k/(K-1) - 1 in [-1, 1]; `encode` takes levels to codes z (B, L),
`decode` takes codes to continuous images in that same [-1, 1] space, `reconstruct` rounds the
decoded image back to levels. The loss is the mean squared error in [-1, 1] space.

An autoencoder has no likelihood and no prior, so it cannot be sampled as it stands. Here
`sample` draws z from a Gaussian N(m, S) fitted to the codes of the training images -- a running
estimate kept in buffers, updated from every training batch (like BatchNorm statistics), saved
with the weights, and refit exactly with `fit_codes(x)` -- and decodes it.

The denoising autoencoder (Vincent et al. 2008) corrupts its input -- Gaussian noise, masking
or salt and pepper -- and is trained to reconstruct the clean image: loss = ||G(E(c(x))) - x||^2.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ...data.spec import Dataset, DataSpec
from ...data.transforms import from_centered, to_centered
from ...distributed import gather_rows
from ...errors import GenzooError
from ...functional import float32, psnr
from ...nn.convnets import ConvDecoder, ConvEncoder
from ..base import Figure, GenerativeModel, ImageRows
from ..helpers import check_choices, check_positive, check_range, check_temperature, eval_mode

Corruption = Literal["gaussian", "mask", "salt_pepper"]


@dataclass(frozen=True)
class AEConfig:
    """latent_dim below C*H*W gives an under-complete code, above it an over-complete one."""

    latent_dim: int = 16  # code size: below C*H*W under-complete, above it over-complete
    hidden_channels: int = 32  # feature maps of the convolutional encoder and decoder
    num_blocks: int = 1  # residual blocks of the encoder and of the decoder
    dropout: float = 0.0  # dropout probability in the encoder and decoder
    code_momentum: float = 0.01  # weight of each batch in the running code statistics

    def __post_init__(self) -> None:
        for name in ("latent_dim", "hidden_channels", "num_blocks"):
            check_positive(getattr(self, name), name)
        check_range(self.dropout, "dropout", 0.0, 0.99)
        check_range(self.code_momentum, "code_momentum", 1e-6, 1.0)
        check_choices(self)


@dataclass(frozen=True)
class DAEConfig(AEConfig):
    """corruption: "gaussian" (std `sigma`, in units of the full range 0..K-1), "mask" (each
    sub-pixel set to level 0 with probability `drop_rate`) or "salt_pepper" (each sub-pixel set to
    level 0 or K-1, with equal odds, with probability `salt_pepper_rate`)."""

    latent_dim: int = 32  # code size: below C*H*W under-complete, above it over-complete
    # how inputs are corrupted: Gaussian noise, masking to level 0, or salt and pepper
    corruption: Corruption = "gaussian"
    sigma: float = 0.25  # standard deviation of the Gaussian corruption, in units of the full range 0..K-1
    drop_rate: float = 0.3  # probability that the mask corruption sets a sub-pixel to level 0
    salt_pepper_rate: float = 0.15  # probability that salt and pepper sets a sub-pixel to level 0 or K-1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.sigma, "sigma", allow_zero=True)
        check_range(self.drop_rate, "drop_rate", 0.0, 1.0)
        check_range(self.salt_pepper_rate, "salt_pepper_rate", 0.0, 1.0)


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside, the previous mode restored after."""
    with eval_mode(model), torch.no_grad():
        yield


class AE(GenerativeModel):
    """Convolutional autoencoder with L2 reconstruction; samples decode codes from a Gaussian fitted to training codes."""

    name = "ae"
    Config = AEConfig
    loss_unit: ClassVar[str] = "mean squared error per dimension in [-1, 1]"
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 2000, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4}

    def __init__(self, spec: DataSpec, config: AEConfig) -> None:
        super().__init__(spec, config)
        C, H, W = spec.shape
        L, ch, nb = config.latent_dim, config.hidden_channels, config.num_blocks
        self.encoder = ConvEncoder(C, H, W, ch, L, nb, config.dropout)
        self.decoder = ConvDecoder(L, C, H, W, ch, nb, config.dropout)
        # Gaussian over codes: mean m (L,), second moment E[z z^T] (L, L), codes seen so far.
        # Before any training it is N(0, I).
        self.register_buffer("code_mean", torch.zeros(L))
        self.register_buffer("code_second", torch.eye(L))
        self.register_buffer("code_count", torch.zeros(()))

    # -- codes and images ---------------------------------------------------------------------
    def _input(self, x: Tensor) -> Tensor:
        """Levels -> [-1, 1] in the encoder's dtype."""
        return to_centered(x, self.spec.levels, self.encoder.input.weight.dtype)

    def encode(self, x: Tensor) -> Tensor:
        """Codes z = E(x), (B, latent_dim), of levels x (B, C, H, W)."""
        x = self.check_input(x)
        return self.encoder(self._input(x))

    def decode(self, z: Tensor) -> Tensor:
        """x_hat = G(z): continuous images (B, C, H, W) in the [-1, 1] space of the input."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise GenzooError(f"z must have shape (B, {self.config.latent_dim}), got {tuple(z.shape)}.")
        return self.decoder(z)

    def to_levels(self, v: Tensor) -> Tensor:
        """[-1, 1] -> nearest levels, int64."""
        return from_centered(v, self.spec.levels)

    def reconstruct(self, x: Tensor) -> Tensor:
        """G(E(x)) rounded to levels, int64 (B, C, H, W)."""
        with torch.no_grad():
            return self.to_levels(self.decode(self.encode(x)))

    def loss(self, x: Tensor) -> Tensor:
        """Mean squared reconstruction error in [-1, 1] space, ||G(E(x)) - x||^2 / D."""
        v = self._input(x)
        z = self.encoder(v)
        if self.training:
            self._update_code_stats(z.detach())
        return F.mse_loss(self.decoder(z), v)

    # -- the code distribution ----------------------------------------------------------------
    @torch.no_grad()
    @float32
    def _update_code_stats(self, z: Tensor) -> None:
        """Running mean and second moment of codes: a plain average over the first 1/momentum
        batches' worth of codes, then an exponential moving average with weight `code_momentum`.
        Float32 under mixed precision, as the statistics are."""
        z = gather_rows(z)  # the global batch's codes under data parallelism
        B = z.shape[0]
        w = max(B / (float(self.code_count) + B), self.config.code_momentum)
        z = z.to(self.code_mean.dtype)
        self.code_mean.lerp_(z.mean(0), w)
        self.code_second.lerp_(z.T @ z / B, w)
        self.code_count += B

    @torch.no_grad()
    def fit_codes(self, x: Tensor, batch_size: int = 256) -> None:
        """Set the code Gaussian to the exact mean and covariance of the codes of `x` (eval mode)."""
        x = self.check_input(x)
        with evaluating(self):
            z = torch.cat([self.encode(x[i:i + batch_size].to(self.device)) for i in range(0, len(x), batch_size)])
        z = z.to(self.code_mean.dtype)
        self.code_mean.copy_(z.mean(0))
        self.code_second.copy_(z.T @ z / len(z))
        self.code_count.fill_(len(z))

    def code_distribution(self) -> tuple[Tensor, Tensor]:
        """(mean (L,), Cholesky factor (L, L)) of the fitted code Gaussian N(m, E[zz^T] - m m^T)."""
        m = self.code_mean
        cov = self.code_second - torch.outer(m, m)
        cov = 0.5 * (cov + cov.T)
        # Eigenvalue floor: a code direction the encoder never uses has (numerically) zero variance.
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(1e-6 * float(evals.abs().max().clamp_min(1e-12)))
        chol = torch.linalg.cholesky(evecs @ torch.diag(evals) @ evecs.T)
        return m, chol

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> Tensor:
        """Decode z ~ N(m, T^2 S), the Gaussian fitted to the training codes, rounded to levels.

        An autoencoder defines no distribution over images; this is the usual makeshift (the
        decoded images are only as good as the Gaussian fit of the code cloud). `temperature`
        scales the standard deviation.
        """
        T = check_temperature(temperature, scales_latent=True)
        with evaluating(self):
            m, chol = self.code_distribution()
            eps = torch.randn(n, m.shape[0], generator=generator, dtype=m.dtype, device=m.device)
            z = m + T * eps @ chol.T
            return self.to_levels(self.decoder(z.to(self.encoder.input.weight.dtype)))

    # -- metrics and figures ------------------------------------------------------------------
    def _batched(self, fn, x: Tensor, batch_size: int = 256) -> Tensor:
        return torch.cat([fn(x[i:i + batch_size].to(self.device)).cpu() for i in range(0, len(x), batch_size)])

    def task_metrics(self, data: Dataset, generator: torch.Generator | None = None) -> dict[str, float]:
        """Reconstruction PSNR in dB (peak K-1 levels), averaged over images."""
        with evaluating(self):
            x_hat = self._batched(self.reconstruct, data.x)
        return {"psnr": float(psnr(x_hat, data.x, self.spec.levels).mean())}

    def figures(self, data: Dataset, generator: torch.Generator | None = None, n: int = 16) -> dict[str, Figure]:
        """reconstructions: inputs in the top row, reconstructions below."""
        x = data.x[:n]
        with evaluating(self):
            x_hat = self.reconstruct(x.to(self.device)).cpu()
        return {"reconstructions": ImageRows((x, x_hat), ("input", "reconstruction"))}


class DenoisingAE(AE):
    """Autoencoder trained to reconstruct the clean image from a corrupted one."""

    name = "dae"
    loss_unit: ClassVar[str] = "mean squared error per dimension in [-1, 1], of the clean image"
    Config = DAEConfig

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """c(x): corrupted levels, int64 in [0, K-1], by the configured corruption.

        gaussian:     round(x + (K-1) sigma eps), eps ~ N(0, 1), clamped to [0, K-1]
        mask:         0 with probability drop_rate, else x
        salt_pepper:  0 or K-1 (equal odds) with probability salt_pepper_rate, else x
        """
        x = self.check_input(x)
        cfg, top = self.config, self.spec.levels - 1
        x = x.long()
        if cfg.corruption == "gaussian":
            eps = torch.randn(x.shape, generator=generator, dtype=torch.float64, device=x.device)
            return (x + top * cfg.sigma * eps).round().clamp(0, top).long()
        u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device)
        if cfg.corruption == "mask":
            return torch.where(u < cfg.drop_rate, torch.zeros_like(x), x)
        salt = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=x.device) < 0.5
        return torch.where(u < cfg.salt_pepper_rate, salt.long() * top, x)

    def loss(self, x: Tensor) -> Tensor:
        """||G(E(c(x))) - x||^2 / D in [-1, 1] space: reconstruct the clean image from a corrupted one.
        The running code statistics are those of the corrupted inputs the encoder sees."""
        z = self.encoder(self._input(self.corrupt(x)))
        if self.training:
            self._update_code_stats(z.detach())
        return F.mse_loss(self.decoder(z), self._input(x))

    def task_metrics(self, data: Dataset, generator: torch.Generator | None = None) -> dict[str, float]:
        """PSNR (dB, peak K-1) of reconstructions of clean inputs, of the corrupted inputs
        themselves, of reconstructions of corrupted inputs, and the gain denoising brings."""
        x, K = data.x, self.spec.levels
        with evaluating(self):
            x_noisy = self.corrupt(x, generator)
            clean = psnr(self._batched(self.reconstruct, x), x, K).mean()
            noisy = psnr(x_noisy, x, K).mean()
            denoised = psnr(self._batched(self.reconstruct, x_noisy), x, K).mean()
        return {"psnr_clean": float(clean), "psnr_corrupted": float(noisy), "psnr_denoised": float(denoised),
                "denoising_gain_db": float(denoised - noisy)}

    def figures(self, data: Dataset, generator: torch.Generator | None = None, n: int = 16) -> dict[str, Figure]:
        """denoising: clean inputs, corrupted inputs, reconstructions of the corrupted inputs."""
        x = data.x[:n]
        with evaluating(self):
            x_noisy = self.corrupt(x, generator)
            x_hat = self.reconstruct(x_noisy.to(self.device)).cpu()
        return {"denoising": ImageRows((x, x_noisy, x_hat), ("input", "noisy input", "denoised"))}
