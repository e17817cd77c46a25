"""The stochastic differential equations of score-based models (Song et al. 2021) as math around a
score function: VP and VE SDEs with their Gaussian marginals, the probability-flow ODE and its
likelihood, and the predictor-corrector and ODE samplers (the equations are those of
genzoo.models.diffusion.sde's docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...functional import standard_normal_log_prob
from .ode import change_of_variables, rk4, rk45

ScoreFn = Callable[[Tensor, Tensor], Tensor]


# -- the SDEs (plain math) --------------------------------------------------------------------

def as_column(v: Tensor, x: Tensor) -> Tensor:
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
        return -0.5 * as_column(self.beta(t), x) * x

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
    return sde.drift(x, t) - 0.5 * as_column(sde.g2(t), x) * score_fn(x, t)


# -- likelihood and samplers --------------------------------------------------------------------

def ode_log_likelihood(sde: SDE, score_fn: ScoreFn, x: Tensor, t0: float = 1e-5, t1: float = 1.0,
                       divergence: str = "exact", method: str = "rk45", steps: int = 100,
                       rtol: float = 1e-5, atol: float = 1e-5,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, int]:
    """log p_t0(x) (B,) of continuous x under the probability-flow ODE, the latent x(t1), and evaluations:
    log p_t0(x) = log p_t1(x(t1)) + int_t0^t1 div f~ dt, by `change_of_variables` (ode.py)."""
    z, delta, evals = change_of_variables(lambda xs, tt: probability_flow(sde, score_fn, xs, tt), x, t0, t1,
                                          divergence, method, steps, rtol, atol, generator)
    return sde.prior_log_prob(z) + delta, z, evals


@torch.no_grad()
def pc_sample(sde: SDE, score_fn: ScoreFn, x: Tensor, steps: int, eps: float = 1e-3, snr: float = 0.16,
              corrector_steps: int = 1, generator: torch.Generator | None = None, t_max: float = 1.0) -> tuple[Tensor, int]:
    """(x, NFE): predictor-corrector sampling from x at t_max (x(1) ~ prior) on the grid t_i = linspace(t_max, eps, steps).

    Corrector (Langevin, Song et al. algorithm 4-5), corrector_steps times: x += a s + sqrt(2a) z with
    a = 2 alpha (snr ||z|| / ||s||)^2, norms averaged over the batch, alpha = exp(-beta(t) dt) for VP
    (1 - beta_i of the discrete chain), 1 for VE.
    Predictor (reverse-time Euler-Maruyama): x_mean = x - [f - g^2 s] dt, x = x_mean + g sqrt(dt) z.
    The last step returns x_mean (no noise). corrector_steps = 0 is plain Euler-Maruyama.
    """
    n, shape, device, dtype = len(x), tuple(x.shape), x.device, x.dtype
    ts = torch.linspace(t_max, eps, steps, dtype=torch.float64)
    dt = (t_max - eps) / steps
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
        g2 = as_column(sde.g2(t), x)
        x_mean = x - (sde.drift(x, t) - g2 * score_fn(x, t)) * dt
        if i == steps - 1:
            break
        x = x_mean + (g2 * dt).sqrt() * torch.randn(shape, generator=generator, device=device, dtype=dtype)
    return x_mean, steps * (corrector_steps + 1)


@torch.no_grad()
def ode_sample(sde: SDE, score_fn: ScoreFn, x: Tensor, eps: float = 1e-3, method: str = "rk45", steps: int = 100,
               rtol: float = 1e-5, atol: float = 1e-5, t_max: float = 1.0) -> tuple[Tensor, int]:
    """(x, NFE): the probability-flow ODE from x at t_max (x(1) ~ prior) back to t = eps (deterministic given x)."""
    n, shape, device, dtype = len(x), tuple(x.shape), x.device, x.dtype

    def f(t: float, y: Tensor) -> Tensor:
        tt = torch.full((n,), t, device=device, dtype=dtype)
        return probability_flow(sde, score_fn, y.view(shape), tt).flatten(1)

    if method == "rk4":
        y, nfe = rk4(f, x.flatten(1), t_max, eps, steps)
    else:
        y, nfe = rk45(f, x.flatten(1), t_max, eps, rtol, atol)
    return y.view(shape), nfe


# -- the model --------------------------------------------------------------------------------
