"""EDM: the design space of Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models", on the shared U-Net.

The process is x = y + sigma n (alpha = 1, the noise level sigma itself as time), data y in [-1, 1]
of standard deviation sigma_data. The network F is wrapped by the preconditioning (their table 1)
    D(x, sigma) = c_skip x + c_out F(c_in x, c_noise)
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),   c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2),            c_noise = ln(sigma) / 4,
so that F's input and its regression target (y - c_skip x) / c_out have unit variance at every
sigma for data of variance sigma_data^2 (c_noise reaches the U-Net as its time index through an
affine map of ln sigma). Training draws ln sigma ~ N(P_mean, P_std^2) and weights the squared error
by lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, i.e. E ||F - target||^2.
Sampling: Heun's method (their algorithm 2) on the noise levels
    sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  rho = 7,
then sigma = 0, with the optional churn S_churn (noise added back before every step, the noise
level raised by the factor 1 + min(S_churn / N, sqrt(2) - 1); S_tmin, S_tmax and S_noise at their
defaults 0, inf and 1); 2N - 1 network evaluations. The probability-flow ODE
dx/dsigma = (x - D(x, sigma)) / sigma gives the likelihood (a lower bound on the discrete image,
with the dequantization and divergence continuous.py shares with score-sde and flow-matching), from
the data at sigma_min to the prior N(0, sigma_max^2 I).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch
from torch import Tensor

from ...functional import standard_normal_log_prob, widen
from ..base import LogLikelihood
from ..helpers import Callback, check_positive, check_range, report_step
from .continuous import ContinuousTimeModel, UNetConfig
from .reverse import GaussianPath
from .samplers import Sampled, check_steps, karras_sigmas

EDM_SAMPLERS = ("heun", "euler")


@dataclass(frozen=True)
class EDMConfig(UNetConfig):
    """Karras et al. 2022's settings (their table 1, the defaults there), the U-Net and ODE settings
    of continuous.py's UNetConfig."""

    sigma_data: float = 0.5  # standard deviation of the data in [-1, 1] the preconditioning assumes
    sigma_min: float = 0.002  # smallest noise level of sampling and of the likelihood's ODE
    sigma_max: float = 80.0  # largest noise level: the prior N(0, sigma_max^2 I)
    rho: float = 7.0  # spacing of the sampling noise levels (larger: more steps at low noise)
    p_mean: float = -1.2  # mean of ln sigma in training
    p_std: float = 1.2  # standard deviation of ln sigma in training
    sample_steps: int = 18  # noise levels of the Heun sampler (35 network evaluations)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("sigma_data", "sigma_min", "rho", "p_std", "sample_steps"):
            check_positive(getattr(self, name), name)
        check_range(self.sigma_max, "sigma_max", self.sigma_min * 1.0001, 1e4)


class EDM(ContinuousTimeModel):
    """Preconditioned denoiser D(x, sigma) on the shared U-Net, sampled by Heun on rho = 7 noise levels."""

    name = "edm"
    Config = EDMConfig
    loss_unit: ClassVar[str] = "weighted squared error of the denoiser per dimension (EDM's loss)"

    def preconditioning(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(c_skip, c_out, c_in, c_noise) at noise levels sigma (B,), each shaped (B, 1, 1, 1) but c_noise (B,)."""
        sd = self.config.sigma_data
        s = sigma.view(-1, 1, 1, 1)
        c_skip = sd ** 2 / (s ** 2 + sd ** 2)
        c_out = s * sd / (s ** 2 + sd ** 2).sqrt()
        c_in = 1 / (s ** 2 + sd ** 2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def time_index(self, c_noise: Tensor) -> Tensor:
        """c_noise as the U-Net's time index: ln sigma mapped affinely from [ln sigma_min, ln sigma_max] to [0, 999]."""
        lo, hi = math.log(self.config.sigma_min) / 4, math.log(self.config.sigma_max) / 4
        return 999.0 * (c_noise - lo) / (hi - lo)

    def denoise(self, x: Tensor, sigma: Tensor, labels: Tensor | None = None, guidance: float = 1.0) -> Tensor:
        """D(x, sigma) = c_skip x + c_out F(c_in x, c_noise), sigma (B,); with labels, F guided as u + w (c - u)."""
        c_skip, c_out, c_in, c_noise = self.preconditioning(sigma.to(x.dtype))
        return c_skip * x + c_out * self.net.guided(c_in * x, self.time_index(c_noise), labels, guidance)

    def loss(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """lambda(sigma) ||D(y + sigma n, sigma) - y||^2 per dimension, batch mean, ln sigma ~ N(P_mean, P_std^2),
        y the dequantized data (as score-sde and flow-matching train); labels dropped with label_dropout."""
        labels = self.check_labels(labels, x.shape[0])
        y = self.dequantize(x)
        sigma = (torch.randn(len(y), dtype=y.dtype, device=y.device) * self.config.p_std + self.config.p_mean).exp()
        if self.training:
            labels = self.net.drop_labels(labels, self.config.label_dropout)
        sd = self.config.sigma_data
        weight = ((sigma ** 2 + sd ** 2) / (sigma * sd) ** 2).view(-1, 1, 1, 1)
        d = widen(self.denoise(y + sigma.view(-1, 1, 1, 1) * torch.randn_like(y), sigma, labels))
        return (weight * (d - y).pow(2)).mean()

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None,
                       divergence: str = "auto", method: str = "rk45", steps: int = 100, rtol: float | None = None,
                       atol: float | None = None) -> LogLikelihood:
        """Lower bound on log P(x) (or log P(x | labels)) in nats (B,): dequantization and the ODE
        dx/dsigma = (x - D(x, sigma)) / sigma from sigma_min to sigma_max (continuous.py), solved in
        tau = ln sigma, where it reads dx/dtau = x - D(x, e^tau) (even steps in tau for RK4)."""
        labels = self.check_labels(labels, x.shape[0])

        def field(y: Tensor, tau: Tensor) -> Tensor:
            return y - self.denoise(y, tau.exp().expand(len(y)) if tau.ndim == 0 else tau.exp(), labels)

        smax = self.config.sigma_max

        def prior(z: Tensor) -> Tensor:  # log N(z; 0, sigma_max^2 I)
            return standard_normal_log_prob(z / smax) - z[0].numel() * math.log(smax)

        return self.ode_bound(x, field, math.log(self.config.sigma_min), math.log(smax), prior, generator, divergence,
                              method, steps, rtol, atol)

    # -- synthesis (reverse.py) ----------------------------------------------------------------
    def reverse_process(self, labels: Tensor | None, guidance: float) -> EDMReverse:
        return EDMReverse(self, labels, guidance)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, sampler: str = "heun",
               steps: Optional[int] = None, churn: float = 0.0, label: Optional[int] = None,
               labels: Tensor | None = None, guidance: float = 1.0, callback: Callback | None = None) -> Tensor:
        """n images from x ~ N(0, sigma_max^2 I) by Heun (or Euler) on `steps` noise levels (default
        sample_steps; Heun takes 2 steps - 1 network evaluations), with stochastic churn S_churn =
        `churn` (0: the deterministic ODE). A class-conditional model draws `label`, `labels` or the
        classes in turn, with classifier-free `guidance`. `callback` sees x and D(x) at every evaluation."""
        check_steps(steps)
        check_range(churn, "churn", 0.0, 1000.0)
        process = self.reverse_process(self.classes_to_draw(n, label, labels, guidance), guidance)
        return self._sample(process, n, sampler, steps, generator, callback, churn=churn)

    @torch.no_grad()
    def edit(self, x: Tensor, strength: float, generator: torch.Generator | None = None, sampler: str = "heun",
             steps: Optional[int] = None, labels: Tensor | None = None, guidance: float = 1.0,
             callback: Callback | None = None) -> Tensor:
        """SDEdit: x + sigma n at the noise level sigma_min (sigma_max / sigma_min)^strength, then Heun back."""
        check_steps(steps)
        process = self.reverse_process(self.classes_to_draw(len(x), None, labels, guidance), guidance)
        return self._edit(process, x, strength, sampler, steps, generator, callback)


