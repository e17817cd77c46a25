"""The sampler menu of every diffusion and continuous-time model, each returning (x, NFE).

NFE is the number of network evaluations per image batch (classifier-free guidance counts two).
Names, and the models each applies to:
    ancestral      discrete-time diffusion: x_t-1 ~ p(x_t-1 | x_t)               Ho et al. 2020, alg. 2
    ddim           discrete-time diffusion, noise scale eta                     Song, Meng & Ermon 2021
    euler          every model with a probability-flow ODE
    heun           every model with a probability-flow ODE                      Karras et al. 2022, alg. 1
    dpm-solver++   noise- or x_0-predicting models (2M, multistep)              Lu et al. 2022, alg. 2
    pc, ode        score models: predictor-corrector and the adaptive ODE        (sde.py; flow matching has ode too)

The discrete-time loops (ancestral, ddim) take the process (`GaussianDiffusion`) and the network,
run over 0-based time steps, draw x_T ~ N(0, I) and every later noise from the explicit
`generator`, one (shape)-sized draw per noisy step in order, and no noise on the step into x_0.

The ODE solvers (euler, heun) integrate dx/ds = f(x, i) over a grid s_0, ..., s_N, where f is given
the grid index i and is only ever evaluated at grid points. A Gaussian-path model
x = alpha_i x_0 + sigma_i eps gives them Karras et al.'s form: x~ = x / alpha, s = sigma / alpha and
dx~/ds = (x~ - D(x, i)) / s with D the model's x_0 prediction (`scaled_ode`). DPM-Solver++ takes D
and the (alpha_i, sigma_i) grid directly. All are deterministic given the starting noise. On
discrete-time and score models, heun and dpm-solver++ take their grid of noise levels from GRID_RHO.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import GenzooError
from ..helpers import Callback, report_step
from .schedules import predict_eps_from_x0

Net = Callable[[Tensor, Tensor], Tensor]
GridFn = Callable[[Tensor, int], Tensor]
Sampled = tuple[Tensor, int]
MENU = ("ancestral", "ddim", "euler", "heun", "dpm-solver++", "pc", "ode")


def check_sampler(sampler: str, available: Sequence[str]) -> None:
    """One sentence unless `sampler` is one of the samplers that apply to this model."""
    if sampler not in available:
        what = "does not apply to this model" if sampler in MENU else "is not a sampler"
        raise GenzooError(f"sampler {sampler!r} {what}; choose one of {', '.join(available)}.")


def check_steps(steps: object, most: float = math.inf) -> None:
    """One sentence unless `steps` is None or a positive integer (at most `most`)."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= most):
        bound = "" if most == math.inf else f" of at most {most}"
        raise GenzooError(f"steps must be a positive integer{bound}, got {steps!r}.")


# -- ODE solvers on a grid ------------------------------------------------------------------------

def euler(f: GridFn, x: Tensor, s: Sequence[float]) -> Sampled:
    """x_{i+1} = x_i + (s_{i+1} - s_i) f(x_i, i): first order, one evaluation per step."""
    for i in range(len(s) - 1):
        x = x + (s[i + 1] - s[i]) * f(x, i)
    return x, len(s) - 1


def heun(f: GridFn, x: Tensor, s: Sequence[float], correct_last: bool = True) -> Sampled:
    """Heun's second-order method (the trapezoid rule with an Euler predictor):
        d = f(x_i, i),  x' = x_i + h d,  x_{i+1} = x_i + h (d + f(x', i+1)) / 2,   h = s_{i+1} - s_i.
    Without `correct_last` the last step is Euler's (f is singular at the end of a diffusion's grid,
    sigma = 0).  Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
    Models", algorithm 1 (S_churn = 0).
    """
    nfe, n = 0, len(s) - 1
    for i in range(n):
        h = s[i + 1] - s[i]
        d = f(x, i)
        x_next = x + h * d
        nfe += 1
        if correct_last or i < n - 1:
            x_next = x + h * (d + f(x_next, i + 1)) / 2
            nfe += 1
        x = x_next
    return x, nfe


