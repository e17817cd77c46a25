"""The one reverse-process interface of the diffusion and flow-matching models, and the synthesis
written once over it: sampling from the menu, SDEdit, RePaint inpainting, guidance and trajectories.

Each of these models noises data along a Gaussian path, x_t = alpha_t x_0 + sigma_t eps, from the
data (alpha = 1, sigma = 0) to noise, in its own time coordinate: the discrete levels 0..T of
`ddpm` and `sohl-dickstein` (level L the state after L forward steps), the SDE time of `score-sde`
(data at 0), the path time of `flow-matching` (noise at 0, data at 1). A model hands the functions
below a `ReverseProcess` for the classes and guidance asked for: its network is already guided
(UNet.guided, Ho & Salimans 2022), so guidance costs `evaluations` = 2 network passes per call and
is written nowhere else. The functions never see a model, a label or a network; they see:

    prior(shape)            x at the noisiest time `top`
    noised(x_0, t)          x_t ~ q(x_t | x_0)                                  SDEdit, RePaint
    renoise(x_s, s, t)      x_t ~ q(x_t | x_s), t noisier than s                RePaint's jumps
    reverse(x_t, t, s)      x_s ~ p(x_s | x_t), s less noisy than t             RePaint's steps
    run(sampler, x, t)      a sampler of the menu (samplers.py) from x at t to the data
    ladder(steps)           the times RePaint walks, `top` first and the data last
    strength_time(s)        the time SDEdit's strength s in (0, 1] names

`GaussianPath` gives noised, renoise and reverse of any continuous Gaussian path from its
(alpha_t, sigma_t) and the model's data prediction D(x_t, t) = E[x_0 | x_t]:
    q(x_t | x_s)       = N(a x_s, v I),   a = alpha_t / alpha_s,  v = sigma_t^2 - a^2 sigma_s^2
    p(x_s | x_t)       = q(x_s | x_t, x_0 = D(x_t, t))
                       = N(a sigma_s^2 / sigma_t^2 x_t + alpha_s v / sigma_t^2 D,  v sigma_s^2 / sigma_t^2 I)
(Kingma et al. 2021, "Variational Diffusion Models", eq. 8 and 26-27: DDPM's posterior between any
two times; DDIM with eta = 1). The discrete-time process gives its own (process.py).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Sequence

import torch
from torch import Tensor

from ...data.transforms import from_centered, to_centered
from ...errors import GenzooError
from ..base import LikelihoodModel, SampleStats
from ..helpers import Callback, as_levels, check_strength, eval_mode, report_step
from .samplers import Sampled, check_sampler, check_steps, repaint_levels

Denoiser = Callable[[Tensor, float], Tensor]


class ReverseProcess(Protocol):
    """What sampling, SDEdit and RePaint need of a model's process (see the module docstring)."""

    samplers: tuple[str, ...]  # the names of the menu (samplers.MENU) its `run` takes
    top: float  # the noisiest time, where `prior` draws
    evaluations: int  # network passes per call of the guided network: 2 under guidance, else 1

    def prior(self, shape: Sequence[int], generator: torch.Generator | None) -> Tensor: ...
    def noised(self, x0: Tensor, t: float, generator: torch.Generator | None) -> Tensor: ...
    def renoise(self, x: Tensor, s: float, t: float, generator: torch.Generator | None) -> Tensor: ...
    def reverse(self, x: Tensor, t: float, s: float, generator: torch.Generator | None) -> Tensor: ...
    def ladder(self, steps: int | None) -> list[float]: ...
    def strength_time(self, strength: float) -> float: ...
    def run(self, sampler: str, x: Tensor, t: float, steps: int | None, generator: torch.Generator | None,
            callback: Callback | None, **options: Any) -> Sampled: ...


