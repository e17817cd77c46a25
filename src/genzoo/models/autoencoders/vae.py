"""Variational autoencoder with a decoder over the K discrete levels: ELBO and IWAE bounds.

Encoder q(z | x) = N(mu(x), diag sigma^2(x)), z = mu + sigma * eps (reparameterization); prior
p(z) = N(0, I). The decoder p(x | z) = prod_i p(x_i | z) gives each sub-pixel a distribution over
its K levels -- "categorical": softmax of K logits; "logistic": a discretized logistic
(Salimans et al. 2017), the mass of Logistic(m_i, s_i) over the bin of each level in [-1, 1],
with the tails folded into levels 0 and K-1 -- so p(x | z) is a probability of the *discrete*
image and the bounds below are true lower bounds on log P(x). Kingma & Welling 2014.

    ELBO(x) = E_q[log p(x | z)] - KL(q(z | x) || N(0, I))  <=  log P(x)
    KL      = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - log sigma_j^2)                    (analytic)
    IWAE_k  = E[log 1/k sum_i p(x, z_i) / q(z_i | x)],  z_i ~ q(z | x)                (Burda et al. 2016)

ELBO <= IWAE_k <= IWAE_k+1 <= log P(x) in expectation. With num_classes = N > 0 the model is the
conditional VAE of p(x | y) (Sohn et al. 2015): the class enters the encoder q(z | x, y) as N
one-hot input maps and the decoder p(x | z, y) beside z; the prior stays N(0, I), so every bound
above is one of log P(x | y). Likelihoods are in nats; `loss` is the
negative (beta-weighted, optionally free-bits) ELBO per dimension, while reported bounds always
use beta = 1 and no free bits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from ...data.spec import Dataset, DataSpec
from ...data.transforms import to_centered
from ...errors import GenzooError
from ...functional import discretized_logistic_log_prob, float32, psnr, standard_normal_log_prob, widen
from ...nn.convnets import ConvDecoder, ConvEncoder
from ..autoregressive.common import categorical_log_prob, sample_categorical
from ..base import Figure, ImageRows, LikelihoodModel, LogLikelihood, SampleStats
from ..helpers import check_choices, check_positive, check_range, check_temperature
from .ae import evaluating

# Most decoder output values (images x importance samples x outputs per image) held at once
# by log_likelihood.
MAX_DECODER_VALUES = 2 ** 23
Decoder = Literal["categorical", "logistic"]


@dataclass(frozen=True)
class VAEConfig:
    """beta weights the KL term in training (beta-VAE); free_bits (nats per latent dimension,
    batch-averaged) stops the optimizer from pushing a dimension's KL below it (Kingma et al.
    2016). Neither changes the reported bounds."""

    latent_dim: int = 16  # dimensions of the Gaussian latent z
    hidden_channels: int = 32  # feature maps of the convolutional encoder and decoder
    num_blocks: int = 1  # residual blocks of the encoder and of the decoder
    dropout: float = 0.2  # dropout probability in the encoder and decoder
    beta: float = 1.0  # weight of the KL term in training (beta-VAE); the reported bounds use 1
    free_bits: float = 0.0  # nats per latent dimension below which the KL is not pushed (Kingma et al. 2016)
    decoder: Decoder = "categorical"  # p(x | z): a K-way softmax per sub-pixel, or a discretized logistic
    added_fields: ClassVar[tuple[str, ...]] = ("num_classes",)  # runs saved before it load with its default
    num_classes: int = 0  # 0 for an unconditional model, else the number of class labels it is conditioned on

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("latent_dim", "hidden_channels", "num_blocks"):
            check_positive(getattr(self, name), name)
        check_range(self.dropout, "dropout", 0.0, 0.99)
        check_positive(self.beta, "beta", allow_zero=True)
        check_positive(self.free_bits, "free_bits", allow_zero=True)
        check_positive(self.num_classes, "num_classes", allow_zero=True)


@float32
def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mu, diag exp(log_var)) || N(0, I)) per latent dimension, same shape as mu."""
    return 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var)


