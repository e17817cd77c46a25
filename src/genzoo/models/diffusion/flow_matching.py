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
from typing import Any, ClassVar, Optional

import torch
from torch import Tensor

from ...data.spec import DataSpec
from ...data.transforms import from_centered, to_centered
from ...errors import GenzooError
from ...functional import standard_normal_log_prob, widen
from ..base import LogLikelihood, SampleStats
from ..helpers import Callback, as_levels, check_positive, check_strength, eval_mode, report_step
from .continuous import ContinuousTimeModel, UNetConfig, build_unet
from .ode import rk45
from .samplers import check_sampler, check_steps, dpm_solver_pp_2m, euler, heun

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
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 2000, "batch_size": 64, "lr": 2e-3, "warmup_steps": 100,
                                                "ema_decay": 0.995, "eval_every": 500}

    def __init__(self, spec: DataSpec, config: FlowMatchingConfig) -> None:
        super().__init__(spec, config)
        self.net = build_unet(spec, config, config.num_classes)

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
        check_sampler(sampler, FM_SAMPLERS)
        check_steps(steps)
        if not isinstance(guidance, (int, float)) or isinstance(guidance, bool):
            raise GenzooError(f"guidance must be a number, got {guidance!r}.")
        labels = self.classes_to_draw(n, label, labels, guidance)
        x0 = torch.randn((n, *self.spec.shape), generator=generator, device=self.device, dtype=self._dtype())
        return self._integrate(x0, 0.0, sampler, steps, labels, guidance, rtol, atol, callback)

    @torch.no_grad()
    def edit(self, x: Tensor, strength: float, generator: torch.Generator | None = None, sampler: str = "heun",
             steps: Optional[int] = None, label: Optional[int] = None, guidance: float = 1.0,
             labels: Tensor | None = None, callback: Callback | None = None) -> Tensor:
        """SDEdit on the linear path: x_s = (1 - s) z + s x at s = 1 - strength, z ~ N(0, I), then the ODE
        from s to 1 by `sampler` on `steps` equal steps (default sample_steps); strength 0 returns x."""
        if check_strength(strength) == 0:
            return x.clone()
        check_sampler(sampler, FM_SAMPLERS)
        check_steps(steps)
        labels = self.classes_to_draw(len(x), label, labels, guidance)
        s = 1.0 - strength
        data = to_centered(x, self.spec.levels, self._dtype())
        z = torch.randn(data.shape, generator=generator, device=data.device, dtype=data.dtype)
        out = self._integrate((1 - s) * z + s * data, s, sampler, steps, labels, guidance,
                              1e-5, 1e-5, callback)
        self._sample_stats = SampleStats(f"sdedit {sampler} from t = {s:.3g}", self._sample_stats.nfe)
        return out

    def _integrate(self, x0: Tensor, t_start: float, sampler: str, steps: Optional[int], labels: Tensor | None,
                   guidance: float, rtol: float, atol: float, callback: Callback | None) -> Tensor:
        """The flow's ODE dx/dt = v(x, t) from x0 at t_start to t = 1 by `sampler`, as levels."""
        n, shape = len(x0), tuple(x0.shape)
        per_call = 2 if labels is not None and guidance != 1.0 else 1
        t = torch.linspace(t_start, 1.0, (steps or self.config.sample_steps) + 1, dtype=torch.float64).tolist()
        with eval_mode(self):
            planned = {"euler": len(t) - 1, "heun": 2 * (len(t) - 1), "dpm-solver++": len(t) - 1}.get(sampler)
            watch, evaluations = as_levels(callback, self.spec.levels), 0

            def v_at(x: Tensor, ti: float) -> Tensor:
                nonlocal evaluations
                v = self.velocity(x, torch.full((n,), ti, dtype=x.dtype, device=x.device), labels, guidance)
                evaluations += 1
                report_step(watch, evaluations, planned, x=x, x0=x + (1 - ti) * v)
                return v

            if sampler == "ode":
                y, nfe = rk45(lambda ti, y: v_at(y.view(shape), ti).flatten(1), x0.flatten(1), t_start, 1.0, rtol, atol)
                y = y.view(shape)
            elif sampler == "dpm-solver++":
                y, nfe = dpm_solver_pp_2m(lambda x, i: x + (1 - t[i]) * v_at(x, t[i]), x0, t, [1 - ti for ti in t])
            else:
                solve = euler if sampler == "euler" else heun
                y, nfe = solve(lambda x, i: v_at(x, t[i]), x0, t)
        self._sample_stats = SampleStats(sampler, nfe * per_call)
        return from_centered(y, self.spec.levels)
