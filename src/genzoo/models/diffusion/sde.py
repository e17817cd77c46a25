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
ODE density gives a lower bound on the discrete probability (continuous.py, shared with flow matching).
The integrators (fixed-step RK4, adaptive Dormand-Prince RK45) and the divergences are in ode.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Optional, Sequence

import torch
from torch import Tensor

from ...data.spec import DataSpec
from ...errors import GenzooError
from ...functional import widen
from ..base import LogLikelihood
from ..helpers import Callback, check_choices, check_positive, check_range, report_step
from .continuous import ContinuousTimeModel, UNetConfig
from .ode import METHODS
from .reverse import GaussianPath
from .samplers import GRID_RHO, Sampled, check_steps, gaussian_path, reporting, sigma_times
from .sde_process import SDE, VESDE, VPSDE, as_column, ode_sample, pc_sample, probability_flow

SDE_SAMPLERS = ("pc", "em", "ode", "euler", "heun", "dpm-solver++")


@dataclass(frozen=True)
class ScoreSDEConfig(UNetConfig):
    """sde: "vp" (beta_min, beta_max) or "ve" (sigma_min, sigma_max); t_min: the smallest time trained
    and integrated from (eps in Song et al.); sample_steps: default steps of the pc/em samplers; the
    U-Net and the ODE likelihood's solver settings are continuous.py's UNetConfig."""

    # variance preserving (beta_min, beta_max) or variance exploding (sigma_min, sigma_max)
    sde: Literal["vp", "ve"] = "vp"
    beta_min: float = 0.1  # beta(0) of the VP SDE
    beta_max: float = 20.0  # beta(1) of the VP SDE
    sigma_min: float = 0.01  # smallest noise level of the VE SDE
    sigma_max: float = 20.0  # largest noise level of the VE SDE
    t_min: float = 1e-5  # smallest time trained and integrated from (eps in Song et al.)
    sample_eps: float = 1e-3  # time at which the samplers stop
    sample_steps: int = 1000  # default steps of the pc and em samplers

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choices(self)
        for name in ("beta_min", "beta_max", "sigma_min", "sigma_max", "sample_steps"):
            check_positive(getattr(self, name), name)
        if self.beta_max <= self.beta_min:
            raise GenzooError(f"beta_max must exceed beta_min, got {self.beta_max} <= {self.beta_min}.")
        if self.sigma_max <= self.sigma_min:
            raise GenzooError(f"sigma_max must exceed sigma_min, got {self.sigma_max} <= {self.sigma_min}.")
        check_range(self.t_min, "t_min", 1e-8, 0.5)
        check_range(self.sample_eps, "sample_eps", 1e-8, 0.5)


