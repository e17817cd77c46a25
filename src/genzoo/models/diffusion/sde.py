"""Score-based generative modelling through SDEs (Song et al. 2021), continuous time t in [0, 1].

Forward SDE dx = f(x, t) dt + g(t) dw with Gaussian marginals p_t(x_t | x_0) = N(m(t) x_0, s(t)^2 I):
    VP: f = -beta(t) x / 2, g^2 = beta(t), beta(t) = beta_min + t (beta_max - beta_min),
        m(t) = exp(-t^2 (beta_max - beta_min) / 4 - t beta_min / 2), s(t)^2 = 1 - m(t)^2.
    VE: f = 0, sigma(t) = sigma_min (sigma_max / sigma_min)^t, g^2 = d sigma^2 / dt, m = 1, s = sigma(t).
Reverse-time SDE   dx = [f - g^2 score] dt + g dw-bar          (Song et al. eq. 6)
Probability flow   dx/dt = f - g^2 score / 2                    (eq. 13), same marginals, invertible,
so   log p_0(x(0)) = log p_1(x(1)) + int_0^1 div(f - g^2 score / 2) dt   (instantaneous change of
variables, Chen et al. 2018), with the divergence exact (D backward passes) or by Hutchinson's
estimator E[v^T J v] (Grathwohl et al. 2019).

The network predicts the noise: score(x, t) = -eps_theta(x / sqrt(m^2 + s^2), 999 t) / s(t), trained
by denoising score matching with lambda(t) = s(t)^2 (Song et al. eq. 7), which is the eps MSE.
Data are dequantized uniformly within bins of width 2/(K-1) around the levels 2k/(K-1) - 1, so the
ODE density gives a lower bound on the discrete probability: log P(x) >= E_u[log p(x + u)] + D log(2/(K-1)).
The integrators (fixed-step RK4, adaptive Dormand-Prince RK45) and the divergences are in ode.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...data.spec import DataSpec
from ...data.transforms import from_centered, to_centered
from ...errors import GenzooError
from ...functional import standard_normal_log_prob
from ...nn.unet import UNet
from ..base import LikelihoodModel, LogLikelihood, check_positive, check_range
from .ddpm import check_unet_fields
from .ode import METHODS, divergence_exact, divergence_hutchinson, rk4, rk45

ScoreFn = Callable[[Tensor, Tensor], Tensor]
SDE_SAMPLERS = ("pc", "em", "ode")
DIVERGENCES = ("auto", "exact", "hutchinson")


# -- the SDEs (plain math) --------------------------------------------------------------------

def _col(v: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) in x's dtype."""
    return v.to(x.dtype).view(-1, *[1] * (x.ndim - 1))


