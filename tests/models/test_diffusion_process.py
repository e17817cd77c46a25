"""The Gaussian diffusion process against its closed forms, in float64 (0-based time steps)."""
import math

import pytest
import torch

import genzoo
from genzoo.models.diffusion import schedules as S


@pytest.fixture
def betas():
    return S.linear_betas(1000)


def test_default_ddpm_schedule_is_the_contract():
    model = genzoo.create("ddpm", genzoo.DataSpec(1, 8, 8, 17), **{"base_channels": 8})
    assert model.betas.shape == (1000,) and model.alpha_bar.shape == (1000,)
    assert model.betas[0].item() == pytest.approx(1e-4) and model.betas[-1].item() == pytest.approx(0.02)
    torch.testing.assert_close(model.alpha_bar, torch.cumprod(1 - model.betas, 0))


def test_cosine_schedule_follows_its_alpha_bar():
    T, s = 200, 0.008
    abar = S.alpha_bar_of(S.cosine_betas(T))
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = torch.tensor([f(t + 1) / f(0) for t in range(T)], dtype=torch.float64)
    torch.testing.assert_close(abar[:-5], expected[:-5])  # the last betas are clipped at 0.999


def test_q_sample_has_the_closed_form_mean_and_variance(betas):
    abar = S.alpha_bar_of(betas)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    for t in (0, 10, 300, 999):
        x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
        xt = S.q_sample(abar, x0, torch.full((n,), t), torch.randn(n, 1, generator=g, dtype=torch.float64))
        se = math.sqrt((1 - abar[t].item()) / n)
        assert abs(xt.mean().item() - abar[t].sqrt().item() * 0.7) < 5 * se
        assert abs(xt.var().item() - (1 - abar[t].item())) < 5 * (1 - abar[t].item()) * math.sqrt(2 / n)


def test_iterating_q_step_matches_q_of_xt_given_x0(betas):
    abar = S.alpha_bar_of(betas)
    g = torch.Generator().manual_seed(1)
    n, t_end = 40_000, 120
    x0 = torch.linspace(-1, 1, 5, dtype=torch.float64).repeat(n // 5).view(n, 1)
    x = x0.clone()
    for t in range(t_end + 1):
        x = S.q_step(betas, x, torch.full((n,), t), torch.randn(n, 1, generator=g, dtype=torch.float64))
    mean = abar[t_end].sqrt() * x0
    resid = (x - mean) / (1 - abar[t_end]).sqrt()
    # standardized residuals are N(0, 1) and independent of x0
    assert abs(resid.mean().item()) < 0.025 and abs(resid.var().item() - 1) < 0.03
    assert abs(torch.corrcoef(torch.cat([resid, x0], 1).T)[0, 1].item()) < 0.025
    # the mean maps exactly: prod sqrt(1 - beta_s) = sqrt(abar_t)
    y = x0.clone()
    for t in range(t_end + 1):
        y = S.q_step(betas, y, torch.full((n,), t), torch.zeros_like(y))
    torch.testing.assert_close(y, mean)


@pytest.mark.parametrize("t", [1, 5, 200, 999])
def test_q_posterior_matches_bayes_rule_on_a_grid(betas, t):
    abar = S.alpha_bar_of(betas)
    x0, xt = torch.tensor([[0.4]], dtype=torch.float64), torch.tensor([[-0.3]], dtype=torch.float64)
    mean, var = S.q_posterior(betas, x0, xt, torch.tensor([t]))
    # p(x_t-1 | x_t, x_0) proportional to q(x_t-1 | x_0) q(x_t | x_t-1), on a fine grid
    sd = math.sqrt(var.item())
    grid = torch.linspace(mean.item() - 12 * sd, mean.item() + 12 * sd, 200_001, dtype=torch.float64)
    a_prev = abar[t - 1]
    log_prior = -0.5 * (grid - a_prev.sqrt() * x0.item()) ** 2 / (1 - a_prev)
    log_lik = -0.5 * (xt.item() - (1 - betas[t]).sqrt() * grid) ** 2 / betas[t]
    w = torch.softmax(log_prior + log_lik, 0)
    m = (w * grid).sum()
    v = (w * (grid - m) ** 2).sum()
    assert m.item() == pytest.approx(mean.item(), abs=1e-9 + 1e-6 * sd)
    assert v.item() == pytest.approx(var.item(), rel=1e-5)
    assert var.shape == (1, 1)


def test_q_posterior_at_step_zero_is_x0_itself(betas):
    x0, xt = torch.randn(3, 1, 2, 2, dtype=torch.float64), torch.randn(3, 1, 2, 2, dtype=torch.float64)
    mean, var = S.q_posterior(betas, x0, xt, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert var.shape == (3, 1, 1, 1) and (var == 0).all()


def test_discretized_gaussian_sums_to_one_over_the_levels():
    K = 17
    levels = torch.linspace(-1, 1, K, dtype=torch.float64)
    for mean, log_var in [(0.0, -9.0), (0.31, -3.0), (-2.0, 0.5), (0.97, -12.0)]:
        lp = S.discretized_gaussian_log_likelihood(levels, torch.full((K,), mean, dtype=torch.float64),
                                                   torch.full((K,), log_var, dtype=torch.float64), K)
        assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
        # each middle bin is the normal mass over [x - h, x + h]
        sd, h = math.exp(0.5 * log_var), 1 / (K - 1)
        Phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
        k = K // 2
        expected = Phi((levels[k].item() + h - mean) / sd) - Phi((levels[k].item() - h - mean) / sd)
        assert lp[k].exp().item() == pytest.approx(expected, abs=1e-12)


def test_normal_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(2)
    x = 0.3 + 0.5 * torch.randn(400_000, generator=g, dtype=torch.float64)
    log_q = -0.5 * ((x - 0.3) / 0.5) ** 2 - math.log(0.5)
    log_p = -0.5 * ((x + 0.1) / 0.8) ** 2 - math.log(0.8)
    kl = S.normal_kl(torch.tensor(0.3), torch.tensor(math.log(0.25)), torch.tensor(-0.1), torch.tensor(math.log(0.64)))
    assert kl.item() == pytest.approx((log_q - log_p).mean().item(), abs=3e-3)