def scaled_ode(x0_fn: GridFn, alphas: Sequence[float], sigmas: Sequence[float]) -> tuple[GridFn, list[float]]:
    """(f, s) for the probability-flow ODE of x = alpha x_0 + sigma eps in Karras et al.'s variables:
    x~ = x / alpha, s = sigma / alpha, dx~/ds = (x~ - D(alpha x~, i)) / s (their eq. 4 with s(t) = 1),
    where x0_fn(x, i) = D is the model's x_0 prediction at grid point i. Solve for x~, then x = alpha x~."""
    s = [sg / a for a, sg in zip(alphas, sigmas)]

    def f(x_scaled: Tensor, i: int) -> Tensor:
        return (x_scaled - x0_fn(alphas[i] * x_scaled, i)) / s[i]

    return f, s


def dpm_solver_pp_2m(x0_fn: GridFn, x: Tensor, alphas: Sequence[float], sigmas: Sequence[float]) -> Sampled:
    """DPM-Solver++(2M) over a grid of (alpha_i, sigma_i), lambda = log(alpha / sigma) rising:
        x_{i+1} = (sigma_{i+1} / sigma_i) x_i + (alpha_{i+1} - alpha_i sigma_{i+1} / sigma_i) D_i'
        D_i' = (1 + 1 / (2 r)) D_i - D_{i-1} / (2 r),   r = h_{i-1} / h_i,   h_i = lambda_{i+1} - lambda_i,
    (alpha_{i+1} - alpha_i sigma_{i+1} / sigma_i is -alpha_{i+1} (e^-h - 1), kept finite where alpha_i = 0
    or sigma_{i+1} = 0). D_i' = D_i (first order, DDIM) on the first step and wherever an h is infinite.
    Lu et al. 2022, "DPM-Solver++", algorithm 2.
    """
    lam = [math.log(a / sg) if a > 0 and sg > 0 else (math.inf if sg == 0 else -math.inf)
           for a, sg in zip(alphas, sigmas)]
    prev, h_prev = None, math.inf
    for i in range(len(alphas) - 1):
        d = x0_fn(x, i)
        h = lam[i + 1] - lam[i]
        d_use = d
        if prev is not None and math.isfinite(h) and math.isfinite(h_prev):
            r = h_prev / h
            d_use = (1 + 1 / (2 * r)) * d - prev / (2 * r)
        ratio = sigmas[i + 1] / sigmas[i]
        x = ratio * x + (alphas[i + 1] - alphas[i] * ratio) * d_use
        prev, h_prev = d, h
    return x, len(alphas) - 1


def gaussian_path(sampler: str, x0_fn: GridFn, x: Tensor, alphas: Sequence[float], sigmas: Sequence[float]) -> Sampled:
    """`euler` or `heun` in Karras et al.'s variables (`scaled_ode`; a last step into sigma = 0 is
    Euler's), or `dpm-solver++`, from x at grid point 0 over the grid of (alpha_i, sigma_i)."""
    if sampler == "dpm-solver++":
        return dpm_solver_pp_2m(x0_fn, x, alphas, sigmas)
    assert sampler in ("euler", "heun") and alphas[0] > 0, f"no Gaussian-path sampler {sampler!r} from alpha = 0"
    f, s = scaled_ode(x0_fn, alphas, sigmas)
    y, nfe = euler(f, x / alphas[0], s) if sampler == "euler" else heun(f, x / alphas[0], s, sigmas[-1] > 0)
    return alphas[-1] * y, nfe


# -- time grids ----------------------------------------------------------------------------------

# The noise-level grid of the second-order solvers on discrete-time and score models, as rho of
# `karras_sigmas`: heun on Karras et al.'s rho = 7 (their table 1, for every model they sample),
# dpm-solver++ uniform in lambda (rho = inf), as Lu et al. 2022 sample with it. Every other
# sampler keeps steps evenly spaced in t (euler there is ddim with eta = 0; ancestral takes all).
GRID_RHO = {"heun": 7.0, "dpm-solver++": math.inf}


def karras_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float) -> list[float]:
    """n noise levels sigma = sigma_t / alpha_t from sigma_max down to sigma_min, both included:
        sigma_i = (sigma_max^(1/rho) + i / (n - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
    Karras et al. 2022, eq. 5 (rho = 7). rho = inf is its limit, sigma_i geometric, i.e. uniform in
    lambda = log(alpha / sigma) = -log sigma: Lu et al. 2022, "DPM-Solver", section 3.3."""
    assert n >= 1 and sigma_max >= sigma_min > 0 and rho > 0
    if n == 1:
        return [sigma_max]
    if math.isinf(rho):
        lo, hi = math.log(sigma_min), math.log(sigma_max)
        return [math.exp(hi + i / (n - 1) * (lo - hi)) for i in range(n)]
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(hi + i / (n - 1) * (lo - hi)) ** rho for i in range(n)]


