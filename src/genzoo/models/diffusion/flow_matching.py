"""Flow matching: a network learns the velocity of a path from noise to data; samples come from an ODE,
and the density from the instantaneous change of variables along it. Where flows and diffusion meet.

Time t runs from noise (t = 0) to data (t = 1). The linear (optimal-transport, rectified) conditional path
    x_t = (1 - t) x_0 + t x_1,   x_0 ~ N(0, I),  x_1 the dequantized data in [-1, 1],
has the conditional velocity u_t = x_1 - x_0, and the conditional flow-matching loss
    L_CFM = E_{t ~ U(0, 1), x_0, x_1} ||v_theta(x_t, t) - (x_1 - x_0)||^2
has the same gradient as regressing the marginal velocity v(x, t) = E[x_1 - x_0 | x_t = x], its
optimum.  Lipman et al. 2023, "Flow Matching for Generative Modeling", eq. 9, 20-23; Liu et al. 2023,
"Flow Straight and Fast" (rectified flow).
Samples solve dx/dt = v_theta(x, t) from x(0) ~ N(0, I) to t = 1. The path is Gaussian,
x_t = alpha x_1 + sigma x_0 with alpha = t, sigma = 1 - t, so the x_1 (data) prediction
D(x, t) = x + (1 - t) v gives DPM-Solver++ too (samplers.py). The density:
    log p_1(x) = log N(x(0); 0, I) + int_1^0 div v_theta(x(t), t) dt       (continuous.py, ode.py)
with x(0) the ODE solved from the data at t = 1 back to t = 0.
Classifier-free guidance (Ho & Salimans 2022): labels are dropped with probability label_dropout in
training (the null class); sampling uses v_u + w (v_c - v_u), w = `guidance`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence

import torch
from torch import Tensor

from ...functional import standard_normal_log_prob, widen
from ..base import LogLikelihood
from ..helpers import Callback, check_positive, report_step
from .continuous import ContinuousTimeModel, UNetConfig
from .ode import rk45
from .reverse import GaussianPath
from .samplers import Sampled, check_steps, dpm_solver_pp_2m, euler, heun

FM_SAMPLERS = ("heun", "euler", "dpm-solver++", "ode")


def linear_path(x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """(x_t, u_t) = ((1 - t) x_0 + t x_1, x_1 - x_0), t (B,): the point and the conditional velocity."""
    tc = t.to(x0.dtype).view(-1, *[1] * (x0.ndim - 1))
    return (1 - tc) * x0 + tc * x1, x1 - x0


@dataclass(frozen=True)
class FlowMatchingConfig(UNetConfig):
    """num_classes: 0 for an unconditional model, else the classes it is conditioned on, each label
    dropped with probability label_dropout in training (classifier-free guidance); sample_steps: the
    default steps of the fixed-step samplers. The U-Net and ODE settings are continuous.py's UNetConfig."""

    sample_steps: int = 25  # default steps of the fixed-step samplers

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.sample_steps, "sample_steps")