class EDMReverse(GaussianPath):
    """EDM's process as a `reverse.ReverseProcess`: time is sigma (alpha = 1), the data at sigma = 0,
    the prior N(0, sigma_max^2 I) at sigma_max."""

    samplers = EDM_SAMPLERS

    def __init__(self, model: EDM, labels: Tensor | None, guidance: float) -> None:
        self.model, self.labels, self.guidance = model, labels, guidance
        self.config = model.config
        self.top = model.config.sigma_max
        self.evaluations = 2 if labels is not None and guidance != 1.0 else 1

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        return 1.0, t

    def denoise(self, x: Tensor, t: float) -> Tensor:
        return self.model.denoise(x, torch.full((len(x),), t, dtype=x.dtype, device=x.device), self.labels, self.guidance)

    def prior(self, shape: Sequence[int], generator: torch.Generator | None) -> Tensor:
        return self.top * torch.randn(tuple(shape), generator=generator, device=self.model.device,
                                      dtype=self.model._dtype())

    def ladder(self, steps: int | None) -> list[float]:
        return karras_sigmas(self.top, self.config.sigma_min, steps or self.config.sample_steps, self.config.rho) + [0.0]

    def strength_time(self, strength: float) -> float:
        return self.config.sigma_min * (self.top / self.config.sigma_min) ** strength

    def run(self, sampler: str, x: Tensor, t: float, steps: int | None, generator: torch.Generator | None,
            callback: Callback | None, churn: float = 0.0) -> Sampled:
        """Heun (Karras et al. algorithm 2) or Euler from x at sigma = t down the rho-spaced levels to 0."""
        sigmas = karras_sigmas(t, min(self.config.sigma_min, t), steps or self.config.sample_steps, self.config.rho) + [0.0]
        n = len(sigmas) - 1
        planned = 2 * n - 1 if sampler == "heun" else n
        gamma = min(churn / n, math.sqrt(2) - 1) if churn > 0 else 0.0
        nfe = 0

        def slope(y: Tensor, s: float) -> Tensor:
            """dx/dsigma = (x - D(x, sigma)) / sigma, each evaluation reported to the callback."""
            nonlocal nfe
            d = self.denoise(y, s)
            nfe += 1
            report_step(callback, nfe, planned, x=y, x0=d)
            return (y - d) / s

        for i in range(n):
            s, s_next = sigmas[i], sigmas[i + 1]
            if gamma > 0:  # churn: raise the noise level to s_hat by fresh noise, then step from there
                s_hat = s * (1 + gamma)
                x = x + math.sqrt(s_hat ** 2 - s ** 2) * torch.randn(x.shape, generator=generator, device=x.device,
                                                                      dtype=x.dtype)
                s = s_hat
            d = slope(x, s)
            x_next = x + (s_next - s) * d
            if sampler == "heun" and s_next > 0:  # the trapezoid rule; the last step, into sigma = 0, is Euler's
                x_next = x + (s_next - s) * (d + slope(x_next, s_next)) / 2
            x = x_next
        return x, nfe