@dataclass(frozen=True)
class VPSDE:
    """Variance-preserving SDE, the continuous limit of DDPM.  Song et al. 2021, eq. 11."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(m(t), s(t)) with p_t(x_t | x_0) = N(m x_0, s^2 I)."""
        log_m = -0.25 * t ** 2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        return torch.exp(log_m), torch.sqrt(-torch.expm1(2 * log_m))

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return -0.5 * _col(self.beta(t), x) * x

    def g2(self, t: Tensor) -> Tensor:
        """g(t)^2, (B,)."""
        return self.beta(t)

    def prior_std(self) -> float:
        return 1.0

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) summed over dimensions, (B,)."""
        return standard_normal_log_prob(z)


@dataclass(frozen=True)
class VESDE:
    """Variance-exploding SDE, the continuous limit of NCSN.  Song et al. 2021, eq. 9."""

    sigma_min: float = 0.01
    sigma_max: float = 20.0

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        return torch.ones_like(t), self.sigma(t)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    def g2(self, t: Tensor) -> Tensor:
        return self.sigma(t) ** 2 * 2 * math.log(self.sigma_max / self.sigma_min)

    def prior_std(self) -> float:
        return self.sigma_max

    def prior_log_prob(self, z: Tensor) -> Tensor:
        D = z[0].numel()
        s = self.sigma_max
        return -0.5 * (z.flatten(1) ** 2).sum(1) / s ** 2 - D * math.log(s) - 0.5 * D * math.log(2 * math.pi)


SDE = VPSDE | VESDE


def probability_flow(sde: SDE, score_fn: ScoreFn, x: Tensor, t: Tensor) -> Tensor:
    """dx/dt = f(x, t) - g(t)^2 score(x, t) / 2.  Song et al. 2021, eq. 13."""
    return sde.drift(x, t) - 0.5 * _col(sde.g2(t), x) * score_fn(x, t)


# -- likelihood and samplers --------------------------------------------------------------------

def ode_log_likelihood(sde: SDE, score_fn: ScoreFn, x: Tensor, t0: float = 1e-5, t1: float = 1.0,
                       divergence: str = "exact", method: str = "rk45", steps: int = 100,
                       rtol: float = 1e-5, atol: float = 1e-5,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, int]:
    """log p_t0(x) (B,) of continuous x under the probability-flow ODE, the latent x(t1), and evaluations.

    Integrates d[x, delta]/dt = [f~(x, t), div f~(x, t)] from t0 to t1; log p_t0(x) = log p_t1(x(t1)) + delta.
    divergence "exact" or "hutchinson" (one Rademacher v per image, fixed over the solve).
    """
    if divergence not in ("exact", "hutchinson"):
        raise GenzooError(f"divergence must be exact or hutchinson, got {divergence!r}.")
    if method not in METHODS:
        raise GenzooError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
    shape, B, D = x.shape, x.shape[0], x[0].numel()
    v = None
    if divergence == "hutchinson":
        v = torch.randint(0, 2, shape, generator=generator, device=x.device).to(x.dtype) * 2 - 1

    def f(t: float, y: Tensor) -> Tensor:
        with torch.enable_grad():
            xs = y[:, :D].reshape(shape).detach().requires_grad_(True)
            tt = torch.full((B,), t, dtype=x.dtype, device=x.device)
            dx = probability_flow(sde, score_fn, xs, tt)
            div = divergence_exact(dx, xs) if v is None else divergence_hutchinson(dx, xs, v)
        return torch.cat([dx.detach().flatten(1), div.detach()[:, None]], dim=1)

    y0 = torch.cat([x.detach().flatten(1), torch.zeros(B, 1, dtype=x.dtype, device=x.device)], dim=1)
    if method == "rk4":
        y1, evals = rk4(f, y0, t0, t1, steps)
    else:
        y1, evals = rk45(f, y0, t0, t1, rtol, atol)
    z = y1[:, :D].reshape(shape)
    return sde.prior_log_prob(z) + y1[:, D], z, evals


@torch.no_grad()
def pc_sample(sde: SDE, score_fn: ScoreFn, shape: tuple[int, ...], steps: int, eps: float = 1e-3,
              snr: float = 0.16, corrector_steps: int = 1, generator: torch.Generator | None = None,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Predictor-corrector sampling from x(1) ~ prior on the grid t_i = linspace(1, eps, steps).

    Corrector (Langevin, Song et al. algorithm 4-5), corrector_steps times: x += a s + sqrt(2a) z with
    a = 2 alpha (snr ||z|| / ||s||)^2, norms averaged over the batch, alpha = exp(-beta(t) dt) for VP
    (1 - beta_i of the discrete chain), 1 for VE.
    Predictor (reverse-time Euler-Maruyama): x_mean = x - [f - g^2 s] dt, x = x_mean + g sqrt(dt) z.
    The last step returns x_mean (no noise). corrector_steps = 0 is plain Euler-Maruyama.
    """
    n = shape[0]
    x = torch.randn(shape, generator=generator, device=device, dtype=dtype) * sde.prior_std()
    ts = torch.linspace(1.0, eps, steps, dtype=torch.float64)
    dt = (1.0 - eps) / steps
    for i in tqdm(range(steps), desc="pc", leave=False, disable=None):
        t = torch.full((n,), float(ts[i]), device=device, dtype=dtype)
        for _ in range(corrector_steps):
            s = score_fn(x, t)
            z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
            alpha = math.exp(-float(sde.beta(ts[i])) * dt) if isinstance(sde, VPSDE) else 1.0
            # norms averaged over the batch, as in Song et al.'s code: per-image norms of a
            # low-dimensional x make the step explode wherever the score happens to be near 0
            ratio = z.flatten(1).norm(dim=1).mean() / s.flatten(1).norm(dim=1).mean().clamp_min(1e-12)
            a = 2 * alpha * (snr * ratio) ** 2
            x = x + a * s + (2 * a).sqrt() * z
        g2 = _col(sde.g2(t), x)
        x_mean = x - (sde.drift(x, t) - g2 * score_fn(x, t)) * dt
        if i == steps - 1:
            return x_mean
        x = x_mean + (g2 * dt).sqrt() * torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return x