def sigma_timesteps(alpha_bar: Tensor, steps: int, rho: float) -> list[int]:
    """`steps` distinct 0-based steps, ascending from 0 to T-1, each the step whose
    sigma_t = sqrt((1 - abar_t) / abar_t) is nearest in log to `karras_sigmas(sigma_T-1, sigma_0,
    steps, rho)`; where two would coincide (small sigma, few discrete steps) the later moves up one."""
    T = alpha_bar.shape[0]
    assert 1 <= steps <= T
    log_sigma = 0.5 * (torch.log1p(-alpha_bar.double()) - alpha_bar.double().log())  # rising in t
    targets = karras_sigmas(log_sigma[-1].exp().item(), log_sigma[0].exp().item(), steps, rho)[::-1]
    taus: list[int] = []
    for k, target in enumerate(targets):
        t = int((log_sigma - math.log(target)).abs().argmin())
        t = min(t, T - steps + k)  # leave room for the steps above
        taus.append(max(t, taus[-1] + 1) if taus else t)
    return taus


def sigma_times(sigma_of_t: Callable[[Tensor], Tensor], t_max: float, t_min: float, steps: int,
                rho: float) -> Tensor:
    """Times t_0 = t_max > ... > t_N-1 = t_min (float64) with sigma(t_i) = karras_sigmas(sigma(t_max),
    sigma(t_min), steps, rho)_i, for a continuous sigma(t) = s(t) / m(t) rising in t; by bisection."""
    ends = sigma_of_t(torch.tensor([t_max, t_min], dtype=torch.float64)).tolist()
    target = torch.tensor(karras_sigmas(ends[0], ends[1], steps, rho), dtype=torch.float64)
    lo, hi = torch.full_like(target, t_min), torch.full_like(target, t_max)
    for _ in range(100):
        mid = (lo + hi) / 2
        above = sigma_of_t(mid) > target
        lo, hi = torch.where(above, lo, mid), torch.where(above, mid, hi)
    t = (lo + hi) / 2
    t[0], t[-1] = t_max, t_min
    return t


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
              device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
              callback: Callback | None = None, start: tuple[Tensor, int] | None = None) -> Sampled:
    """x_T ~ N(0, I); x_t-1 = mu_theta(x_t, t) + sigma_t z for t = T-1..1; x_0 = mu_theta(x_1, 0);
    from `start` = (x_t0, t0) instead, when given, over t = t0..0 (SDEdit).

    Ho et al. 2020, algorithm 2, with sigma_t^2 from the process (beta-tilde, beta or learned).
    """
    x, top = (_noise(shape, generator, device, dtype), process.timesteps - 1) if start is None else start
    for t in tqdm(range(top, -1, -1), desc="ancestral", leave=False, disable=None):
        tt = torch.full((shape[0],), t, dtype=torch.long, device=x.device)
        pred = process.p_mean_variance(net, x, tt, clip=clip)
        x = pred["mean"]
        if t > 0:
            x = x + torch.exp(0.5 * pred["log_var"]) * _noise(shape, generator, device, dtype)
        report_step(callback, top + 1 - t, top + 1, x=x, x0=pred["x0"])
    return x, top + 1