@float32
def normal_log_prob(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mu, diag exp(log_var)) summed over the last dimension."""
    return -0.5 * ((z - mu).pow(2) * torch.exp(-log_var) + log_var + math.log(2 * math.pi)).sum(-1)


class VAE(LikelihoodModel):
    """Convolutional VAE over discrete levels with ELBO / IWAE likelihood bounds."""

    name = "vae"
    Config = VAEConfig
    loss_unit: ClassVar[str] = "nats per dimension (negative training ELBO, with beta and free bits)"
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 1500, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4}

    def __init__(self, spec: DataSpec, config: VAEConfig) -> None:
        super().__init__(spec, config)
        C, H, W = spec.shape
        L, ch, nb, N = config.latent_dim, config.hidden_channels, config.num_blocks, config.num_classes
        self.encoder = ConvEncoder(C + N, H, W, ch, 2 * L, nb, config.dropout)
        outputs = C * spec.levels if config.decoder == "categorical" else 2 * C
        self.decoder = ConvDecoder(L + N, outputs, H, W, ch, nb, config.dropout)

    def one_hot(self, labels: Tensor | None, n: int, dtype: torch.dtype) -> Tensor | None:
        """The checked labels of n images as one-hot rows (n, num_classes); None when unconditional."""
        labels = self.check_labels(labels, n)
        return None if labels is None else torch.nn.functional.one_hot(labels, self.num_classes).to(dtype)

    # -- q(z | x) and p(x | z) ----------------------------------------------------------------
    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """q(z | x[, y]) = N(mu, diag exp(log_var)): (mu, log_var), each (B, latent_dim)."""
        x = self.check_input(x)
        v = to_centered(x, self.spec.levels, self.encoder.input.weight.dtype)
        y = self.one_hot(labels, len(x), v.dtype)
        if y is not None:
            v = torch.cat([v, y[:, :, None, None].expand(-1, -1, *v.shape[2:])], 1)
        mu, log_var = self.encoder(v).chunk(2, dim=1)
        return mu, log_var

    def _decoder_output(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Categorical: logits (B, K, C, H, W); logistic: (m, log_s) stacked as (B, 2, C, H, W)."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise GenzooError(f"z must have shape (B, {self.config.latent_dim}), got {tuple(z.shape)}.")
        C, H, W = self.spec.shape
        y = self.one_hot(labels, len(z), z.dtype)
        h = self.decoder(z if y is None else torch.cat([z, y], 1))
        per_channel = self.spec.levels if self.config.decoder == "categorical" else 2
        return h.view(z.shape[0], C, per_channel, H, W).transpose(1, 2)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """log p(x_i = k | z[, y]) for every level k: (B, K, C, H, W); it sums to one over k."""
        out = self._decoder_output(z, labels)
        if self.config.decoder == "categorical":
            return widen(out).log_softmax(1)
        k = torch.arange(self.spec.levels, device=z.device).view(1, -1, 1, 1, 1)
        return discretized_logistic_log_prob(k, out[:, :1], out[:, 1:2].clamp_min(-7.0), self.spec.levels)

    def decoder_log_prob(self, x: Tensor, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """log p(x | z[, y]) in nats, (B,), of levels x (B, C, H, W) given codes z (B, L)."""
        out = self._decoder_output(z, labels)
        if self.config.decoder == "categorical":
            return categorical_log_prob(out, x)
        lp = discretized_logistic_log_prob(x, out[:, 0], out[:, 1].clamp_min(-7.0), self.spec.levels)
        return lp.flatten(1).sum(1)

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The most probable levels under p(x | z = mu(x)), int64 (B, C, H, W)."""
        with torch.no_grad():
            mu, _ = self.encode(x, labels)
            return self.decode(mu, labels).argmax(1)

    # -- objective and bounds -----------------------------------------------------------------
    def loss(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Negative training ELBO in nats per dimension, batch mean, one z ~ q(z | x) per image:
        (-log p(x | z) + beta * KL') / D, where KL' sums max(free_bits, batch-mean KL_j) over
        latent dimensions j (the plain KL when free_bits = 0)."""
        mu, log_var = self.encode(x, labels)
        z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
        rec = -self.decoder_log_prob(x, z, labels).mean()
        kl = gaussian_kl(mu, log_var).mean(0).clamp_min(self.config.free_bits).sum()
        return (rec + self.config.beta * kl) / self.spec.dims

    def log_likelihood(self, x: Tensor, num_samples: int = 1, generator: torch.Generator | None = None,
                       labels: Tensor | None = None) -> LogLikelihood:
        """Lower bound on log P(x) (or log P(x | labels)) in nats, (B,): the ELBO (analytic KL) for num_samples = 1, else
        the importance-weighted bound IWAE_k = log 1/k sum_i p(x | z_i) p(z_i) / q(z_i | x).
        The k samples are decoded in chunks of at most MAX_DECODER_VALUES decoder outputs."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise GenzooError(f"num_samples must be a positive integer, got {num_samples!r}.")
        mu, log_var = self.encode(x, labels)
        std = torch.exp(0.5 * log_var)
        B, L = mu.shape
        if num_samples == 1:
            eps = torch.randn(B, L, generator=generator, dtype=mu.dtype, device=mu.device)
            elbo = self.decoder_log_prob(x, mu + std * eps, labels) - gaussian_kl(mu, log_var).sum(1)
            return LogLikelihood(elbo, "lower_bound")
        per_image = self.decoder.output.out_channels * self.spec.height * self.spec.width
        chunk = max(1, MAX_DECODER_VALUES // (B * per_image))
        log_w = []
        for start in range(0, num_samples, chunk):
            k = min(chunk, num_samples - start)
            eps = torch.randn(k, B, L, generator=generator, dtype=mu.dtype, device=mu.device)
            z = mu + std * eps  # (k, B, L)
            repeated = None if labels is None else labels.repeat(k)
            log_px = self.decoder_log_prob(x.repeat(k, 1, 1, 1), z.reshape(k * B, L), repeated).view(k, B)
            log_pz = standard_normal_log_prob(z.flatten(0, 1)).view(k, B)
            log_qz = normal_log_prob(z, mu, log_var)
            log_w.append(log_px + log_pz - log_qz)
        log_w = torch.cat(log_w)  # (k, B)
        return LogLikelihood(torch.logsumexp(log_w, 0) - math.log(num_samples), "lower_bound")

    # -- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0,
               greedy: bool = False, label: int | None = None, labels: Tensor | None = None) -> Tensor:
        """z ~ N(0, T^2 I), then x ~ p(x | z) per sub-pixel (the most probable level with `greedy`). A
        class-conditional model draws class `label`, or `labels` (n,), or the classes 0, 1, ... in turn."""
        T = check_temperature(temperature, scales_latent=True)
        labels = self.classes_to_draw(n, label, labels)
        with evaluating(self):
            dtype = self.encoder.input.weight.dtype
            z = T * torch.randn(n, self.config.latent_dim, generator=generator, dtype=dtype, device=self.device)
            return self._draw(self.decode(z, labels), generator, greedy)

    @torch.no_grad()
    def inpaint(self, x: Tensor, known: Tensor, generator: torch.Generator | None = None,
                labels: Tensor | None = None, sweeps: int = 50) -> Tensor:
        """x completed where `known` is False by pseudo-Gibbs imputation (Rezende et al. 2014, appendix
        F): `sweeps` times, z ~ q(z | x) then the unknown sub-pixels ~ p(x | z), the known ones kept.
        A Markov chain whose stationary distribution approaches p(unknown | known) as q approaches the
        true posterior; it starts from the unknown sub-pixels drawn at random."""
        if isinstance(sweeps, bool) or not isinstance(sweeps, int) or not 1 <= sweeps <= 10_000:
            raise GenzooError(f"sweeps must be an integer from 1 to 10,000, got {sweeps!r}.")
        known = self.check_known(known, x)
        with evaluating(self):
            noise = torch.randint(0, self.spec.levels, x.shape, generator=generator, device=self.device)
            current = torch.where(known, x, noise)
            labels = self.classes_to_draw(len(x), None, labels)
            for _ in range(sweeps):
                mu, log_var = self.encode(current, labels)
                eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
                current = torch.where(known, x, self._draw(self.decode(mu + torch.exp(0.5 * log_var) * eps, labels),
                                                           generator, greedy=False))
        self._sample_stats = SampleStats(f"pseudo-gibbs ({sweeps} sweeps)", 2 * sweeps)
        return current

    def _draw(self, logits: Tensor, generator: torch.Generator | None, greedy: bool) -> Tensor:
        """Levels (B, C, H, W) from (unnormalised) log-probabilities (B, K, C, H, W): the argmax, or
        one categorical draw per sub-pixel."""
        if greedy:
            return logits.argmax(1)
        B, K, C, H, W = logits.shape
        flat = logits.permute(0, 2, 3, 4, 1).reshape(-1, K)
        return sample_categorical(flat, 1.0, generator).view(B, C, H, W)

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 8, labels_a: Tensor | None = None,
                    labels_b: Tensor | None = None) -> Tensor:
        """Decode z = (1 - t) mu(x_a) + t mu(x_b) at `steps` evenly spaced t in [0, 1]:
        (B, steps, C, H, W) int64, the most probable levels, for pairs x_a, x_b (B, C, H, W). A
        class-conditional model encodes each with its labels and decodes the path in x_a's classes."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise GenzooError(f"steps must be an integer of at least 2, got {steps!r}.")
        if x_a.shape != x_b.shape:
            raise GenzooError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}.")
        with evaluating(self):
            mu_a, _ = self.encode(x_a, labels_a)
            mu_b, _ = self.encode(x_b, labels_b)
            t = torch.linspace(0, 1, steps, dtype=mu_a.dtype, device=mu_a.device).view(1, steps, 1)
            z = (1 - t) * mu_a[:, None] + t * mu_b[:, None]  # (B, steps, L)
            labels = None if labels_a is None else labels_a.repeat_interleave(steps)
            levels = self.decode(z.flatten(0, 1), labels).argmax(1)
        return levels.view(x_a.shape[0], steps, *self.spec.shape)

    # -- metrics and figures ------------------------------------------------------------------
    def task_metrics(self, data: Dataset, generator: torch.Generator | None = None) -> dict[str, float]:
        """The mean one-sample ELBO per image in nats (whatever --num-samples the main bound uses;
        genzoo.bits_per_dim(model, x, num_samples=1) gives it in bits/dim), the mean
        KL(q(z | x) || p(z)) in nats, active latent units (Var_x E_q[z_j] > 0.01, Burda et al.
        2016), and the PSNR (dB) of the most probable reconstruction."""
        with evaluating(self):
            mus, kls, recs, elbos = [], [], [], []
            for i in range(0, len(data.x), 256):
                x, labels = data.x[i:i + 256].to(self.device), self.labels_of(data, slice(i, i + 256))
                mu, log_var = self.encode(x, labels)
                mus.append(mu.cpu())
                kls.append(gaussian_kl(mu, log_var).sum(1).cpu())
                recs.append(self.decode(mu, labels).argmax(1).cpu())
                elbos.append(self.log_likelihood(x, 1, generator, labels).nats.double().cpu())
        mu = torch.cat(mus)
        return {"elbo_nats": float(torch.cat(elbos).mean()),
                "kl_nats": float(torch.cat(kls).mean()),
                "active_units": float((mu.var(0) > 0.01).sum()) if len(mu) > 1 else 0.0,
                "psnr": float(psnr(torch.cat(recs), data.x, self.spec.levels).mean())}

    def figures(self, data: Dataset, generator: torch.Generator | None = None,
                n: int = 16, steps: int = 10) -> dict[str, Figure]:
        """reconstructions (inputs above, reconstructions below) and interpolation (one row per pair
        of data images, from the first to the second through the posterior means)."""
        x = data.x[:n].to(self.device)
        with evaluating(self):
            x_hat = self.reconstruct(x, self.labels_of(data, slice(0, n)))
        pairs = max(1, min(8, len(data.x) // 2))
        idx = (torch.randperm(len(data.x), generator=generator)[: 2 * pairs] if len(data.x) >= 2
               else torch.zeros(2, dtype=torch.long))
        x_a, x_b = data.x[idx[:pairs]].to(self.device), data.x[idx[pairs:2 * pairs]].to(self.device)
        grid = self.interpolate(x_a, x_b, steps, self.labels_of(data, idx[:pairs]),
                                self.labels_of(data, idx[pairs:2 * pairs])).cpu()
        return {"reconstructions": ImageRows((x.cpu(), x_hat.cpu()), ("input", "reconstruction")),
                "interpolation": ImageRows(tuple(grid))}
