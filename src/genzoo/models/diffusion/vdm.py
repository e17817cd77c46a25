"""VDM: the variational diffusion model of Kingma et al. 2021, "Variational Diffusion Models", with a
learned noise schedule and the continuous-time bound on log P(x) of the discrete image.

The forward process is variance preserving, z_t = alpha_t x + sigma_t eps with
    alpha_t^2 = sigmoid(-gamma(t)),   sigma_t^2 = sigmoid(gamma(t)),   SNR(t) = exp(-gamma(t)),
x the levels centred in [-1, 1], t in [0, 1], and gamma = -log SNR rising in t:
    gamma(t) = gamma_0 + (gamma_1 - gamma_0) s(t),
s a monotone network normalised from 0 to 1 (nn/monotone.py), gamma_0 < gamma_1 learned. The
bound (their eq. 11, 17 and appendix), in nats per image:
    -log P(x) <= E_eps0[-log p(x | z_0)] + KL(q(z_1 | x) || N(0, I)) + L_inf(x)
    L_inf(x)  = 1/2 E_{t ~ U(0, 1), eps} [gamma'(t) ||eps - eps_hat(z_t, gamma(t))||^2]
    p(x | z_0) = prod_i softmax_k(-(z_0,i / alpha_0 - c_k)^2 / (2 exp(gamma_0)))[x_i]
over the K level centres c_k (z_0 / alpha_0 = x + exp(gamma_0 / 2) eps0). The network sees gamma,
not t, so that L_inf = 1/2 int_{gamma_0}^{gamma_1} E ||eps - eps_hat(z_gamma, gamma)||^2 dgamma:
its expectation depends on the schedule only through its end points. The end points are therefore
trained on the bound, and the shape s, on which the bound's expectation does not depend, to lower
the variance of its estimate: s's gradient is that of the mean squared estimate (their appendix I.2).
Each image's t is stratified over the batch, t_i = (u + i / B) mod 1. Fourier features
sin(2 pi z / p), cos(2 pi z / p) at periods p of one and two level bins join the network's input.
Samples: z_1 ~ N(0, I), then ancestral steps p(z_s | z_t) = q(z_s | z_t, x = x_hat), or the
probability-flow ODE (euler, heun, dpm-solver++), down to t = 0, and the decoder's most probable
level, the one nearest z_0 / alpha_0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.spec import DataSpec
from ...data.transforms import to_centered
from ...errors import GenzooError
from ...functional import float32, widen
from ...nn.monotone import MonotoneNet
from ..base import LogLikelihood
from ..helpers import Callback, check_positive, eval_mode, report_step
from .continuous import ContinuousTimeModel, UNetFields, build_unet
from .reverse import DiffusionModel, GaussianPath
from .samplers import GRID_RHO, Sampled, check_steps, gaussian_path, reporting, sigma_times
from .schedules import normal_kl

VDM_SAMPLERS = ("ancestral", "euler", "heun", "dpm-solver++")
SCHEDULES = ("learned", "linear")
DECODER_CHUNK = 1 << 22  # logits the decoder holds at once


@dataclass(frozen=True)
class VDMConfig(UNetFields):
    """The schedule (its end points, its shape), the input's Fourier features, the Monte-Carlo draws
    of the bound and the sampler's steps; the U-Net's fields are those of every diffusion model."""

    gamma_min: float = -13.3  # gamma(0) = -log SNR at t = 0 before training (learned with schedule "learned")
    gamma_max: float = 5.0  # gamma(1) before training; the U-Net sees gamma mapped from [gamma_min, gamma_max]
    schedule: str = "learned"  # learned: a monotone network and learned end points; linear: fixed, linear in t
    schedule_hidden: int = 1024  # sigmoid units of the monotone network of the learned schedule
    fourier_features: bool = True  # add sin and cos of the input at periods of one and two level bins
    likelihood_samples: int = 16  # draws of (t, eps) per image in log_likelihood, stratified in t
    validation_samples: int = 4  # draws per image of the validation estimate of the bound
    sample_steps: int = 100  # default steps of the samplers

    def __post_init__(self) -> None:
        super().__post_init__()
        if not -30.0 <= self.gamma_min < self.gamma_max <= 30.0:
            raise GenzooError(f"gamma_min and gamma_max must satisfy -30 <= gamma_min < gamma_max <= 30, "
                              f"got {self.gamma_min!r} and {self.gamma_max!r}.")
        if self.schedule not in SCHEDULES:
            raise GenzooError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}.")
        for name in ("schedule_hidden", "likelihood_samples", "validation_samples", "sample_steps"):
            check_positive(getattr(self, name), name)


class VDM(DiffusionModel):
    """Variational diffusion with a learned monotone noise schedule and the continuous-time bound."""

    name = "vdm"
    Config = VDMConfig
    loss_unit: ClassVar[str] = "bits per dimension: the bound's estimate at one stratified time per image"
    # 4000 steps: about 7.5 minutes on one core for digits (benchmarks/diffusion.py)
    train_defaults: ClassVar[dict[str, Any]] = {**ContinuousTimeModel.train_defaults, "steps": 4000}

    def __init__(self, spec: DataSpec, config: VDMConfig) -> None:
        super().__init__(spec, config)
        bins = 2.0 / (spec.levels - 1)
        self.periods = (bins, 2 * bins) if config.fourier_features else ()
        self.net = build_unet(spec, config, config.num_classes, spec.channels * (1 + 2 * len(self.periods)))
        self.shape_net: MonotoneNet | None = None
        if config.schedule == "learned":  # (gamma_0, log(gamma_1 - gamma_0)) and the shape
            self.ends = nn.Parameter(torch.tensor([config.gamma_min, math.log(config.gamma_max - config.gamma_min)]))
            self.shape_net = MonotoneNet(config.schedule_hidden)

    # -- the schedule ----------------------------------------------------------------------------
    def schedule_shape(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(s(t), s'(t)): the schedule's shape, rising from 0 to 1 (t itself when it is linear)."""
        if self.shape_net is None:
            return t, torch.ones_like(t)
        return self.shape_net.shape(t)

    def end_points(self) -> tuple[Tensor, Tensor]:
        """(gamma_0, gamma_1), gamma_1 > gamma_0 (the config's gamma_min and gamma_max when fixed)."""
        if self.shape_net is None:
            ends = torch.tensor([self.config.gamma_min, self.config.gamma_max], dtype=self._dtype(), device=self.device)
            return ends[0], ends[1]
        return self.ends[0], self.ends[0] + self.ends[1].exp()

    def gamma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(gamma(t), gamma'(t)) at times t in [0, 1]."""
        s, ds = self.schedule_shape(t)
        return self._gamma(s, ds)

    def _gamma(self, s: Tensor, ds: Tensor) -> tuple[Tensor, Tensor]:
        g0, g1 = self.end_points()
        return g0 + (g1 - g0) * s, (g1 - g0) * ds

    @staticmethod
    def alpha_sigma(gamma: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha, sigma) of the variance-preserving process at gamma = -log SNR."""
        return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()

    # -- the network -----------------------------------------------------------------------------
    def features(self, z: Tensor) -> Tensor:
        """z with its Fourier features sin(2 pi z / p), cos(2 pi z / p) as extra channels."""
        waves = [f(2 * math.pi / p * z) for p in self.periods for f in (torch.sin, torch.cos)]
        return torch.cat([z, *waves], 1) if waves else z

    def eps(self, z: Tensor, gamma: Tensor, labels: Tensor | None = None, guidance: float = 1.0) -> Tensor:
        """eps_hat(z, gamma), gamma (B,) mapped affinely from [gamma_min, gamma_max] to the U-Net's
        time index [0, 999]; with labels and guidance w != 1, u + w (c - u) (the null class gives u)."""
        lo, hi = self.config.gamma_min, self.config.gamma_max
        return self.net.guided(self.features(z), 999.0 * (gamma.to(z.dtype) - lo) / (hi - lo), labels, guidance)

    # -- the bound -------------------------------------------------------------------------------
    @float32
    def reconstruction(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """-log p(x | z_0) in nats per image (B,), one draw of z_0 ~ q(z_0 | x)."""
        g0, _ = self.end_points()
        centre = to_centered(x, self.spec.levels, dtype=g0.dtype)
        noise = torch.randn(centre.shape, generator=generator, device=centre.device, dtype=centre.dtype)
        z = (centre + (g0 / 2).exp() * noise).flatten()  # z_0 / alpha_0
        k = x.long().flatten()
        levels = torch.linspace(-1, 1, self.spec.levels, dtype=z.dtype, device=z.device)
        chunk = max(1, DECODER_CHUNK // self.spec.levels)  # values at a time: bounded memory at K = 256
        log_p = []
        for i in range(0, len(z), chunk):
            logits = -0.5 * ((z[i:i + chunk, None] - levels) * (-g0 / 2).exp()).pow(2)
            log_p.append(logits.log_softmax(-1).gather(-1, k[i:i + chunk, None]))
        return -torch.cat(log_p).view(len(x), -1).sum(1)

    @float32
    def prior_kl(self, x: Tensor) -> Tensor:
        """KL(q(z_1 | x) || N(0, I)) in nats per image (B,)."""
        _, g1 = self.end_points()
        centre = to_centered(x, self.spec.levels, dtype=g1.dtype)
        zero = torch.zeros_like(centre)
        return normal_kl(self.alpha_sigma(g1)[0] * centre, F.logsigmoid(g1).expand_as(centre), zero, zero).flatten(1).sum(1)

    def diffusion(self, x: Tensor, t: Tensor, labels: Tensor | None, generator: torch.Generator | None = None,
                  shape: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """1/2 gamma'(t) ||eps - eps_hat(z_t, gamma(t))||^2 in nats per image (B,), at times t (B,), one
        eps each: an unbiased estimate of L_inf(x) for t ~ U(0, 1). `shape`: (s(t), s'(t)) if computed."""
        centre = to_centered(x, self.spec.levels, dtype=self._dtype())
        g, dg = self._gamma(*(shape or self.schedule_shape(t.to(centre.dtype))))
        eps = torch.randn(centre.shape, generator=generator, device=centre.device, dtype=centre.dtype)
        col = (-1, *[1] * (centre.ndim - 1))
        alpha, sigma = self.alpha_sigma(g)
        z = alpha.view(col) * centre + sigma.view(col) * eps
        error = (eps - widen(self.eps(z, g, labels))).pow(2).flatten(1).sum(1)
        return 0.5 * dg * error

    def loss(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The bound's estimate in bits per dimension, batch mean, t stratified over the batch; labels
        dropped with label_dropout. The shape of a learned schedule receives the gradient of the
        mean squared diffusion estimate instead (see the module docstring)."""
        labels = self.check_labels(labels, x.shape[0])
        if self.training:
            labels = self.net.drop_labels(labels, self.config.label_dropout)
        B, per_dim = len(x), 1.0 / (self.spec.dims * math.log(2))
        t = (torch.rand((), device=x.device) + torch.arange(B, device=x.device) / B) % 1
        shape = self.schedule_shape(t.to(self._dtype()))
        diffusion = self.diffusion(x, t, labels, shape=shape)
        if self.shape_net is not None and shape[0].requires_grad:
            weight = 2 * diffusion.detach() * per_dim  # d(l^2) = 2 l dl, l the image's estimate in bits/dim
            for part in shape:
                part.register_hook(lambda grad, w=weight: grad * w.to(grad.dtype))
        return ((self.reconstruction(x) + self.prior_kl(x) + diffusion) * per_dim).mean()

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None,
                       samples: Optional[int] = None) -> LogLikelihood:
        """The bound on log P(x) (or log P(x | labels)) in nats (B,), kind "lower_bound": the
        reconstruction and L_inf averaged over `samples` draws per image (default likelihood_samples;
        times t_j = (u + j / samples) mod 1, u ~ U(0, 1) per image), the prior term exact."""
        labels = self.check_labels(labels, x.shape[0])
        S = self.config.likelihood_samples if samples is None else samples
        check_positive(S, "samples")
        with eval_mode(self):
            u = torch.rand(len(x), generator=generator, device=self.device, dtype=torch.float64)
            total = self.prior_kl(x).double()
            for j in range(S):
                t = (u + j / S) % 1
                total += (self.reconstruction(x, generator) + self.diffusion(x, t, labels, generator)).double() / S
        return LogLikelihood(-total, "lower_bound")

    @torch.no_grad()
    def validation_nats(self, x: Tensor, labels: Tensor | None = None) -> LogLikelihood:
        """log_likelihood with validation_samples draws per image and a generator seeded 0."""
        generator = torch.Generator(device=self.device).manual_seed(0)
        return self.log_likelihood(x, labels, generator, self.config.validation_samples)

    # -- synthesis (reverse.py) ------------------------------------------------------------------
    def reverse_process(self, labels: Tensor | None, guidance: float) -> VDMReverse:
        return VDMReverse(self, labels, guidance)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, sampler: str = "ancestral",
               steps: Optional[int] = None, label: Optional[int] = None, labels: Tensor | None = None,
               guidance: float = 1.0, callback: Callback | None = None) -> Tensor:
        """n images from z_1 ~ N(0, I): `sampler` ancestral (p(z_s | z_t) on `steps` equal steps of t,
        default sample_steps), euler (the probability-flow ODE on the same steps), heun (rho = 7 noise
        levels; two evaluations a step) or dpm-solver++ (even in log SNR), then the decoder's most
        probable level. A class-conditional model draws `label`, `labels` or the classes in turn, with
        classifier-free `guidance`. `callback` sees z_t and the predicted x at every evaluation."""
        check_steps(steps)
        process = self.reverse_process(self.classes_to_draw(n, label, labels, guidance), guidance)
        return self._sample(process, n, sampler, steps, generator, callback)

    @torch.no_grad()
    def edit(self, x: Tensor, strength: float, generator: torch.Generator | None = None, sampler: str = "ancestral",
             steps: Optional[int] = None, labels: Tensor | None = None, guidance: float = 1.0,
             callback: Callback | None = None) -> Tensor:
        """SDEdit: z_t ~ q(z_t | x) at t = strength, then `sampler` back to the data."""
        check_steps(steps)
        process = self.reverse_process(self.classes_to_draw(len(x), None, labels, guidance), guidance)
        return self._edit(process, x, strength, sampler, steps, generator, callback)


class VDMReverse(GaussianPath):
    """VDM's process as a `reverse.ReverseProcess`: alpha_t^2 = sigmoid(-gamma(t)), sigma_t^2 =
    sigmoid(gamma(t)), the prior N(0, I) at t = 1; the data at t = 0, where a step ends in
    z_0 / alpha_0, whose nearest level is the decoder's most probable one."""

    samplers = VDM_SAMPLERS
    top = 1.0

    def __init__(self, model: VDM, labels: Tensor | None, guidance: float) -> None:
        self.model, self.labels, self.guidance = model, labels, guidance
        self.evaluations = 2 if labels is not None and guidance != 1.0 else 1
        self.steps = model.config.sample_steps

    @torch.no_grad()
    def gammas(self, t: Sequence[float]) -> Tensor:
        return self.model.gamma(torch.tensor(list(t), dtype=self.model._dtype(), device=self.model.device))[0].double()

    def path(self, t: Sequence[float]) -> tuple[list[float], list[float]]:
        alphas, sigmas = VDM.alpha_sigma(self.gammas(t))
        return alphas.tolist(), sigmas.tolist()

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        alphas, sigmas = self.path([t])
        return alphas[0], sigmas[0]

    def denoise(self, x: Tensor, t: float) -> Tensor:
        g = self.gammas([t])
        alpha, sigma = (float(v) for v in VDM.alpha_sigma(g))
        eps = self.model.eps(x, g.to(x.dtype).expand(len(x)), self.labels, self.guidance)
        return (x - sigma * eps) / alpha

    def posterior(self, x: Tensor, d: Tensor, t: float, s: float, generator: torch.Generator | None) -> Tensor:
        z = super().posterior(x, d, t, s, generator)
        return z / self.alpha_sigma(0.0)[0] if s == 0 else z

    def prior(self, shape: Sequence[int], generator: torch.Generator | None) -> Tensor:
        return torch.randn(tuple(shape), generator=generator, device=self.model.device, dtype=self.model._dtype())

    def ladder(self, steps: int | None) -> list[float]:
        return torch.linspace(1.0, 0.0, (steps or self.steps) + 1, dtype=torch.float64).tolist()

    def strength_time(self, strength: float) -> float:
        return strength

    def run(self, sampler: str, x: Tensor, t: float, steps: int | None, generator: torch.Generator | None,
            callback: Callback | None) -> Sampled:
        """`sampler` from x at time t to the data (see VDM.sample): (z_0 / alpha_0, NFE)."""
        n = steps or self.steps
        if sampler in GRID_RHO:  # noise levels sigma / alpha = exp(gamma / 2) on Karras et al.'s grid
            times = sigma_times(lambda tt: (self.gammas(tt.tolist()) / 2).exp(), t, 0.0, n + 1,
                                GRID_RHO[sampler]).tolist()
        else:
            times = torch.linspace(t, 0.0, n + 1, dtype=torch.float64).tolist()
        if sampler == "ancestral":
            for i in range(n):
                d = self.denoise(x, times[i])
                report_step(callback, i + 1, n, x=x, x0=d)
                x = self.posterior(x, d, times[i], times[i + 1], generator)
            return x, n
        alphas, sigmas = self.path(times)
        planned = 2 * n if sampler == "heun" else n
        y, nfe = gaussian_path(sampler, reporting(lambda y, i: self.denoise(y, times[i]), callback, planned), x,
                               alphas, sigmas)
        return y / alphas[-1], nfe