@torch.no_grad()
def ddim(process, net: Net, shape: Sequence[int], timesteps: Sequence[int], eta: float = 0.0,
         generator: torch.Generator | None = None, clip: bool = True,
         device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
         callback: Callback | None = None, x: Tensor | None = None) -> Sampled:
    """DDIM over an ascending subsequence tau of 0-based steps, from x_T ~ N(0, I) (or `x`) at tau[-1].

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
    x = _noise(shape, generator, device, dtype) if x is None else x
    for i in tqdm(range(len(taus) - 1, -1, -1), desc="ddim", leave=False, disable=None):
        t = taus[i]
        tt = torch.full((shape[0],), t, dtype=torch.long, device=x.device)
        pred = process.p_mean_variance(net, x, tt, clip=clip)
        x0 = pred["x0"]
        if i == 0:
            report_step(callback, len(taus), len(taus), x=x0, x0=x0)
            return x0, len(taus)
        eps = predict_eps_from_x0(alpha_bar, x, tt, x0)
        abar_t = alpha_bar[t].item()
        abar_prev = alpha_bar[taus[i - 1]].item()
        sigma = eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
        x = abar_prev ** 0.5 * x0 + max(1 - abar_prev - sigma ** 2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * _noise(shape, generator, device, dtype)
        report_step(callback, len(taus) - i, len(taus), x=x, x0=x0)
    return x, len(taus)


DISCRETE = ("ancestral", "ddim", "euler", "heun", "dpm-solver++")


@torch.no_grad()
def discrete(process, net: Net, sampler: str, shape: Sequence[int], steps: int, eta: float = 0.0,
             generator: torch.Generator | None = None, clip: bool = True, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32, callback: Callback | None = None,
             start: tuple[Tensor, int] | None = None) -> Sampled:
    """Any sampler of DISCRETE for the discrete-time process, over `steps` steps (ancestral: all T):
    evenly spaced, or for heun and dpm-solver++ those of `sigma_timesteps` with GRID_RHO. The ODE
    samplers run on the grid (sqrt(abar_t), sqrt(1 - abar_t)) of those steps, from x_T ~ N(0, I), and
    end at (1, 0), the (clipped) x_0 prediction; euler there is ddim with eta = 0. `callback` sees x_t and
    the x_0 prediction after every step (ancestral, ddim) or network evaluation (the ODE samplers).
    `start` = (x_t0, t0) starts from a given x_t0 at step t0 instead of from noise at T-1 (SDEdit): the
    steps are then those of the same rule over 0..t0."""
    if sampler == "ancestral":
        return ancestral(process, net, shape, generator, clip=clip, device=device, dtype=dtype, callback=callback,
                         start=start)
    rho, top = GRID_RHO.get(sampler), process.timesteps if start is None else start[1] + 1
    steps = min(steps, top)
    taus = even_timesteps(top, steps) if rho is None else sigma_timesteps(process.alpha_bar[:top], steps, rho)
    x = _noise(shape, generator, device, dtype) if start is None else start[0]
    if sampler == "ddim":
        return ddim(process, net, shape, taus, eta, generator, clip=clip, device=device, dtype=dtype, callback=callback,
                    x=x)
    grid = taus[::-1]
    abar = process.alpha_bar
    alphas = [abar[t].sqrt().item() for t in grid] + [1.0]
    sigmas = [(1 - abar[t]).sqrt().item() for t in grid] + [0.0]

    def x0_fn(x: Tensor, i: int) -> Tensor:
        t = torch.full((shape[0],), grid[i], dtype=torch.long, device=x.device)
        return process.p_mean_variance(net, x, t, clip=clip)["x0"]

    planned = {"euler": len(grid), "heun": 2 * len(grid) - 1}.get(sampler, len(grid))
    return gaussian_path(sampler, reporting(x0_fn, callback, planned), x, alphas, sigmas)


def reporting(x0_fn: GridFn, callback: Callback | None, planned: int | None) -> GridFn:
    """`x0_fn` reporting every evaluation to `callback`: its input x_t and the x_0 prediction, the
    evaluations counted against the `planned` number (None where an adaptive solver decides)."""
    if callback is None:
        return x0_fn
    count = 0

    def fn(x: Tensor, i: int) -> Tensor:
        nonlocal count
        d = x0_fn(x, i)
        count += 1
        report_step(callback, count, planned, x=x, x0=d)
        return d

    return fn


# -- inpainting -------------------------------------------------------------------------------------

def repaint_levels(timesteps: int, jump_length: int, resamplings: int) -> list[int]:
    """The noise levels RePaint visits (Lugmayr et al. 2022, section 4.2), level L = 0 the data and L
    the state after L forward steps: from T down to 0, and at every level that is a multiple of
    `jump_length` (and at least `jump_length` below T) going back up `jump_length` levels,
    `resamplings` - 1 times; no level is above T. One resampling is plain replacement: T, T-1, ..., 0."""
    jumps = {level: resamplings - 1 for level in range(jump_length, timesteps - jump_length + 1, jump_length)}
    level, out = timesteps, [timesteps]
    while level > 0:
        level -= 1
        out.append(level)
        if jumps.get(level, 0) > 0:
            jumps[level] -= 1
            for _ in range(jump_length):
                level += 1
                out.append(level)
    return out