class ScoreSDE(ContinuousTimeModel):
    """Score-based model with a VP or VE SDE, a predictor-corrector sampler and ODE likelihoods."""

    name = "score-sde"
    Config = ScoreSDEConfig
    loss_unit: ClassVar[str] = "squared error of the predicted noise per dimension (denoising score matching)"
    # training's sample grids: the probability-flow ODE by RK4 in 100 steps, not sample_steps PC steps
    quick_sample_options: ClassVar[dict[str, Any]] = {"sampler": "ode", "method": "rk4"}

    def __init__(self, spec: DataSpec, config: ScoreSDEConfig) -> None:
        super().__init__(spec, config)
        self.sde: SDE = (VPSDE(config.beta_min, config.beta_max) if config.sde == "vp"
                         else VESDE(config.sigma_min, config.sigma_max))

    def eps_pred(self, xt: Tensor, t: Tensor, labels: Tensor | None = None, guidance: float = 1.0) -> Tensor:
        """eps_theta(x_t, t): the network on x_t / sqrt(m^2 + s^2) (unit scale) and time 999 t; given
        `labels`, with classifier-free guidance w != 1: e_u + w (e_c - e_u), e_u of the null class."""
        m, s = self.sde.marginal(t)
        return self.net.guided(xt * as_column((m ** 2 + s ** 2).rsqrt(), xt), 999.0 * t.to(xt.dtype), labels, guidance)

    def score(self, xt: Tensor, t: Tensor, labels: Tensor | None = None, guidance: float = 1.0) -> Tensor:
        """s_theta(x_t, t) = -eps_theta(x_t, t) / s(t), approximating grad log p_t(x_t) (given labels)."""
        _, s = self.sde.marginal(t)
        return -self.eps_pred(xt, t, labels, guidance) / as_column(s, xt)

    def loss(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Denoising score matching with lambda(t) = s(t)^2, which is the mean squared error of the
        noise, E ||eps_theta(x_t, t) - eps||^2 / D (a squared error per dimension, not a likelihood),
        batch mean over one t ~ U(t_min, 1) and one eps per image; labels dropped to the null class
        with probability label_dropout in training."""
        x0 = self.dequantize(x)
        B = x0.shape[0]
        labels = self.check_labels(labels, B)
        if self.training:
            labels = self.net.drop_labels(labels, self.config.label_dropout)
        t = torch.rand(B, dtype=x0.dtype, device=x0.device) * (1 - self.config.t_min) + self.config.t_min
        eps = torch.randn_like(x0)
        m, s = self.sde.marginal(t)
        xt = as_column(m, x0) * x0 + as_column(s, x0) * eps
        return (widen(self.eps_pred(xt, t, labels)) - eps).pow(2).mean()

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, generator: torch.Generator | None = None, divergence: str = "auto",
                       method: str = "rk45", steps: int = 100, rtol: float | None = None,
                       atol: float | None = None, labels: Tensor | None = None) -> LogLikelihood:
        """Lower bound on log P(x) in nats (B,): uniform dequantization and the probability-flow ODE
        from t_min to 1 (continuous.py). divergence "auto" is exact for at most
        exact_divergence_max_dims dimensions, else Hutchinson's; method "rk45" (adaptive, rtol/atol,
        by default the config's ode_rtol/ode_atol) or "rk4" (`steps`)."""
        labels = self.check_labels(labels, len(x))

        def field(y: Tensor, t: Tensor) -> Tensor:
            return probability_flow(self.sde, lambda v, tt: self.score(v, tt, labels), y, t)

        return self.ode_bound(x, field, self.config.t_min, 1.0, self.sde.prior_log_prob, generator, divergence,
                              method, steps, rtol, atol)

    # -- synthesis (reverse.py) ----------------------------------------------------------------
    def reverse_process(self, labels: Tensor | None, guidance: float) -> SDEReverse:
        """The process in SDE time (data at 0, prior at 1) with the score given `labels` and `guidance`."""
        return SDEReverse(self, labels, guidance)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, sampler: str = "pc", steps: Optional[int] = None,
               snr: float = 0.16, corrector_steps: int = 1, method: str = "rk45", rtol: float = 1e-5,
               atol: float = 1e-5, label: Optional[int] = None, labels: Tensor | None = None, guidance: float = 1.0,
               callback: Callback | None = None) -> Tensor:
        """n images (n, C, H, W) int64; `sample_stats()` gives the NFE. A class-conditional model draws
        class `label`, or `labels` (n,), or the classes in turn, with classifier-free `guidance`.

        sampler "pc": predictor-corrector (reverse Euler-Maruyama + Langevin, `snr`, `corrector_steps`)
        over `steps` (default sample_steps); "em": Euler-Maruyama alone; "ode": the probability-flow
        ODE with method "rk45" (rtol, atol) or "rk4" (`steps`, default 100); "euler", "heun",
        "dpm-solver++": the probability-flow ODE on `steps` times (default 50) from 1 to sample_eps
        (euler: evenly spaced; heun, dpm-solver++: samplers.GRID_RHO), then the x_0 prediction there.
        `callback` sees x_t, as levels, at every network evaluation (with the x_0 prediction on the
        Gaussian-path samplers).
        """
        options = self._sampling_options(steps, snr, corrector_steps, method, rtol, atol)
        process = self.reverse_process(self.classes_to_draw(n, label, labels, guidance), guidance)
        return self._sample(process, n, sampler, steps, generator, callback, **options)

    def _sampling_options(self, steps: Optional[int], snr: float, corrector_steps: int, method: str, rtol: float,
                          atol: float) -> dict[str, Any]:
        check_steps(steps)
        if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, int) or corrector_steps < 0:
            raise GenzooError(f"corrector_steps must be a non-negative integer, got {corrector_steps!r}.")
        if not isinstance(snr, (int, float)) or snr <= 0:
            raise GenzooError(f"snr must be a positive number, got {snr!r}.")
        if method not in METHODS:
            raise GenzooError(f"method must be one of {', '.join(METHODS)}, got {method!r}.")
        return dict(snr=snr, corrector_steps=corrector_steps, method=method, rtol=rtol, atol=atol)

    @torch.no_grad()
    def edit(self, x: Tensor, strength: float, generator: torch.Generator | None = None, sampler: str = "heun",
             steps: Optional[int] = None, snr: float = 0.16, corrector_steps: int = 1, method: str = "rk45",
             rtol: float = 1e-5, atol: float = 1e-5, labels: Tensor | None = None, guidance: float = 1.0,
             callback: Callback | None = None) -> Tensor:
        """SDEdit: x_t = m(t) x + s(t) z at t = strength (the SDE's own time, at least 2 sample_eps), then
        `sampler` back to sample_eps (the options as for `sample`); strength 0 returns x."""
        options = self._sampling_options(steps, snr, corrector_steps, method, rtol, atol)
        process = self.reverse_process(self.classes_to_draw(len(x), None, labels, guidance), guidance)
        return self._edit(process, x, strength, sampler, steps, generator, callback, **options)


