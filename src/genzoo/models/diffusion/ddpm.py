"""DDPM: a U-Net predicts the noise eps in x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

Time steps are 0-based (t = 0..T-1 is the lecture's t = 1..T); tensors of the process live in
model space [-1, 1], level k -> 2k/(K-1) - 1. The process (`GaussianDiffusion`) is plain math
given the network; the network never sees a beta, only the step index t.

Reverse process p(x_t-1 | x_t) = N(mu_theta(x_t, t), sigma_t^2 I) with
    mu_theta = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta(x_t, t))      Ho et al. 2020, eq. 11
and sigma_t^2 = beta-tilde_t ("fixed_small"), beta_t ("fixed_large") or learned as
exp(v log beta_t + (1 - v) log beta-tilde_t) ("learned", Nichol & Dhariwal 2021, eq. 15).
Training: L_simple = E ||eps - eps_theta(x_t, t)||^2 (Ho et al. eq. 14), optionally plus
lambda L_vlb (the hybrid objective), or L_vlb alone.

The mean can instead be parametrized through the data's K levels (prediction="levels"): the
network gives per-pixel logits l_k over the levels v_k, the exact per-pixel evidence of x_t is
added, and x_0-hat is the mean of the resulting categorical,
    P(x_0 = v_k | x_t) proportional to exp(l_k(x_t, t) - (x_t - sqrt(abar_t) v_k)^2 / (2 (1 - abar_t))),
    x_0-hat = sum_k P_k v_k,   mu_theta = mu-tilde_t(x_0-hat, x_t),
which is exact Bayes when l_k is the log prior of the level given the rest of the image. At low
noise the evidence term alone rounds x_t to its level, which an eps network cannot do smoothly,
and those steps dominate the bound of discrete data. Its "simple" loss is the cross-entropy of
the true level under P (the analogue of L_simple: its optimum is the posterior over x_0).

The variational bound, in nats of the discrete image (Ho et al. eq. 5 and section 3.3):
    -log P(x_0) <= KL(q(x_T | x_0) || N(0, I))                                  (L_T, the prior)
                 + sum_{t=1}^{T-1} KL(q(x_t-1 | x_t, x_0) || p(x_t-1 | x_t))    (L_t, 0-based t)
                 - log p(x_0 | x_1)                                             (L_0, t = 0 here)
with the discretized Gaussian decoder: bins of width 2/(K-1) in [-1, 1], edges to +-inf.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch
from torch import Tensor

from ...data.spec import DataSpec
from ...data.transforms import to_centered
from ...errors import GenzooError
from ...functional import widen
from ...nn.unet import UNet
from ..base import LogLikelihood
from ..helpers import Callback, check_choices, check_positive, check_range, check_strength, eval_mode
from . import samplers
from .continuous import UNetFields
from .process import DiscreteReverse, GaussianDiffusion, Objective, Prediction, Schedule, Variance
from .reverse import DiffusionModel
from .schedules import make_betas


@dataclass(frozen=True)
class DDPMConfig(UNetFields):
    """Schedule, reverse variance, objective and U-Net size.

    prediction: "eps" (Ho et al.) or "levels" (x_0 as the mean of a categorical over the K levels, see the
    module docstring); schedule: "linear" (beta_start..beta_end) or "cosine"; variance: "fixed_small" (beta-tilde),
    "fixed_large" (beta) or "learned"; objective: "simple" (L_simple), "hybrid" (L_simple + vlb_weight * L_vlb)
    or "vlb" (the bound alone); the last two need a learned variance.
    """

    timesteps: int = 1000  # diffusion steps T
    prediction: Prediction = "eps"  # what the U-Net predicts: the noise eps, or x_0 as a categorical over the K levels
    schedule: Schedule = "linear"  # beta schedule: linear from beta_start to beta_end, or cosine
    beta_start: float = 1e-4  # beta_1 of the linear schedule
    beta_end: float = 0.02  # beta_T of the linear schedule
    # reverse variance: beta-tilde, beta, or learned (needed by the hybrid and vlb objectives)
    variance: Variance = "fixed_small"
    objective: Objective = "simple"  # L_simple, L_simple + vlb_weight * L_vlb (hybrid), or the bound alone (vlb)
    vlb_weight: float = 0.001  # weight of L_vlb in the hybrid objective
    validation_terms: int = 50  # bound terms of the validation estimate (a random offset per image)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("timesteps", "validation_terms"):
            check_positive(getattr(self, name), name)
        if self.timesteps < 2:
            raise GenzooError(f"timesteps must be at least 2, got {self.timesteps}.")
        check_choices(self)
        check_range(self.beta_start, "beta_start", 1e-8, 0.999)
        check_range(self.beta_end, "beta_end", self.beta_start, 0.999)
        if self.objective != "simple" and self.variance != "learned":
            raise GenzooError(f"objective {self.objective!r} trains the reverse variance, so it needs variance='learned'.")
        check_positive(self.vlb_weight, "vlb_weight", allow_zero=True)


class DDPM(DiffusionModel):
    """Denoising diffusion probabilistic model (Ho et al. 2020), eps-prediction, L_simple."""

    name = "ddpm"
    Config = DDPMConfig
    loss_unit: ClassVar[str] = "per dimension: squared error of the prediction (L_simple), plus the weighted bound in nats"
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 2500, "batch_size": 64, "lr": 2e-3, "warmup_steps": 100,
                                                "ema_decay": 0.995, "eval_every": 500, "sample_every": 2500}
    quick_sample_options: ClassVar[dict[str, Any]] = {"sampler": "ddim"}  # 50 DDIM steps, not T ancestral ones

    def __init__(self, spec: DataSpec, config: DDPMConfig) -> None:
        super().__init__(spec, config)
        C = spec.channels
        betas = make_betas(config.schedule, config.timesteps, config.beta_start, config.beta_end)
        self.process = GaussianDiffusion(betas, config.variance, config.prediction, spec.levels)
        self.net = UNet(C, self.process.output_channels(C), min(spec.height, spec.width), config.base_channels,
                        config.channel_mults, config.num_res_blocks, config.attention_resolutions, config.dropout,
                        config.num_heads, num_classes=config.num_classes)

    def network(self, labels: Tensor | None = None, guidance: float = 1.0) -> Callable[[Tensor, Tensor], Tensor]:
        """The network as the process calls it, net(x_t, t), given `labels` (n,) for a class-conditional
        model; with guidance w != 1 its mean output is u + w (c - u) (classifier-free guidance, Ho &
        Salimans 2022: u given the null class), the learned variance the conditional one's."""
        if labels is None:
            return self.net
        mean = self.process.output_channels(self.spec.channels) - (
            self.spec.channels if self.config.variance == "learned" else 0)
        return lambda xt, t: self.net.guided(xt, t, labels, guidance, mean)

    # -- the contract (models/base.py) for diffusion ---------------------------------------------
    @property
    def betas(self) -> Tensor:
        """beta_t, (T,), float64; index t is the lecture's step t + 1."""
        return self.process.betas

    @property
    def alpha_bar(self) -> Tensor:
        """abar_t = prod_{s <= t} (1 - beta_s), (T,), float64."""
        return self.process.alpha_bar

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, model space.  Ho et al. 2020, eq. 4."""
        return self.process.q_sample(x0, self._check_t(t, x0), eps)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, variance) of q(x_t-1 | x_t, x_0); at t = 0 the mean is x_0 and the variance 0."""
        return self.process.q_posterior(x0, xt, self._check_t(t, x0))

    def _check_t(self, t: Tensor | int, x: Tensor) -> Tensor:
        if not isinstance(t, Tensor):
            t = torch.tensor(t)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.dtype.is_floating_point or t.shape != (x.shape[0],):
            raise GenzooError(f"t must be integer time steps of shape ({x.shape[0]},), got {tuple(t.shape)} {t.dtype}.")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.process.timesteps):
            raise GenzooError(f"time steps are 0-based and must lie in [0, {self.process.timesteps - 1}].")
        return t.long().to(x.device)

    # -- training ------------------------------------------------------------------------------
    def to_model_space(self, x: Tensor) -> Tensor:
        """Levels (B, C, H, W) -> x_0 in [-1, 1], in the network's dtype."""
        return to_centered(x, self.spec.levels, dtype=self._dtype())

    def loss(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """The training objective per dimension, batch mean, one t ~ U{0..T-1} and one eps per image.

        objective "simple": with prediction "eps", L_simple, the mean squared error of eps_theta
        against eps (Ho et al. eq. 14; a squared error, not a likelihood); with prediction
        "levels", the cross-entropy of the true level under P(x_0 | x_t), in nats per dimension.
        "hybrid": that simple loss plus vlb_weight * L_vlb, with L_vlb = (T L_t + L_T) / D the
        one-step estimate of the negative bound in nats per dimension (mean held fixed in it).
        "vlb": L_vlb alone, nats per dimension. A class-conditional model sees its `labels`, each
        replaced by the null class with probability label_dropout in training."""
        x0 = self.to_model_space(x)
        B, T = x0.shape[0], self.process.timesteps
        labels = self.check_labels(labels, B)
        if self.training:
            labels = self.net.drop_labels(labels, self.config.label_dropout)
        net = self.network(labels)
        t = torch.randint(0, T, (B,), device=x0.device)
        eps = torch.randn_like(x0)
        xt = self.process.q_sample(x0, t, eps)
        if self.config.objective == "simple" and self.config.prediction == "eps":
            eps_hat = net(xt, t.to(xt.dtype))
            return (widen(eps_hat) - eps).pow(2).mean()
        if self.config.objective == "simple":
            pred, vlb = self.process.p_mean_variance(net, xt, t, clip=False), None
        else:
            terms, pred = self.process.vlb_terms(net, x0, xt, t, detach_mean=self.config.objective == "hybrid")
            # sum over t of L_t estimated by T * L_t at uniform t, plus the prior term; per dimension.
            vlb = (T * terms + self.process.prior_kl(x0)).mean() / self.spec.dims
            if self.config.objective == "vlb":
                return vlb
        if self.config.prediction == "eps":
            simple = (widen(pred["eps"]) - eps).pow(2).mean()
        else:
            simple = -pred["log_probs"].gather(2, x.to(x0.device).long().unsqueeze(2)).mean()
        return simple if vlb is None else simple + self.config.vlb_weight * vlb

    # -- likelihood ----------------------------------------------------------------------------
    @torch.no_grad()
    def bound_terms(self, x: Tensor, t_values: Tensor, generator: torch.Generator | None = None,
                    labels: Tensor | None = None) -> Tensor:
        """L_t (B, K) in nats at each of K steps, with x_t ~ q(x_t | x_0) drawn per step; t_values (K,)
        are shared by the images, (K, B) give each image its own; given `labels`, of p(x | labels)."""
        x = self.check_input(x)
        x0 = self.to_model_space(x)
        net, out = self.network(self.check_labels(labels, len(x))), []
        for t in t_values:
            tt = t.to(x0.device).long().expand(x0.shape[0])
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
            xt = self.process.q_sample(x0, tt, eps)
            out.append(self.process.vlb_terms(net, x0, xt, tt)[0])
        return torch.stack(out, dim=1)

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None, stride: int = 1,
                       labels: Tensor | None = None) -> LogLikelihood:
        """Variational lower bound on log P(x) of the discrete image, nats (B,), kind "lower_bound".

        stride = 1 sums all T terms exactly (one network call per step, x_t drawn from q per
        step: an unbiased estimate of the bound). stride > 1 keeps L_0 and the prior and
        estimates sum_{t>=1} L_t from every stride-th step, times (T - 1) / (steps kept), with a
        random offset per image, so that the spread over images holds the estimator's noise.
        """
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise GenzooError(f"stride must be a positive integer, got {stride!r}.")
        with eval_mode(self):
            T = self.process.timesteps
            if stride == 1:
                terms = self.bound_terms(x, torch.arange(T - 1, -1, -1), generator, labels).sum(1)
            else:
                offset = torch.randint(0, stride, (len(x),), generator=generator, device=self.device)
                ts = 1 + offset + torch.arange(0, T - 1, stride, device=self.device).unsqueeze(1)  # (K, B)
                kept = (ts < T).T  # (B, K); a step past T - 1 is computed and dropped
                kl = (self.bound_terms(x, ts.clamp(max=T - 1), generator, labels) * kept).sum(1) * (T - 1) / kept.sum(1)
                terms = kl + self.bound_terms(x, torch.zeros(1, dtype=torch.long), generator, labels)[:, 0]
            nats = -(terms + self.process.prior_kl(self.to_model_space(x)))
        return LogLikelihood(nats, "lower_bound")

    @torch.no_grad()
    def validation_nats(self, x: Tensor, labels: Tensor | None = None) -> LogLikelihood:
        """log_likelihood(x, stride=max(1, T // validation_terms)) with a generator seeded 0: nats (B,), kind
        "lower_bound", a Monte Carlo estimate of the variational lower bound (not a bound): L_T and L_0 exact,
        the KL terms at every stride-th step (a random offset per image) times (T - 1) / (steps kept)."""
        stride = max(1, self.process.timesteps // self.config.validation_terms)
        generator = torch.Generator(device=self.device).manual_seed(0)
        return self.log_likelihood(x, generator=generator, stride=stride, labels=labels)

    # -- synthesis (reverse.py) ----------------------------------------------------------------
    def reverse_process(self, labels: Tensor | None, guidance: float, clip: bool = True) -> DiscreteReverse:
        """The process over the levels 0..T with the network given `labels` and `guidance`; `clip`
        keeps the predicted x_0 in [-1, 1]."""
        return DiscreteReverse(self.process, self.network(labels, guidance), clip,
                               2 if labels is not None and guidance != 1.0 else 1, self.device, self._dtype())

    def time_name(self, t: float) -> str:
        return str(int(t) - 1)  # the 0-based step the level is reached by

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, sampler: str = "ancestral",
               steps: Optional[int] = None, eta: float = 0.0, clip: bool = True, label: Optional[int] = None,
               labels: Tensor | None = None, guidance: float = 1.0, callback: Callback | None = None) -> Tensor:
        """n images (n, C, H, W) int64 from x_T ~ N(0, I); `sample_stats()` gives the NFE; `callback`
        sees x_t and the predicted x_0, as levels, after every step (`as_levels`). A class-conditional
        model draws class `label`, or `labels` (n,), or the classes 0, 1, ... in turn, with
        classifier-free guidance `guidance` (1: the conditional model; each step then costs two NFE).

        sampler "ancestral": x_t-1 ~ p(x_t-1 | x_t) for every t = T-1..0, no noise on the last
        step (steps must be None or T). "ddim" (noise scale eta; 0 is deterministic), "euler",
        "heun" and "dpm-solver++" (the probability-flow ODE) over `steps` steps (default 50; evenly
        spaced, heun and dpm-solver++ spaced in noise level by samplers.GRID_RHO). `clip` keeps the
        predicted x_0 in [-1, 1]. The final mean is rounded to the nearest level.
        """
        self._check_sampling(sampler, steps, eta)
        process = self.reverse_process(self.classes_to_draw(n, label, labels, guidance), guidance, clip)
        return self._sample(process, n, sampler, steps, generator, callback, eta=eta)

    def _check_sampling(self, sampler: str, steps: Optional[int], eta: float) -> None:
        T = self.process.timesteps
        samplers.check_sampler(sampler, samplers.DISCRETE)
        samplers.check_steps(steps, T)
        if not isinstance(eta, (int, float)) or eta < 0:
            raise GenzooError(f"eta must be a non-negative number, got {eta!r}.")
        if sampler == "ancestral" and steps not in (None, T):
            raise GenzooError(f"the ancestral sampler takes all {T} steps; use sampler='ddim' for fewer.")

    @torch.no_grad()
    def edit(self, x: Tensor, strength: float, generator: torch.Generator | None = None, sampler: str = "ancestral",
             steps: Optional[int] = None, eta: float = 0.0, clip: bool = True, labels: Tensor | None = None,
             guidance: float = 1.0, callback: Callback | None = None) -> Tensor:
        """SDEdit: x_t0 ~ q(x_t0 | x) at t0 = round(strength (T - 1)), then `sampler` from t0 to 0 (ddim and the
        ODE samplers over `steps` of those t0 + 1 steps, default 50); strength 0 returns x itself."""
        if check_strength(strength) == 0:
            return x.clone()
        self._check_sampling(sampler, None if sampler == "ancestral" else steps, eta)
        process = self.reverse_process(self.classes_to_draw(len(x), None, labels, guidance), guidance, clip)
        return self._edit(process, x, strength, sampler, steps, generator, callback, eta=eta)