def draw(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise of x's shape, dtype and device from `generator`."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


class GaussianPath:
    """noised, renoise and reverse of a continuous Gaussian path, from `alpha_sigma(t)` (floats; (1, 0)
    at the data) and the data prediction `denoise(x, t)`; a subclass adds prior, run, ladder and
    strength_time."""

    evaluations = 1

    def alpha_sigma(self, t: float) -> tuple[float, float]:
        raise NotImplementedError

    def denoise(self, x: Tensor, t: float) -> Tensor:
        raise NotImplementedError

    def noised(self, x0: Tensor, t: float, generator: torch.Generator | None) -> Tensor:
        alpha, sigma = self.alpha_sigma(t)
        return alpha * x0 + sigma * draw(x0, generator) if sigma > 0 else x0

    def renoise(self, x: Tensor, s: float, t: float, generator: torch.Generator | None) -> Tensor:
        (alpha_s, sigma_s), (alpha_t, sigma_t) = self.alpha_sigma(s), self.alpha_sigma(t)
        a = alpha_t / alpha_s
        return a * x + max(sigma_t ** 2 - a ** 2 * sigma_s ** 2, 0.0) ** 0.5 * draw(x, generator)

    def reverse(self, x: Tensor, t: float, s: float, generator: torch.Generator | None) -> Tensor:
        return self.posterior(x, self.denoise(x, t), t, s, generator)

    def posterior(self, x: Tensor, d: Tensor, t: float, s: float, generator: torch.Generator | None) -> Tensor:
        """x_s ~ q(x_s | x_t = x, x_0 = d): the reverse step given the data prediction d."""
        (alpha_s, sigma_s), (alpha_t, sigma_t) = self.alpha_sigma(s), self.alpha_sigma(t)
        if sigma_s == 0:
            return d
        a = alpha_t / alpha_s
        v = max(sigma_t ** 2 - a ** 2 * sigma_s ** 2, 0.0)
        mean = (a * sigma_s ** 2 / sigma_t ** 2) * x + (alpha_s * v / sigma_t ** 2) * d
        return mean + (v * sigma_s ** 2 / sigma_t ** 2) ** 0.5 * draw(x, generator)


# -- the synthesis, once ------------------------------------------------------------------------

def sample(process: ReverseProcess, shape: Sequence[int], sampler: str, steps: int | None,
           generator: torch.Generator | None, callback: Callback | None = None, **options: Any) -> Sampled:
    """`sampler` from x ~ prior at `top` to the data: (x_0 in model space, NFE)."""
    x, nfe = process.run(sampler, process.prior(shape, generator), process.top, steps, generator, callback, **options)
    return x, nfe * process.evaluations


def sdedit(process: ReverseProcess, x0: Tensor, strength: float, sampler: str, steps: int | None,
           generator: torch.Generator | None, callback: Callback | None = None, **options: Any) -> Sampled:
    """SDEdit (Meng et al. 2022): x_t ~ q(x_t | x_0) at the time `strength` (0, 1] names, then
    `sampler` from there to the data: (x_0, NFE)."""
    t = process.strength_time(strength)
    x, nfe = process.run(sampler, process.noised(x0, t, generator), t, steps, generator, callback, **options)
    return x, nfe * process.evaluations


MAX_RESAMPLINGS = 1000


def check_repaint(process: ReverseProcess, steps: int | None, jump_length: int | None,
                  resamplings: int) -> tuple[list[float], int]:
    """The ladder RePaint walks for `steps` and the jump length (None: 10, or the ladder's length where
    shorter); one sentence unless jump_length is an integer from 1 to the ladder's number of steps and
    resamplings one from 1 to MAX_RESAMPLINGS."""
    times = process.ladder(steps)
    jump_length = min(10, len(times) - 1) if jump_length is None else jump_length
    for name, value, most in (("jump_length", jump_length, len(times) - 1), ("resamplings", resamplings, MAX_RESAMPLINGS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise GenzooError(f"{name} must be an integer from 1 to {most}, got {value!r}.")
    return times, jump_length


@torch.no_grad()
def repaint(process: ReverseProcess, x0: Tensor, known: Tensor, jump_length: int | None = None, resamplings: int = 10,
            steps: int | None = None, generator: torch.Generator | None = None,
            callback: Callback | None = None) -> Sampled:
    """RePaint (Lugmayr et al. 2022): down the ladder from noise, the unknown pixels from p(x_s | x_t)
    and the known ones replaced at every time by a draw of q(x_s | x_0) of the given image x0 (model
    space); at every `jump_length`-th rung going back up `jump_length` rungs by q, `resamplings` - 1
    times, so that the unknown pixels are harmonised with the known ones. resamplings = 1 is plain
    replacement. Returns (x at the data, exactly x0 where known; NFE)."""
    times, jump_length = check_repaint(process, steps, jump_length, resamplings)
    top = len(times) - 1  # rung L of repaint_levels is times[top - L]
    levels = repaint_levels(top, jump_length, resamplings)
    x, nfe = process.prior(x0.shape, generator), 0
    for step, (here, there) in enumerate(zip(levels, levels[1:])):
        t, s = times[top - here], times[top - there]
        if there < here:
            x = process.reverse(x, t, s, generator)
            nfe += process.evaluations
            x = torch.where(known, x0 if there == 0 else process.noised(x0, s, generator), x)
        else:
            x = process.renoise(x, t, s, generator)
        report_step(callback, step + 1, len(levels) - 1, x=x)
    return x, nfe


# -- the hooks of the models, once ----------------------------------------------------------------

class DiffusionModel(LikelihoodModel):
    """A likelihood model with a `reverse_process`: ddpm, sohl-dickstein, score-sde and flow-matching.
    Their `sample` and `edit` check their own options and call `_sample` / `_edit`; `inpaint` is this
    one. The results are levels; `sample_stats()` names the method and its NFE."""

    def reverse_process(self, labels: Tensor | None, guidance: float) -> ReverseProcess:
        """The model's process for sampling n = len(labels) images of those classes (None: unconditional)
        with classifier-free `guidance`."""
        raise NotImplementedError

    def time_name(self, t: float) -> str:
        """How a time of the process reads in `sample_stats()` (SDEdit's start)."""
        return f"{t:.3g}"

    def _dtype(self) -> torch.dtype:
        """The network's floating dtype."""
        for p in self.parameters():
            return p.dtype
        return torch.get_default_dtype()

    def _levels(self, what: str, callback: Callback | None, run: Callable[[Callback | None], Sampled]) -> Tensor:
        with eval_mode(self):
            x, nfe = run(as_levels(callback, self.spec.levels))
        self._sample_stats = SampleStats(what, nfe)
        return from_centered(x, self.spec.levels)

    def _sample(self, process: ReverseProcess, n: int, sampler: str, steps: int | None,
                generator: torch.Generator | None, callback: Callback | None, **options: Any) -> Tensor:
        check_sampler(sampler, process.samplers)
        return self._levels(sampler, callback, lambda watch: sample(process, (n, *self.spec.shape), sampler, steps,
                                                                      generator, watch, **options))

    def _edit(self, process: ReverseProcess, x: Tensor, strength: float, sampler: str, steps: int | None,
              generator: torch.Generator | None, callback: Callback | None, **options: Any) -> Tensor:
        if check_strength(strength) == 0:
            return x.clone()
        check_sampler(sampler, process.samplers)
        x0 = to_centered(x, self.spec.levels, dtype=self._dtype())
        what = f"sdedit {sampler} from t = {self.time_name(process.strength_time(strength))}"
        return self._levels(what, callback, lambda watch: sdedit(process, x0, strength, sampler, steps, generator,
                                                                   watch, **options))

    @torch.no_grad()
    def inpaint(self, x: Tensor, known: Tensor, generator: torch.Generator | None = None, labels: Tensor | None = None,
                jump_length: Optional[int] = None, resamplings: int = 10, steps: Optional[int] = None,
                guidance: float = 1.0, callback: Callback | None = None) -> Tensor:
        """x completed where `known` is False by RePaint (Lugmayr et al. 2022, `repaint`): the reverse
        process with the known pixels drawn from q at every time, going back up `jump_length` times
        (default 10, fewer where the ladder is shorter) `resamplings` - 1 times at every jump point;
        resamplings = 1 is plain replacement, the cheap baseline. `steps`: the rungs of the ladder of a
        continuous-time model (default its sample_steps; a discrete-time model takes all T). Known
        pixels come back exactly as given."""
        known = self.check_known(known, x)
        check_steps(steps)
        process = self.reverse_process(self.classes_to_draw(len(x), None, labels, guidance), guidance)
        _, jump_length = check_repaint(process, steps, jump_length, resamplings)
        x0 = to_centered(x, self.spec.levels, dtype=self._dtype())
        method = "replacement" if resamplings == 1 else f"repaint (jump {jump_length}, {resamplings} resamplings)"
        y = self._levels(method, callback, lambda watch: repaint(process, x0, known, jump_length, resamplings, steps,
                                                                  generator, watch))
        return torch.where(known, x, y)