class SDEReverse(GaussianPath):
    """score-sde's process as a `reverse.ReverseProcess`: x_t = m(t) x_0 + s(t) eps, the data at t = 0,
    the prior N(0, prior_std^2 I) at t = 1; D(x, t) = (x - s eps_theta(x, t)) / m."""

    samplers = SDE_SAMPLERS
    top = 1.0

    def __init__(self, model: ScoreSDE, labels: Tensor | None, guidance: float) -> None:
        self.model, self.sde, self.labels, self.guidance = model, model.sde, labels, guidance
        self.eps = model.config.sample_eps
        self.evaluations = 2 if labels is not None and guidance != 1.0 else 1

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        if t == 0:
            return 1.0, 0.0
        m, s = self.sde.marginal(torch.tensor([t], dtype=torch.float64))
        return float(m), float(s)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        return self.model.score(x, t, self.labels, self.guidance)

    def denoise(self, x: Tensor, t: float) -> Tensor:
        return self._x0_pred(torch.tensor([t], dtype=torch.float64))(x, 0)

    def prior(self, shape: Sequence[int], generator: torch.Generator | None) -> Tensor:
        noise = torch.randn(tuple(shape), generator=generator, device=self.model.device, dtype=self.model._dtype())
        return noise * self.sde.prior_std()

    def ladder(self, steps: int | None) -> list[float]:
        return torch.linspace(1.0, self.eps, steps or self.model.config.sample_steps).tolist() + [0.0]

    def strength_time(self, strength: float) -> float:
        return max(strength, 2 * self.eps)

    def run(self, sampler: str, x: Tensor, t: float, steps: int | None, generator: torch.Generator | None,
            callback: Callback | None, snr: float = 0.16, corrector_steps: int = 1, method: str = "rk45",
            rtol: float = 1e-5, atol: float = 1e-5) -> Sampled:
        """`sampler` from x at t to the data (see ScoreSDE.sample)."""
        if sampler in ("euler", "heun", "dpm-solver++"):
            times = torch.linspace(t, self.eps, steps or 50, dtype=torch.float64)
            if sampler in GRID_RHO:
                times = sigma_times(self._sigma, t, self.eps, steps or 50, GRID_RHO[sampler])
            m, s = self.sde.marginal(times)
            return gaussian_path(sampler, reporting(self._x0_pred(times), callback, None), x,
                                 m.tolist() + [1.0], s.tolist() + [0.0])
        evaluations = 0

        def score(y: Tensor, tt: Tensor) -> Tensor:
            nonlocal evaluations
            evaluations += 1
            report_step(callback, evaluations, None, x=y)
            return self.score(y, tt)

        if sampler == "ode":
            return ode_sample(self.sde, score, x, self.eps, method, steps or 100, rtol, atol, t_max=t)
        return pc_sample(self.sde, score, x, steps or self.model.config.sample_steps, self.eps, snr,
                         corrector_steps if sampler == "pc" else 0, generator, t_max=t)

    def _sigma(self, t: Tensor) -> Tensor:
        """The noise level s(t) / m(t) of Karras et al. 2022 (rising in t)."""
        m, s = self.sde.marginal(t)
        return s / m

    def _x0_pred(self, t: Tensor) -> Callable[[Tensor, int], Tensor]:
        """x0_fn(x, i) = (x - s eps_theta(x, t_i)) / m at t_i = t[i], for the samplers."""
        def x0_fn(x: Tensor, i: int) -> Tensor:
            tt = torch.full((x.shape[0],), float(t[i]), dtype=x.dtype, device=x.device)
            m, s = self.sde.marginal(tt)
            return (x - as_column(s, x) * self.model.eps_pred(x, tt, self.labels, self.guidance)) / as_column(m, x)
        return x0_fn
