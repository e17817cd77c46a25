"""RePaint through the one reverse-process interface (reverse.py) on a Gaussian toy where the exact
noise prediction is known in closed form: with the exact eps of 2-D Gaussian data, inpainting one
coordinate given the other comes close to the exact Gaussian conditional (RePaint is an
approximation that resampling improves: with 20 resamplings over 100 steps its mean and spread are
within 0.02 of the truth), where plain replacement (one resampling) is far more off; the same for the
discrete-time process and for a continuous Gaussian path (the generic kernels of `GaussianPath`, as
score-sde and flow-matching use them); known pixels come back exactly."""
from __future__ import annotations

import pytest
import torch

import genzoo
from genzoo.data.spec import DataSpec
from genzoo.models.diffusion.process import DiscreteReverse, GaussianDiffusion
from genzoo.models.diffusion.reverse import GaussianPath, repaint
from genzoo.models.diffusion.samplers import repaint_levels
from genzoo.models.diffusion.schedules import make_betas
from tiny import tiny

SIGMA = 0.25 * torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)


def exact_eps(process: GaussianDiffusion):
    """E[eps | x_t] = s (a^2 Sigma + s^2 I)^-1 x_t for x_0 ~ N(0, Sigma), x_t = a x_0 + s eps."""
    def net(xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = process.alpha_bar[t.long()].double()
        a2, s = abar, (1 - abar).sqrt()
        cov = a2[:, None, None] * SIGMA + (1 - a2)[:, None, None] * torch.eye(2, dtype=torch.float64)
        eps = s[:, None] * torch.linalg.solve(cov, xt.view(-1, 2)).view(-1, 2)
        return eps.view_as(xt)
    return net


def test_the_schedule_goes_down_with_jumps_back_up_and_one_resampling_is_replacement():
    assert repaint_levels(6, 2, 1) == [6, 5, 4, 3, 2, 1, 0]
    levels = repaint_levels(6, 2, 2)
    assert levels[0] == 6 and levels[-1] == 0 and all(abs(a - b) == 1 for a, b in zip(levels, levels[1:]))
    assert sum(b < a for a, b in zip(levels, levels[1:])) == 6 + 2 * 2  # two jump points, two levels each
    for top, jump in ((25, 10), (7, 3), (100, 5)):  # never above the top, whatever divides what
        levels = repaint_levels(top, jump, 3)
        assert max(levels) == top and levels[0] == top and levels[-1] == 0


class LinearToy(GaussianPath):
    """flow-matching's linear path (alpha = t, sigma = 1 - t, noise at t = 0) with the exact
    D(x, t) = E[x_0 | x_t] = t Sigma (t^2 Sigma + (1 - t)^2 I)^-1 x_t of x_0 ~ N(0, Sigma)."""

    top, evaluations, samplers = 0.0, 1, ()

    def alpha_sigma(self, t):
        return t, 1.0 - t

    def denoise(self, x, t):
        cov = t ** 2 * SIGMA + (1 - t) ** 2 * torch.eye(2, dtype=torch.float64)
        return (t * SIGMA @ torch.linalg.solve(cov, x.view(-1, 2).T)).T.reshape(x.shape)

    def prior(self, shape, generator):
        return torch.randn(tuple(shape), generator=generator, dtype=torch.float64)

    def ladder(self, steps):
        return torch.linspace(0.0, 1.0, 101, dtype=torch.float64).tolist()


def conditional_moments(resamplings: int, continuous: bool = False) -> tuple[float, float]:
    process = GaussianDiffusion(make_betas("linear", 100, 1e-4, 0.05), "fixed_small", "eps", 256).double()
    reverse = LinearToy() if continuous else DiscreteReverse(process, exact_eps(process), False, 1, torch.device("cpu"),
                                                             torch.float64)
    n = 4000
    x0 = torch.zeros(n, 2, 1, 1, dtype=torch.float64)
    x0[:, 0] = 0.3
    known = torch.zeros(n, 2, 1, 1, dtype=torch.bool)
    known[:, 0] = True
    out, nfe = repaint(reverse, x0, known, jump_length=5, resamplings=resamplings,
                       generator=torch.Generator().manual_seed(0))
    assert nfe == 100 + (resamplings - 1) * 5 * 19  # 19 jump points below level 100
    assert torch.equal(out[:, 0], x0[:, 0])
    return float(out[:, 1].mean()), float(out[:, 1].std())


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "linear-path"])
def test_repaint_with_the_exact_eps_samples_the_exact_gaussian_conditional(continuous):
    mean, sd = 0.8 * 0.3, (0.25 * (1 - 0.8 ** 2)) ** 0.5  # x_2 | x_1 = 0.3: N(0.24, 0.3^2)
    got_mean, got_sd = conditional_moments(20, continuous)
    assert abs(got_mean - mean) < 0.02 and abs(got_sd - sd) < 0.02, (got_mean, got_sd)
    plain_mean, _ = conditional_moments(1, continuous)  # replacement ignores what the known pixel says of the unknown
    assert abs(plain_mean - mean) > 3 * abs(got_mean - mean)


def test_ddpm_inpainting_keeps_the_known_pixels_bit_identical():
    model = genzoo.create("ddpm", DataSpec(1, 8, 8, 17), seed=0, **tiny("ddpm")).eval()
    x = torch.randint(0, 17, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    known = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) < 0.5
    out = model.inpaint(x, known, generator=torch.Generator().manual_seed(2), jump_length=5, resamplings=2)
    assert torch.equal(out[known], x[known]) and model.sample_stats().sampler == "repaint (jump 5, 2 resamplings)"
