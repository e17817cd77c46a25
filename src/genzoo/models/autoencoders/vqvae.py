"""VQ-VAE: discrete codes from a vector-quantised autoencoder, an autoregressive prior over them.

VQ-VAE (van den Oord et al. 2017): z_e = E(x) on a grid of h x w positions, each replaced by its
nearest codebook vector, z_q = e_k (genzoo.nn.quantize); the decoder D(z_q) gives a categorical
distribution over the K levels of every sub-pixel. Training objective (eq. 3, with the negative
log-likelihood of the categorical decoder as reconstruction term, in nats per dimension):

    loss = -log p(x | z_q) / D + beta ||z_e - sg(e)||^2 [+ ||sg(z_e) - e||^2 when the codebook is loss-trained]

An autoregressive model of the PixelCNN family (config `prior`, a `PriorConfig`) is then fitted to
the codes of the training images, seen as 1 x h x w images with `num_codes` levels.

This module holds what VQ-VAE and VQ-VAE-2 (models.autoencoders.vqvae2) share: the encoder and
decoder blocks, the two training stages, the objective, the bound, sampling and metrics.

Grids: `downsamples` = -1 halves the image (rounding up) while the result keeps at least 4 rows
and columns, at most twice: 8x8 digits -> 4x4 codes (VQ-VAE-2: 4x4 bottom, 2x2 top), 28x28 ->
7x7 (VQ-VAE-2: 7x7 bottom, 4x4 top).

Training runs in two stages (the trainer's multi-stage hooks): "autoencoder" trains encoder,
decoder and codebook(s); "prior" trains the prior(s) on the codes of each batch, computed by the
frozen encoder. The codes are recomputed per batch rather than stored, so resuming needs nothing.

Likelihood: for any fixed code z*, P(x) = sum_z P(x | z) P(z) >= P(x | z*) P(z*), so with the
categorical decoder log P(x | z_q(x)) + log P_prior(z_q(x)) is a lower bound on the log-probability
of the discrete image, kind "lower_bound" (loose: it counts one code per image, not all).
Samples draw codes from the priors (with temperature) and decode them to the most probable level
of every sub-pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.spec import Dataset, DataSpec
from ...data.transforms import to_centered
from ...errors import GenzooError
from ...functional import psnr, widen
from ...nn.pointwise import Conv1x1
from ...nn.quantize import Quantized, VectorQuantizer
from ..autoregressive.code_prior import PriorConfig, build_code_prior
from ..autoregressive.common import categorical_log_prob
from ..base import Figure, ImageRows, LikelihoodModel, LogLikelihood
from ..helpers import check_choices, check_positive, check_range, check_temperature
from .ae import evaluating

STAGES = ("autoencoder", "prior")
CodebookUpdate = Literal["ema", "loss"]  # moving averages (a buffer) or a codebook loss (a parameter)


def auto_downsamples(height: int, width: int) -> int:
    """Halvings (rounding up) that keep at least 4 rows and columns, at most 2."""
    d, h, w = 0, height, width
    while d < 2 and min((h + 1) // 2, (w + 1) // 2) >= 4:
        d, h, w = d + 1, (h + 1) // 2, (w + 1) // 2
    return d


def halve(size: tuple[int, int]) -> tuple[int, int]:
    return ((size[0] + 1) // 2, (size[1] + 1) // 2)


def grid_sizes(height: int, width: int, downsamples: int) -> list[tuple[int, int]]:
    """[(H, W), then the size after each halving]: the last is the code grid (-1: auto_downsamples)."""
    d = auto_downsamples(height, width) if downsamples == -1 else downsamples
    sizes = [(height, width)]
    for _ in range(d):
        sizes.append(halve(sizes[-1]))
    return sizes


# -- configs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VQVAEConfig:
    """codebook_update: "ema" (moving averages, codebook a buffer) or "loss" (codebook loss, codebook a parameter).

    downsamples: number of halvings from image to code grid, -1 to choose from the image size.
    restart_threshold: codes used by fewer than this many vectors per batch (moving average) are
    restarted at encoder outputs of the batch; 0 turns restarts off.
    prior: the autoregressive prior over codes (see PriorConfig: family and sizes). Besides a
    PriorConfig it accepts a dict of its fields (as config.json holds it) or that dict as a JSON
    string, which is how the command line sets it: --prior '{"family": "gated-pixelcnn"}'.
    Fields left out keep PriorConfig's defaults.
    """

    hidden_channels: int = 64  # feature maps of the encoder and decoder
    num_blocks: int = 2  # residual blocks of the encoder and of the decoder
    downsamples: int = -1  # halvings from the image to the code grid; -1 chooses from the image size
    num_codes: int = 32  # codebook size K_z
    code_dim: int = 16  # dimensions of each code vector
    # codebook by moving averages (a buffer) or by a codebook loss (a parameter)
    codebook_update: CodebookUpdate = "ema"
    commitment: float = 0.25  # weight beta of the commitment loss
    decay: float = 0.99  # moving-average decay of the EMA codebook
    # codes used by fewer vectors per batch (moving average) restart at encoder outputs; 0: never
    restart_threshold: float = 1.0
    # the autoregressive prior over codes, as JSON: '{"family": "gated-pixelcnn"}' (omitted fields keep defaults)
    prior: PriorConfig = field(default_factory=PriorConfig)
    added_fields: ClassVar[tuple[str, ...]] = ("num_classes",)  # runs saved before it load with its default
    num_classes: int = 0  # 0: an unconditional prior, else the number of classes its code prior (top) is conditioned on

    def __post_init__(self) -> None:
        for name in ("hidden_channels", "num_blocks", "code_dim"):
            check_positive(getattr(self, name), name)
        if self.num_codes < 2:
            raise GenzooError(f"num_codes must be at least 2, got {self.num_codes!r}.")
        if self.downsamples < -1:
            raise GenzooError(f"downsamples must be -1 (from the image size) or at least 0, got {self.downsamples!r}.")
        check_choices(self)
        check_positive(self.commitment, "commitment", allow_zero=True)
        check_range(self.decay, "decay", 0.0, 0.9999)
        check_positive(self.restart_threshold, "restart_threshold", allow_zero=True)
        object.__setattr__(self, "prior", PriorConfig.parse(self.prior))
        check_positive(self.num_classes, "num_classes", allow_zero=True)


# -- blocks --------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """x + 1x1(relu(3x3(relu(x)))), the residual block of van den Oord et al. 2017, section 4.1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.proj = Conv1x1(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj(F.relu(self.conv(F.relu(x))))


class Downsampler(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, ceil(H / 2^d), ceil(W / 2^d)): 3x3 conv, d stride-2 convs, residual blocks, 1x1 out."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, downsamples: int, num_blocks: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1)]
        for _ in range(downsamples):
            layers += [nn.ReLU(), nn.Conv2d(hidden, hidden, 3, stride=2, padding=1)]
        layers += [ResBlock(hidden) for _ in range(num_blocks)]
        layers += [nn.ReLU(), Conv1x1(hidden, out_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Upsampler(nn.Module):
    """(B, C_in, h, w) -> (B, C_out, *sizes[-1]): 3x3 conv, residual blocks, then for each size in
    `sizes` nearest-neighbour resizing and a 3x3 conv (odd sizes come back exactly), 3x3 conv out."""

    def __init__(self, in_channels: int, hidden: int, out_channels: int, sizes: list[tuple[int, int]], num_blocks: int) -> None:
        super().__init__()
        self.sizes = sizes
        self.input = nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), *[ResBlock(hidden) for _ in range(num_blocks)])
        self.ups = nn.ModuleList(nn.Conv2d(hidden, hidden, 3, padding=1) for _ in sizes)
        self.output = nn.Sequential(nn.ReLU(), nn.Conv2d(hidden, out_channels, 3, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        h = self.input(z)
        for size, conv in zip(self.sizes, self.ups):
            h = conv(F.relu(F.interpolate(h, size=size, mode="nearest")))
        return self.output(h)


# -- the models ----------------------------------------------------------------------------------
class VQModel(LikelihoodModel):
    """What VQ-VAE and VQ-VAE-2 share: stages, the objective, bound, sampling, metrics.

    A subclass defines `code_levels` (names of its code levels), `quantizers` (one per level),
    `_forward(v, update) -> (logits, [Quantized])`, `_decode(codes) -> logits`, the priors
    `_prior_log_probs(codes, labels) -> [nats (B,)]`, `_sample_codes(n, T, generator, labels) -> codes`
    (labels (B,) for a class-conditional model, else None) and `prior_modules` (what the "prior"
    stage trains). Codes are lists, one (B, h, w) per level.
    """

    stages: ClassVar[tuple[str, ...]] = STAGES
    code_levels: ClassVar[tuple[str, ...]]
    quantizers: nn.ModuleList
    prior_modules: tuple[str, ...]

    def __init__(self, spec: DataSpec, config: VQVAEConfig) -> None:
        super().__init__(spec, config)
        # The current stage, saved with the weights so a checkpoint's `loss` is the one it trained on.
        self.register_buffer("stage_index", torch.tensor(0))

    def _quantizer(self) -> VectorQuantizer:
        c = self.config
        return VectorQuantizer(c.num_codes, c.code_dim, c.codebook_update, c.decay, c.restart_threshold)

    def _input(self, x: Tensor) -> Tensor:
        return to_centered(x, self.spec.levels, self.quantizers[0].cluster_size.dtype)

    def _logits_view(self, h: Tensor) -> Tensor:
        """(B, C*K, H, W) -> (B, K, C, H, W)."""
        B, _, H, W = h.shape
        return h.view(B, self.spec.channels, self.spec.levels, H, W).transpose(1, 2)

    def _forward(self, v: Tensor, update: bool) -> tuple[Tensor, list[Quantized]]:  # pragma: no cover
        raise NotImplementedError

    def _decode(self, codes: list[Tensor]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def _prior_log_probs(self, codes: list[Tensor], labels: Tensor | None = None) -> list[Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _sample_codes(self, n: int, temperature: float, generator: torch.Generator | None,
                      labels: Tensor | None = None) -> list[Tensor]:  # pragma: no cover
        raise NotImplementedError

    # -- stages -------------------------------------------------------------------------------
    def _check_stage(self, name: str) -> None:
        if name not in STAGES:
            raise GenzooError(f"unknown training stage {name!r}; {self.name} has stages {', '.join(STAGES)}.")

    def begin_stage(self, name: str, train_data: Any) -> None:
        """Switch the objective `loss` computes: the autoencoder's, or the priors' on frozen codes."""
        self._check_stage(name)
        self.stage_index.fill_(STAGES.index(name))

    @property
    def stage(self) -> str:
        return STAGES[int(self.stage_index)]

    def stage_parameters(self, name: str) -> Iterator[nn.Parameter]:
        """"autoencoder": encoders, decoder (and a loss-trained codebook); "prior": the priors."""
        self._check_stage(name)
        in_prior = tuple(p + "." for p in self.prior_modules)
        for key, p in self.named_parameters():
            if key.startswith(in_prior) == (name == "prior"):
                yield p

    # -- codes ----------------------------------------------------------------------------------
    def _codes(self, x: Tensor) -> list[Tensor]:
        return [q.codes for q in self._forward(self._input(x), update=False)[1]]

    def _to_levels(self, logits: Tensor) -> Tensor:
        """The most probable level of every sub-pixel, (B, C, H, W) int64."""
        return logits.argmax(1)

    def reconstruct(self, x: Tensor) -> Tensor:
        """argmax p(x' | z_q(x)): the decoder's most probable levels given the codes of x, int64."""
        x = self.check_input(x)
        with torch.no_grad():
            return self._to_levels(self._forward(self._input(x), update=False)[0])

    # -- objective --------------------------------------------------------------------------------
    def loss(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The objective of the current stage, a scalar.

        Stage "autoencoder": nats per dimension (sub-pixel) of the reconstruction term
        -log p(x | z_q), plus beta (`commitment`) times the commitment MSE ||z_e - sg(e)||^2, a mean
        over the components of the encoder outputs, plus, for a loss-trained codebook, the codebook
        MSE ||sg(z_e) - e||^2 likewise; one such pair per code level. The MSEs are squared latent
        units, so only the first term is in nats.
        Stage "prior": nats per code, -log p(codes) summed over the code levels and divided by the
        number of codes of all levels, the codes of x from the frozen encoder (and the prior given the
        labels of a class-conditional model)."""
        if self.stage == "prior":
            with torch.no_grad():
                codes = self._codes(x)
            nats = sum(lp.sum() for lp in self._prior_log_probs(codes, self.check_labels(labels, len(x))))
            return -nats / sum(c.numel() for c in codes)
        update = self.training and torch.is_grad_enabled()
        logits, quantized = self._forward(self._input(x), update)
        loss = F.cross_entropy(widen(logits), x)
        for q in quantized:
            loss = loss + self.config.commitment * q.commitment
            if self.config.codebook_update == "loss":
                loss = loss + q.codebook_loss
        return loss

    def log_likelihood(self, x: Tensor, labels: Tensor | None = None) -> LogLikelihood:
        """log p(x | z_q(x)) + log p(z_q(x)[ | y]) <= log P(x[ | y]), in nats (B,); kind "lower_bound"."""
        logits, quantized = self._forward(self._input(x), update=False)
        nats = categorical_log_prob(logits, x)
        for lp in self._prior_log_probs([q.codes for q in quantized], self.check_labels(labels, len(x))):
            nats = nats + lp
        return LogLikelihood(nats, "lower_bound")

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0,
               label: int | None = None, labels: Tensor | None = None) -> Tensor:
        """Codes drawn from the priors at `temperature`, decoded to the most probable levels. A
        class-conditional model draws class `label`, or `labels` (n,), or the classes 0, 1, ... in turn."""
        temperature = check_temperature(temperature)
        labels = self.classes_to_draw(n, label, labels)
        with evaluating(self):
            return self._to_levels(self._decode(self._sample_codes(n, temperature, generator, labels)))

    # -- metrics and figures ------------------------------------------------------------------------
    def task_metrics(self, data: Dataset, generator: torch.Generator | None = None, batch_size: int = 256) -> dict[str, float]:
        """Reconstruction PSNR (dB, peak K-1), and per code level: the fraction of codes used,
        the perplexity of code frequencies, the prior's bits per code (log2 num_codes is uniform)."""
        x_hat, codes, nats = [], [[] for _ in self.code_levels], [[] for _ in self.code_levels]
        with evaluating(self):
            for i in range(0, len(data.x), batch_size):
                x = data.x[i:i + batch_size].to(self.device)
                logits, quantized = self._forward(self._input(x), update=False)
                x_hat.append(self._to_levels(logits).cpu())
                level_codes = [q.codes for q in quantized]
                labels = self.labels_of(data, slice(i, i + batch_size))
                for j, (c, lp) in enumerate(zip(level_codes, self._prior_log_probs(level_codes, labels))):
                    codes[j].append(c.cpu())
                    nats[j].append(lp.double().cpu())
        metrics = {"psnr": float(psnr(torch.cat(x_hat), data.x, self.spec.levels).mean())}
        for j, level in enumerate(self.code_levels):
            c = torch.cat(codes[j])
            used, perplexity = self.quantizers[j].usage(c)
            suffix = f"_{level}" if level else ""
            metrics[f"codebook_usage{suffix}"] = used
            metrics[f"perplexity{suffix}"] = perplexity
            metrics[f"prior_bits_per_code{suffix}"] = float(-torch.cat(nats[j]).sum() / (c.numel() * math.log(2)))
        return metrics

    def figures(self, data: Dataset, generator: torch.Generator | None = None, n: int = 16) -> dict[str, Figure]:
        """"reconstructions": the first n images of `data` in the top row, their reconstructions
        from their codes (`reconstruct`, in eval mode) below."""
        x = data.x[:n]
        with evaluating(self):
            x_hat = self.reconstruct(x.to(self.device)).cpu()
        return {"reconstructions": ImageRows((x.cpu(), x_hat), ("input", "reconstruction"))}


class VQVAE(VQModel):
    """VQ-VAE: one grid of codes, a categorical decoder, a PixelCNN-family prior over the codes."""

    name = "vqvae"
    Config = VQVAEConfig
    code_levels: ClassVar[tuple[str, ...]] = ("",)
    prior_modules = ("prior",)
    # steps are per stage: 2 x 1000 in all (on digits, 1500 per stage gains under 0.1 dB)
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 1000, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.0}

    def __init__(self, spec: DataSpec, config: VQVAEConfig) -> None:
        super().__init__(spec, config)
        C, H, W = spec.shape
        sizes = grid_sizes(H, W, config.downsamples)
        d, self.grid = len(sizes) - 1, sizes[-1]
        ch = config.hidden_channels
        self.encoder = Downsampler(C, ch, config.code_dim, d, config.num_blocks)
        self.quantizers = nn.ModuleList([self._quantizer()])
        self.decoder = Upsampler(config.code_dim, ch, C * spec.levels, sizes[-2::-1], config.num_blocks)
        self.prior = build_code_prior(config.prior, self.grid, config.num_codes, config.num_classes)

    def _forward(self, v: Tensor, update: bool) -> tuple[Tensor, list[Quantized]]:
        z_e = self.encoder(v)
        if update:
            self.quantizers[0].update(z_e)
        q = self.quantizers[0](z_e)
        return self._logits_view(self.decoder(q.z_q)), [q]

    def _decode(self, codes: list[Tensor]) -> Tensor:
        return self._logits_view(self.decoder(self.quantizers[0].lookup(codes[0])))

    def _prior_log_probs(self, codes: list[Tensor], labels: Tensor | None = None) -> list[Tensor]:
        return [self.prior.log_likelihood(codes[0][:, None], labels).nats]

    def _sample_codes(self, n: int, temperature: float, generator: torch.Generator | None,
                      labels: Tensor | None = None) -> list[Tensor]:
        return [self.prior.sample(n, generator, temperature=temperature, labels=labels)[:, 0]]

    def encode(self, x: Tensor) -> Tensor:
        """Codes (B, h, w) int64 of levels x (B, C, H, W)."""
        x = self.check_input(x)
        with torch.no_grad():
            return self._codes(x)[0]

    def decode(self, codes: Tensor) -> Tensor:
        """The decoder's most probable levels (B, C, H, W) given codes (B, h, w)."""
        self._check_codes(codes, self.grid, "codes")
        with torch.no_grad():
            return self._to_levels(self._decode([codes]))

    def _check_codes(self, codes: Tensor, grid: tuple[int, int], what: str) -> None:
        if not isinstance(codes, Tensor) or codes.ndim != 3 or tuple(codes.shape[1:]) != grid or codes.dtype.is_floating_point:
            got = tuple(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise GenzooError(f"{what} must be integer codes of shape (B, {grid[0]}, {grid[1]}), got {got}.")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.config.num_codes):
            raise GenzooError(f"{what} must lie in [0, {self.config.num_codes - 1}].")