@torch.no_grad()
def ode_sample(sde: SDE, score_fn: ScoreFn, shape: tuple[int, ...], eps: float = 1e-3, method: str = "rk45",
               steps: int = 100, rtol: float = 1e-5, atol: float = 1e-5, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """x(1) ~ prior, then the probability-flow ODE from t = 1 back to t = eps (deterministic given x(1))."""
    n = shape[0]
    x1 = torch.randn(shape, generator=generator, device=device, dtype=dtype) * sde.prior_std()

    def f(t: float, y: Tensor) -> Tensor:
        tt = torch.full((n,), t, device=device, dtype=dtype)
        return probability_flow(sde, score_fn, y.view(shape), tt).flatten(1)

    if method == "rk4":
        y, _ = rk4(f, x1.flatten(1), 1.0, eps, steps)
    else:
        y, _ = rk45(f, x1.flatten(1), 1.0, eps, rtol, atol)
    return y.view(shape)


# -- the model --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScoreSDEConfig:
    """sde: "vp" (beta_min, beta_max) or "ve" (sigma_min, sigma_max); t_min: the smallest time trained
    and integrated from (eps in Song et al.); sample_steps: default steps of the pc/em samplers."""

    sde: str = "vp"
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 20.0
    t_min: float = 1e-5
    sample_eps: float = 1e-3
    sample_steps: int = 1000
    exact_divergence_max_dims: int = 16
    validation_steps: int = 10
    ode_rtol: float = 1e-5
    ode_atol: float = 1e-5
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (4,)
    num_heads: int = 1
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.sde not in ("vp", "ve"):
            raise GenzooError(f"sde must be vp or ve, got {self.sde!r}.")
        for name in ("beta_min", "beta_max", "sigma_min", "sigma_max", "sample_steps", "validation_steps",
                     "base_channels", "num_res_blocks", "num_heads", "ode_rtol", "ode_atol"):
            check_positive(getattr(self, name), name)
        check_positive(self.exact_divergence_max_dims, "exact_divergence_max_dims", allow_zero=True)
        if self.beta_max <= self.beta_min:
            raise GenzooError(f"beta_max must exceed beta_min, got {self.beta_max} <= {self.beta_min}.")
        if self.sigma_max <= self.sigma_min:
            raise GenzooError(f"sigma_max must exceed sigma_min, got {self.sigma_max} <= {self.sigma_min}.")
        check_range(self.t_min, "t_min", 1e-8, 0.5)
        check_range(self.sample_eps, "sample_eps", 1e-8, 0.5)
        check_unet_fields(self)


class ScoreSDE(LikelihoodModel):
    """Score-based model with a VP or VE SDE, a predictor-corrector sampler and ODE likelihoods."""

    name = "score-sde"
    Config = ScoreSDEConfig
    loss_unit: ClassVar[str] = "squared error of the predicted noise per dimension (denoising score matching)"
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 2000, "batch_size": 64, "lr": 2e-3, "warmup_steps": 100,
                                                "ema_decay": 0.995, "eval_every": 500}
    # training's sample grids: the probability-flow ODE by RK4 in 100 steps, not sample_steps PC steps
    quick_sample_options: ClassVar[dict[str, Any]] = {"sampler": "ode", "method": "rk4"}

    def __init__(self, spec: DataSpec, config: ScoreSDEConfig) -> None:
        super().__init__(spec, config)
        C = spec.channels
        self.net = UNet(C, C, min(spec.height, spec.width), config.base_channels, config.channel_mults,
                        config.num_res_blocks, config.attention_resolutions, config.dropout, config.num_heads)
        self.sde: SDE = (VPSDE(config.beta_min, config.beta_max) if config.sde == "vp"
                         else VESDE(config.sigma_min, config.sigma_max))

    @property
    def bin_width(self) -> float:
        """Width of a level's bin in model space, 2/(K-1)."""
        return 2.0 / (self.spec.levels - 1)

    def _dtype(self) -> torch.dtype:
        return self.net.conv_in.weight.dtype

    def dequantize(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Levels -> 2k/(K-1) - 1 + u, u ~ U(-w/2, w/2) with w the bin width."""
        centre = to_centered(x, self.spec.levels, dtype=self._dtype())
        u = torch.rand(x.shape, generator=generator, dtype=centre.dtype, device=x.device) - 0.5
        return centre + u * self.bin_width

    def eps_pred(self, xt: Tensor, t: Tensor) -> Tensor:
        """eps_theta(x_t, t): the network on x_t / sqrt(m^2 + s^2) (unit scale) and time 999 t."""
        m, s = self.sde.marginal(t)
        c_in = _col((m ** 2 + s ** 2).rsqrt(), xt)
        return self.net(xt * c_in, 999.0 * t.to(xt.dtype))

    def score(self, xt: Tensor, t: Tensor) -> Tensor:
        """s_theta(x_t, t) = -eps_theta(x_t, t) / s(t), approximating grad log p_t(x_t)."""
        _, s = self.sde.marginal(t)
        return -self.eps_pred(xt, t) / _col(s, xt)

    def loss(self, x: Tensor) -> Tensor:
        """Denoising score matching with lambda(t) = s(t)^2, which is the mean squared error of the
        noise, E ||eps_theta(x_t, t) - eps||^2 / D (a squared error per dimension, not a likelihood),
        batch mean over one t ~ U(t_min, 1) and one eps per image."""
        x = self.check_input(x)
        x0 = self.dequantize(x)
        B = x0.shape[0]
        t = torch.rand(B, dtype=x0.dtype, device=x0.device) * (1 - self.config.t_min) + self.config.t_min
        eps = torch.randn_like(x0)
        m, s = self.sde.marginal(t)
        xt = _col(m, x0) * x0 + _col(s, x0) * eps
        return (self.eps_pred(xt, t) - eps).pow(2).mean()

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None, divergence: str = "auto",
                       method: str = "rk45", steps: int = 100, rtol: float | None = None,
                       atol: float | None = None) -> LogLikelihood:
        """Lower bound on log P(x) in nats (B,): uniform dequantization and the probability-flow ODE.

        log P(x) >= log p_eps(x + u) + D log(2/(K-1)), u uniform in the bin, one draw per image.
        divergence "auto" is exact for at most exact_divergence_max_dims dimensions, else Hutchinson's
        (unbiased for the bound's integrand); method "rk45" (adaptive, rtol/atol, by default the
        config's ode_rtol/ode_atol) or "rk4" (`steps`).
        """
        x = self.check_input(x)
        rtol = self.config.ode_rtol if rtol is None else rtol
        atol = self.config.ode_atol if atol is None else atol
        if divergence not in DIVERGENCES:
            raise GenzooError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}.")
        if divergence == "auto":
            divergence = "exact" if self.spec.dims <= self.config.exact_divergence_max_dims else "hutchinson"
        was_training = self.training
        self.eval()
        try:
            y = self.dequantize(x, generator)
            log_p, _, _ = ode_log_likelihood(self.sde, self.score, y, self.config.t_min, 1.0, divergence, method,
                                             steps, rtol, atol, generator)
        finally:
            self.train(was_training)
        return LogLikelihood(log_p + self.spec.dims * math.log(self.bin_width), "lower_bound")

    @torch.no_grad()
    def validation_nats(self, x: Tensor) -> LogLikelihood:
        """A cheap estimate of log_likelihood, nats per image (B,), kind "lower_bound": one
        dequantization draw, the probability-flow ODE by RK4 with validation_steps steps and
        Hutchinson's divergence, generator seeded 0."""
        generator = torch.Generator(device=self.device).manual_seed(0)
        return self.log_likelihood(x, generator, divergence="hutchinson", method="rk4",
                                   steps=self.config.validation_steps)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, sampler: str = "pc", steps: Optional[int] = None,
               snr: float = 0.16, corrector_steps: int = 1, method: str = "rk45", rtol: float = 1e-5,
               atol: float = 1e-5) -> Tensor:
        """n images (n, C, H, W) int64.

        sampler "pc": predictor-corrector (reverse Euler-Maruyama + Langevin, `snr`, `corrector_steps`)
        over `steps` (default sample_steps); "em": Euler-Maruyama alone; "ode": the probability-flow
        ODE with method "rk45" (rtol, atol) or "rk4" (`steps`, default 100).
        """
        n = self.check_n(n)
        if sampler not in SDE_SAMPLERS:
            raise GenzooError(f"unknown sampler {sampler!r}; choose one of {', '.join(SDE_SAMPLERS)}.")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise GenzooError(f"steps must be a positive integer, got {steps!r}.")
        if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
            raise GenzooError(f"corrector_steps must be a non-negative integer, got {corrector_steps!r}.")
        if not isinstance(snr, (int, float)) or snr <= 0:
            raise GenzooError(f"snr must be a positive number, got {snr!r}.")
        if method not in METHODS:
            raise GenzooError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
        shape = (n, *self.spec.shape)
        kwargs = dict(generator=generator, device=self.device, dtype=self._dtype())
        was_training = self.training
        self.eval()
        try:
            if sampler == "ode":
                y = ode_sample(self.sde, self.score, shape, self.config.sample_eps, method, steps or 100, rtol, atol, **kwargs)
            else:
                y = pc_sample(self.sde, self.score, shape, steps or self.config.sample_steps, self.config.sample_eps,
                              snr, corrector_steps if sampler == "pc" else 0, **kwargs)
        finally:
            self.train(was_training)
        return from_centered(y, self.spec.levels)