class FlowMatching(ContinuousTimeModel):
    """Conditional flow matching on the linear path, the shared U-Net as the velocity network."""

    name = "flow-matching"
    Config = FlowMatchingConfig
    loss_unit: ClassVar[str] = "squared error of the velocity per dimension (conditional flow matching)"

    def velocity(self, x: Tensor, t: Tensor, labels: Tensor | None = None, guidance: float = 1.0) -> Tensor:
        """v_theta(x, t), t (B,) in [0, 1], the network at time 999 t; with labels and guidance w != 1,
        v_u + w (v_c - v_u) (the null class gives v_u)."""
        return self.net.guided(x, 999.0 * t.to(x.dtype), labels, guidance)

    def loss(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """L_CFM per dimension, batch mean, one t ~ U(0, 1), x_0 ~ N(0, I) and dequantization per image
        (a squared error, not a likelihood)."""
        labels = self.check_labels(labels, x.shape[0])
        x1 = self.dequantize(x)
        x0 = torch.randn_like(x1)
        t = torch.rand(x1.shape[0], dtype=x1.dtype, device=x1.device)
        xt, u = linear_path(x0, x1, t)
        if self.training:
            labels = self.net.drop_labels(labels, self.config.label_dropout)
        return (widen(self.velocity(xt, t, labels)) - u).pow(2).mean()

    @torch.no_grad()
    def log_likelihood(self, x: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None,
                       divergence: str = "auto", method: str = "rk45", steps: int = 100, rtol: float | None = None,
                       atol: float | None = None) -> LogLikelihood:
        """Lower bound on log P(x) (or log P(x | labels)) in nats (B,): uniform dequantization and the ODE
        from the data at t = 1 to the noise at t = 0 (continuous.py). divergence "auto" is exact for at
        most exact_divergence_max_dims dimensions, else Hutchinson's; method "rk45" (rtol/atol, by
        default the config's) or "rk4" (`steps`)."""
        labels = self.check_labels(labels, x.shape[0])

        def field(y: Tensor, t: Tensor) -> Tensor:
            return self.velocity(y, t, labels)

        return self.ode_bound(x, field, 1.0, 0.0, standard_normal_log_prob, generator, divergence, method, steps,
                              rtol, atol)

    # -- synthesis (reverse.py) ----------------------------------------------------------------
    def reverse_process(self, labels: Tensor | None, guidance: float) -> LinearReverse:
        """The linear path (noise at t = 0, data at 1) with the velocity given `labels` and `guidance`."""
        return LinearReverse(self, labels, guidance)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, sampler: str = "heun",
               steps: Optional[int] = None, label: Optional[int] = None, guidance: float = 1.0,
               labels: Tensor | None = None, rtol: float = 1e-5, atol: float = 1e-5,
               callback: Callback | None = None) -> Tensor:
        """n images (n, C, H, W) int64 from x(0) ~ N(0, I); `sample_stats()` gives the NFE.

        sampler "euler" or "heun" on `steps` equal steps of t (default sample_steps), "dpm-solver++"
        on the same grid with the data prediction, "ode" the adaptive RK45 (rtol, atol). A
        class-conditional model draws class `label` for every sample, or `labels` (n,), or by default
        the classes 0, 1, ... in turn, with classifier-free guidance weight `guidance` (1: none).
        `callback` sees x_t and the predicted data x_1 = x_t + (1 - t) v, as levels, at every network
        evaluation (`as_levels`).
        """
        check_steps(steps)
        process = self.reverse_process(self.classes_to_draw(n, label, labels, guidance), guidance)
        return self._sample(process, n, sampler, steps, generator, callback, rtol=rtol, atol=atol)

    @torch.no_grad()
    def edit(self, x: Tensor, strength: float, generator: torch.Generator | None = None, sampler: str = "heun",
             steps: Optional[int] = None, label: Optional[int] = None, guidance: float = 1.0,
             labels: Tensor | None = None, callback: Callback | None = None) -> Tensor:
        """SDEdit on the linear path: x_s = (1 - s) z + s x at s = 1 - strength, z ~ N(0, I), then the ODE
        from s to 1 by `sampler` on `steps` equal steps (default sample_steps); strength 0 returns x."""
        check_steps(steps)
        process = self.reverse_process(self.classes_to_draw(len(x), label, labels, guidance), guidance)
        return self._edit(process, x, strength, sampler, steps, generator, callback)


class LinearReverse(GaussianPath):
    """flow-matching's process as a `reverse.ReverseProcess`: x_t = t x_1 + (1 - t) z (alpha = t,
    sigma = 1 - t), noise at t = 0, data at t = 1; D(x, t) = x + (1 - t) v_theta(x, t)."""

    samplers = FM_SAMPLERS
    top = 0.0

    def __init__(self, model: FlowMatching, labels: Tensor | None, guidance: float) -> None:
        self.model, self.labels, self.guidance = model, labels, guidance
        self.evaluations = 2 if labels is not None and guidance != 1.0 else 1

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        return t, 1.0 - t

    def velocity(self, x: Tensor, t: float) -> Tensor:
        return self.model.velocity(x, torch.full((len(x),), t, dtype=x.dtype, device=x.device), self.labels,
                                   self.guidance)

    def denoise(self, x: Tensor, t: float) -> Tensor:
        return x + (1 - t) * self.velocity(x, t)

    def prior(self, shape: Sequence[int], generator: torch.Generator | None) -> Tensor:
        return torch.randn(tuple(shape), generator=generator, device=self.model.device, dtype=self.model._dtype())

    def ladder(self, steps: int | None) -> list[float]:
        return torch.linspace(0.0, 1.0, (steps or self.model.config.sample_steps) + 1, dtype=torch.float64).tolist()

    def strength_time(self, strength: float) -> float:
        return 1.0 - strength

    def run(self, sampler: str, x: Tensor, t: float, steps: int | None, generator: torch.Generator | None,
            callback: Callback | None, rtol: float = 1e-5, atol: float = 1e-5) -> Sampled:
        """The flow's ODE dx/dt = v(x, t) from x at t to t = 1 by `sampler` (see FlowMatching.sample)."""
        grid = torch.linspace(t, 1.0, (steps or self.model.config.sample_steps) + 1, dtype=torch.float64).tolist()
        planned = {"euler": len(grid) - 1, "heun": 2 * (len(grid) - 1), "dpm-solver++": len(grid) - 1}.get(sampler)
        evaluations = 0

        def v_at(y: Tensor, ti: float) -> Tensor:
            nonlocal evaluations
            v = self.velocity(y, ti)
            evaluations += 1
            report_step(callback, evaluations, planned, x=y, x0=y + (1 - ti) * v)
            return v

        if sampler == "ode":
            shape = tuple(x.shape)
            y, nfe = rk45(lambda ti, y: v_at(y.view(shape), ti).flatten(1), x.flatten(1), t, 1.0, rtol, atol)
            return y.view(shape), nfe
        if sampler == "dpm-solver++":
            return dpm_solver_pp_2m(lambda y, i: y + (1 - grid[i]) * v_at(y, grid[i]), x, grid, [1 - ti for ti in grid])
        return (euler if sampler == "euler" else heun)(lambda y, i: v_at(y, grid[i]), x, grid)
