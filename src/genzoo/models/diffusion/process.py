"""The discrete-time Gaussian diffusion process as math around a network: the forward kernels, the
posterior q(x_t-1 | x_t, x_0), and the reverse process p(x_t-1 | x_t) of DDPM and Sohl-Dickstein 2015
(its mean from eps, or from a categorical over the data's levels; its variance fixed or learned).
The equations are those of genzoo.models.diffusion.ddpm's docstring; the samplers (samplers.py) and
the models take the process as it is, and `DiscreteReverse` is it as the one reverse-process
interface of reverse.py.
"""
from __future__ import annotations

import typing
from typing import Callable, Literal, Sequence

import torch
from torch import Tensor, nn

from ...errors import GenzooError
from ...functional import widen
from ..helpers import Callback
from .reverse import draw
from .samplers import DISCRETE, Sampled, discrete
from .schedules import (
    alpha_bar_of,
    clipped_log,
    discretized_gaussian_log_likelihood,
    gather,
    normal_kl,
    posterior_variance_of,
    predict_eps_from_x0,
    predict_x0_from_eps,
    q_posterior,
    q_sample,
)

Variance = Literal["fixed_small", "fixed_large", "learned"]
Prediction = Literal["eps", "levels"]
Objective = Literal["simple", "hybrid", "vlb"]
Schedule = Literal["linear", "cosine"]
VARIANCES, PREDICTIONS = typing.get_args(Variance), typing.get_args(Prediction)


