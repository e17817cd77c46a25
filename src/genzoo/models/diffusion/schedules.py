"""Noise schedules and the Gaussian diffusion process as plain math (no nn, no state).

Conventions, once:
- Time steps are 0-based: t = 0..T-1 here is the lecture's t = 1..T. beta[t] is the variance
  added by step t, alpha_bar[t] = prod_{s <= t} (1 - beta[s]), and alpha_bar_prev[t] =
  alpha_bar[t-1] with alpha_bar_prev[0] = 1 (x_{-1} here is the data x_0 of the lecture).
- Tensors live in model space: level k of K maps to 2k/(K-1) - 1 in [-1, 1].
- Every per-step coefficient is gathered at t (B,) and shaped (B, 1, ..., 1) to broadcast
  against x; likelihood terms are in nats.

Ho et al. 2020, "Denoising Diffusion Probabilistic Models" (DDPM); Nichol & Dhariwal 2021,
"Improved Denoising Diffusion Probabilistic Models" (cosine schedule, learned variance).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ...functional import float32


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """beta_t rising linearly from beta_start to beta_end over T steps (float64).  Ho et al. 2020, section 4."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """beta_t = 1 - abar_t / abar_t-1 with abar(u) = cos^2((u/T + s) / (1 + s) * pi/2), clipped at max_beta.

    Nichol & Dhariwal 2021, eq. 17.
    """
    u = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - f[1:] / f[:-1]).clamp(max=max_beta)


def make_betas(schedule: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """The named schedule: "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)."""
    if schedule == "linear":
        return linear_betas(timesteps, beta_start, beta_end)
    if schedule == "cosine":
        return cosine_betas(timesteps)
    raise ValueError(f"unknown schedule {schedule!r}; choose linear or cosine")


def alpha_bar_of(betas: Tensor) -> Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s)."""
    return torch.cumprod(1 - betas, dim=0)


def alpha_bar_prev_of(alpha_bar: Tensor) -> Tensor:
    """alpha_bar_{t-1}, with 1 at t = 0."""
    return torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])


def gather(a: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """a[t] as (B, 1, ..., 1) in x's dtype, to broadcast against x (B, ...)."""
    assert t.ndim == 1 and t.shape[0] == x.shape[0], f"t must be (B,) with B = {x.shape[0]}, got {tuple(t.shape)}"
    return a.to(x.device)[t.to(x.device)].to(x.dtype).view(-1, *[1] * (x.ndim - 1))


def posterior_variance_of(betas: Tensor) -> Tensor:
    """beta-tilde_t = (1 - abar_t-1) / (1 - abar_t) beta_t, the variance of q(x_t-1 | x_t, x_0); 0 at t = 0.

    Ho et al. 2020, eq. 7.
    """
    abar = alpha_bar_of(betas)
    return betas * (1 - alpha_bar_prev_of(abar)) / (1 - abar)


def clipped_log(variance: Tensor) -> Tensor:
    """log of a per-step variance whose entry 0 (zero for beta-tilde) is replaced by entry 1.

    The reverse step from t = 0 goes to the discrete decoder, which needs a positive width.
    """
    return torch.log(torch.cat([variance[1:2], variance[1:]]))


# -- the forward process ----------------------------------------------------------------------

def q_sample(alpha_bar: Tensor, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I).  Ho et al. 2020, eq. 4."""
    abar = gather(alpha_bar, t, x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def q_step(betas: Tensor, x_prev: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_t ~ q(x_t | x_t-1) = N(sqrt(1 - beta_t) x_t-1, beta_t I).  Ho et al. 2020, eq. 2."""
    beta = gather(betas, t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * eps


def q_posterior(betas: Tensor, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_t-1 | x_t, x_0) = N(mu-tilde_t, beta-tilde_t I).  Ho et al. 2020, eq. 6-7.

        mu-tilde_t = sqrt(abar_t-1) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_t-1) / (1 - abar_t) x_t
    At t = 0 the coefficients are 1 and 0 and the variance is 0: the posterior is x_0 itself.
    The variance is (B, 1, ..., 1) and broadcasts against x.
    """
    abar = alpha_bar_of(betas)
    abar_prev = alpha_bar_prev_of(abar)
    coef_x0 = gather(abar_prev.sqrt() * betas / (1 - abar), t, x0)
    coef_xt = gather((1 - betas).sqrt() * (1 - abar_prev) / (1 - abar), t, x0)
    variance = gather(posterior_variance_of(betas), t, x0)
    return coef_x0 * x0 + coef_xt * xt, variance


def predict_x0_from_eps(alpha_bar: Tensor, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), eq. 4 solved for x_0."""
    abar = gather(alpha_bar, t, xt)
    return (xt - (1 - abar).sqrt() * eps) / abar.sqrt()


def predict_eps_from_x0(alpha_bar: Tensor, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t), eq. 4 solved for eps."""
    abar = gather(alpha_bar, t, xt)
    return (xt - abar.sqrt() * x0) / (1 - abar).sqrt()


# -- likelihood terms -------------------------------------------------------------------------

@float32
def normal_kl(mean1: Tensor, log_var1: Tensor, mean2: Tensor, log_var2: Tensor) -> Tensor:
    """KL(N(mean1, exp(log_var1)) || N(mean2, exp(log_var2))) elementwise, in nats."""
    return 0.5 * (-1.0 + log_var2 - log_var1 + torch.exp(log_var1 - log_var2)
                  + (mean1 - mean2) ** 2 * torch.exp(-log_var2))


def _log_sub_exp(a: Tensor, b: Tensor) -> Tensor:
    """log(exp(a) - exp(b)) for a >= b, stable."""
    tiny = torch.finfo(a.dtype).tiny
    return a + torch.log((-torch.expm1((b - a).clamp(max=0.0))).clamp_min(tiny))


@float32
def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_var: Tensor, levels: int) -> Tensor:
    """log P(x) of levels x (in model space [-1, 1]) under N(mean, exp(log_var)) binned, elementwise.

    Bin of level k: [x - h, x + h] with h = 1/(K-1), the first bin extended to -inf and the last
    to +inf, so the K probabilities sum to 1.  Ho et al. 2020, eq. 13 (there K = 256).
    """
    std = torch.exp(0.5 * log_var)
    h = 1.0 / (levels - 1)
    z_hi = (x + h - mean) / std
    z_lo = (x - h - mean) / std
    lower_edge = x < -1 + h / 2
    upper_edge = x > 1 - h / 2
    # Middle bins: Phi(z_hi) - Phi(z_lo), taken in whichever tail keeps precision.
    flip = z_lo > 0
    a = torch.where(flip, torch.special.log_ndtr(-z_lo), torch.special.log_ndtr(z_hi))
    b = torch.where(flip, torch.special.log_ndtr(-z_hi), torch.special.log_ndtr(z_lo))
    middle = _log_sub_exp(a, b)
    out = torch.where(lower_edge, torch.special.log_ndtr(z_hi),
                      torch.where(upper_edge, torch.special.log_ndtr(-z_lo), middle))
    return out
