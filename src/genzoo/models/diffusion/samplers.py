"""Samplers for the discrete-time Gaussian diffusion: ancestral (DDPM) and DDIM.

Stateless loops over 0-based time steps. Each takes the process (`GaussianDiffusion`: betas,
alpha_bar, p_mean_variance) and the network, draws x_T ~ N(0, I) and every later noise from the
explicit `generator`, one (shape)-sized draw per noisy step in order, and no noise on the step
into x_0; both return the final continuous x_0 in model space.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .schedules import predict_eps_from_x0

Net = Callable[[Tensor, Tensor], Tensor]


def even_timesteps(timesteps: int, steps: int) -> list[int]:
    """`steps` 0-based steps spread evenly over 0..T-1, ascending, always including T-1."""
    assert 1 <= steps <= timesteps
    if steps == 1:
        return [timesteps - 1]
    return sorted({round(i * (timesteps - 1) / (steps - 1)) for i in range(steps)})


def _noise(shape: Sequence[int], generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


@torch.no_grad()
def ancestral(process, net: Net, shape: Sequence[int], generator: torch.Generator | None = None, clip: bool = True,
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """x_T ~ N(0, I); x_t-1 = mu_theta(x_t, t) + sigma_t z for t = T-1..1; x_0 = mu_theta(x_1, 0).

    Ho et al. 2020, algorithm 2, with sigma_t^2 from the process (beta-tilde, beta or learned).
    """
    x = _noise(shape, generator, device, dtype)
    for t in tqdm(range(process.timesteps - 1, -1, -1), desc="ancestral", leave=False, disable=None):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=x.device)
        pred = process.p_mean_variance(net, x, tt, clip=clip)
        x = pred["mean"]
        if t > 0:
            x = x + torch.exp(0.5 * pred["log_var"]) * _noise(shape, generator, device, dtype)
    return x


@torch.no_grad()
def ddim(process, net: Net, shape: Sequence[int], timesteps: Sequence[int], eta: float = 0.0,
         generator: torch.Generator | None = None, clip: bool = True,
         device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """DDIM over an ascending subsequence tau of 0-based steps, from x_T ~ N(0, I) at tau[-1].

        x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z
        sigma  = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)
    with abar_prev = 1 after the first step tau[0] (the result is x0_hat), and eps_hat recomputed
    from the (clipped) x0_hat. eta = 0 is deterministic; eta = 1 over every step is DDPM's
    ancestral sampler with sigma_t^2 = beta-tilde_t.  Song, Meng & Ermon 2021, eq. 12 and 16.
    """
    taus = list(timesteps)
    assert taus and all(a < b for a, b in zip(taus, taus[1:])), "timesteps must be strictly increasing"
    assert 0 <= taus[0] and taus[-1] < process.timesteps
    alpha_bar = process.alpha_bar
    x = _noise(shape, generator, device, dtype)
    for i in tqdm(range(len(taus) - 1, -1, -1), desc="ddim", leave=False, disable=None):
        t = taus[i]
        tt = torch.full((shape[0],), t, dtype=torch.long, device=x.device)
        pred = process.p_mean_variance(net, x, tt, clip=clip)
        x0 = pred["x0"]
        if i == 0:
            return x0
        eps = predict_eps_from_x0(alpha_bar, x, tt, x0)
        abar_t = alpha_bar[t].item()
        abar_prev = alpha_bar[taus[i - 1]].item()
        sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
        x = abar_prev ** 0.5 * x0 + max(1 - abar_prev - sigma ** 2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * _noise(shape, generator, device, dtype)
    return x