class GaussianDiffusion(nn.Module):
    """The forward process and the Gaussian reverse process around a network, as math.

    Buffers are float64 and derived from the config (not saved): betas, alpha_bar, and the
    log-variances of the reverse step. `net(xt, t)` returns eps (C channels), or with
    prediction="levels" logits over the K levels (C * K channels, channel c * K + k), followed by
    the variance interpolation v in [-1, 1] (C more channels) when the variance is learned.
    """

    def __init__(self, betas: Tensor, variance: str, prediction: str, levels: int) -> None:
        super().__init__()
        assert variance in VARIANCES and prediction in PREDICTIONS and levels >= 2
        self.variance = variance
        self.prediction = prediction
        self.levels = levels
        self.register_buffer("betas", betas.double(), persistent=False)
        self.register_buffer("alpha_bar", alpha_bar_of(betas.double()), persistent=False)
        post_var = posterior_variance_of(betas.double())
        self.register_buffer("log_var_small", clipped_log(post_var), persistent=False)
        self.register_buffer("log_var_large", torch.log(torch.cat([post_var[1:2], betas.double()[1:]])), persistent=False)

    @property
    def timesteps(self) -> int:
        return self.betas.shape[0]

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        return q_sample(self.alpha_bar, x0, t, eps)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return q_posterior(self.betas, x0, xt, t)

    def p_mean_variance(self, net: Callable[[Tensor, Tensor], Tensor], xt: Tensor, t: Tensor,
                        clip: bool = True) -> dict[str, Tensor]:
        """Mean, log-variance, eps and x_0 predictions of p(x_t-1 | x_t) = N(mu_theta, sigma_t^2 I).

        The mean is the posterior mean at the predicted x_0, clipped to [-1, 1] if `clip` (which
        equals eq. 11 when nothing is clipped).
        """
        C = xt.shape[1]
        out = net(xt, t.to(xt.dtype))
        width = self.output_channels(C) - (C if self.variance == "learned" else 0)
        assert out.shape[1] == self.output_channels(C), \
            f"the network must return {self.output_channels(C)} channels, got {out.shape[1]}"
        if self.variance == "learned":
            v = out[:, width:]
            frac = (v + 1) / 2
            log_var = frac * gather(torch.log(self.betas), t, xt) + (1 - frac) * gather(self.log_var_small, t, xt)
        else:
            table = self.log_var_small if self.variance == "fixed_small" else self.log_var_large
            log_var = gather(table, t, xt).expand_as(xt)
        pred: dict[str, Tensor] = {"log_var": log_var}
        if self.prediction == "eps":
            pred["eps"] = out[:, :C]
            x0 = predict_x0_from_eps(self.alpha_bar, xt, t, pred["eps"])
            if clip:
                x0 = x0.clamp(-1, 1)
        else:
            pred["log_probs"] = self.level_log_probs(out[:, :width], xt, t)
            x0 = (pred["log_probs"].exp() * self.level_values(xt)).sum(2)
            pred["eps"] = predict_eps_from_x0(self.alpha_bar, xt, t, x0)
        pred["mean"], _ = self.q_posterior(x0, xt, t)
        pred["x0"] = x0
        return pred

    def output_channels(self, channels: int) -> int:
        """Channels the network must return for images of `channels` channels."""
        width = channels * (self.levels if self.prediction == "levels" else 1)
        return width + (channels if self.variance == "learned" else 0)

    def level_values(self, x: Tensor) -> Tensor:
        """The K levels in model space, v_k = 2k/(K-1) - 1, shaped (K, 1, ..., 1) to broadcast along
        dim 2 of (B, C, K, ...) for images x (B, C, ...)."""
        v = torch.linspace(-1, 1, self.levels, dtype=x.dtype, device=x.device)
        return v.view(-1, *[1] * (x.ndim - 2))

    def level_log_probs(self, logits: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """log P(x_0 = v_k | x_t) (B, C, K, H, W): network logits plus the exact evidence of each pixel."""
        B, C = xt.shape[:2]
        logits = logits.reshape(B, C, self.levels, *xt.shape[2:])
        abar = gather(self.alpha_bar, t, xt).unsqueeze(2)
        evidence = -(xt.unsqueeze(2) - abar.sqrt() * self.level_values(xt)) ** 2 / (2 * (1 - abar))
        return torch.log_softmax(widen(logits) + evidence, dim=2)

    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)) summed over dimensions, (B,) nats."""
        t = torch.full((x0.shape[0],), self.timesteps - 1, dtype=torch.long, device=x0.device)
        abar = gather(self.alpha_bar, t, x0)
        mean, log_var = abar.sqrt() * x0, torch.log1p(-abar).expand_as(x0)
        return normal_kl(mean, log_var, torch.zeros_like(x0), torch.zeros_like(x0)).flatten(1).sum(1)

    def vlb_terms(self, net: Callable[[Tensor, Tensor], Tensor], x0: Tensor, xt: Tensor, t: Tensor,
                  detach_mean: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """L_t for each image at its own t (B,) in nats: the decoder NLL where t = 0, else the KL.

        With `detach_mean` the mean enters as a constant (the hybrid objective trains only the
        variance through L_vlb; Nichol & Dhariwal 2021, section 3.1).
        """
        pred = self.p_mean_variance(net, xt, t, clip=False)
        mean = pred["mean"].detach() if detach_mean else pred["mean"]
        true_mean, true_var = self.q_posterior(x0, xt, t)
        # beta-tilde_0 = 0: log of it is never used (t = 0 takes the decoder), keep it finite.
        true_log_var = torch.log(true_var.clamp_min(1e-30)).expand_as(x0)
        kl = normal_kl(true_mean, true_log_var, mean, pred["log_var"]).flatten(1).sum(1)
        nll = -discretized_gaussian_log_likelihood(x0, mean, pred["log_var"], self.levels).flatten(1).sum(1)
        return torch.where(t == 0, nll, kl), pred


class DiscreteReverse:
    """The discrete-time process as a `reverse.ReverseProcess`: times are the levels 0..T (level L the
    state after L forward steps, 0-based step L - 1), `reverse` the model's own p(x_L-1 | x_L) (its
    variance fixed or learned, no noise into level 0), `renoise` one forward step
    q(x_L+1 | x_L) = N(sqrt(1 - beta) x_L, beta I) at a time, `run` any sampler of samplers.DISCRETE."""

    samplers = DISCRETE

    def __init__(self, process: GaussianDiffusion, net: Callable[[Tensor, Tensor], Tensor], clip: bool,
                 evaluations: int, device: torch.device, dtype: torch.dtype) -> None:
        self.process, self.net, self.clip, self.evaluations = process, net, clip, evaluations
        self.device, self.dtype = device, dtype
        self.top = float(process.timesteps)

    def _steps(self, level: float, x: Tensor) -> Tensor:
        return torch.full((len(x),), int(level) - 1, dtype=torch.long, device=x.device)

    def prior(self, shape: Sequence[int], generator: torch.Generator | None) -> Tensor:
        return torch.randn(tuple(shape), generator=generator, device=self.device, dtype=self.dtype)

    def noised(self, x0: Tensor, t: float, generator: torch.Generator | None) -> Tensor:
        return x0 if t == 0 else self.process.q_sample(x0, self._steps(t, x0), draw(x0, generator))

    def renoise(self, x: Tensor, s: float, t: float, generator: torch.Generator | None) -> Tensor:
        for level in range(int(s), int(t)):
            beta = self.process.betas[level].to(x.dtype)
            x = (1 - beta).sqrt() * x + beta.sqrt() * draw(x, generator)
        return x

    def reverse(self, x: Tensor, t: float, s: float, generator: torch.Generator | None) -> Tensor:
        assert s == t - 1, "the discrete process steps down one level at a time"
        pred = self.process.p_mean_variance(self.net, x, self._steps(t, x), clip=self.clip)
        return pred["mean"] + torch.exp(0.5 * pred["log_var"]) * draw(x, generator) if s > 0 else pred["mean"]

    def ladder(self, steps: int | None) -> list[float]:
        T = self.process.timesteps
        if steps not in (None, T):
            raise GenzooError(f"a discrete-time model inpaints over all {T} steps; leave steps unset.")
        return [float(level) for level in range(T, -1, -1)]

    def strength_time(self, strength: float) -> float:
        return float(round(strength * (self.process.timesteps - 1)) + 1)

    def run(self, sampler: str, x: Tensor, t: float, steps: int | None, generator: torch.Generator | None,
            callback: Callback | None, eta: float = 0.0) -> Sampled:
        return discrete(self.process, self.net, sampler, tuple(x.shape), steps or 50, eta, generator, self.clip,
                        x.device, x.dtype, callback, start=(x, int(t) - 1))
