"""The sampler menu: orders of convergence on an analytic ODE, DPM-Solver++ and DDIM against the
probability-flow ODE of Gaussian data, determinism and NFE for every model and sampler (float64)."""
import math

import pytest
import torch

import genzoo
from genzoo.errors import GenzooError
from genzoo.models.diffusion import samplers, schedules
from genzoo.models.diffusion.sde_process import VPSDE, ode_sample
from tiny import tiny

MU, SD = 0.3, 0.5


def test_heun_is_second_order_and_euler_first_order():
    """dy/dt = y cos t, y(0) = y0: y(t) = y0 exp(sin t). Halving the step divides Euler's error by
    about 2 and Heun's by about 4."""
    y0 = torch.tensor([[1.0], [-0.5]], dtype=torch.float64)
    exact = y0 * math.exp(math.sin(2.0))

    def error(solver, n):
        s = torch.linspace(0.0, 2.0, n + 1, dtype=torch.float64).tolist()
        y, nfe = solver(lambda y, i: y * math.cos(s[i]), y0, s)
        return (y - exact).abs().max().item(), nfe

    for solver, order, nfe_per_step in ((samplers.euler, 1, 1), (samplers.heun, 2, 2)):
        errors = [error(solver, n) for n in (20, 40, 80)]
        assert [e[1] for e in errors] == [nfe_per_step * n for n in (20, 40, 80)]
        rates = [math.log2(a[0] / b[0]) for a, b in zip(errors, errors[1:])]
        assert all(abs(r - order) < 0.15 for r in rates), (solver.__name__, rates)


def gaussian_x0(alphas, sigmas):
    """E[x_0 | x] for data N(MU, SD^2) and x = alpha x_0 + sigma eps: the exact denoiser."""
    def x0_fn(x, i):
        a, s = alphas[i], sigmas[i]
        return MU + a * SD ** 2 / (a ** 2 * SD ** 2 + s ** 2) * (x - a * MU)
    return x0_fn


@pytest.mark.parametrize("sampler", ["dpm-solver++", "euler", "heun"])
def test_samplers_converge_to_the_probability_flow_ode_solution(sampler):
    """From the same x(1), on N points of the VP SDE's path from t = 1 to t = 1e-3, evenly spaced in
    lambda = log(alpha / sigma), the result approaches the adaptive ODE solution at t = 1e-3 as N grows
    (euler on such a grid is DDIM with eta = 0)."""
    sde, eps = VPSDE(), 1e-3
    shape = (64, 1, 1, 1)

    def score(x, t):
        m, s = sde.marginal(t)
        m, s = m.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)
        return -(x - m * MU) / (m ** 2 * SD ** 2 + s ** 2)

    start = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sde.prior_std()
    reference, _ = ode_sample(sde, score, start, eps, rtol=1e-10, atol=1e-10)
    x1 = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = []
    ends = sde.marginal(torch.tensor([1.0, eps], dtype=torch.float64))
    lam_1, lam_eps = (ends[0] / ends[1]).log().tolist()
    for n in (10, 40, 160):
        lam = torch.linspace(lam_1, lam_eps, n, dtype=torch.float64)
        m, s = torch.sigmoid(2 * lam).sqrt(), torch.sigmoid(-2 * lam).sqrt()  # VP: alpha^2 + sigma^2 = 1
        out, nfe = samplers.gaussian_path(sampler, gaussian_x0(m.tolist(), s.tolist()), x1, m.tolist(), s.tolist())
        errors.append((out - reference).abs().max().item())
        assert nfe == (n - 1) * (2 if sampler == "heun" else 1)
    order = 1 if sampler == "euler" else 2  # per 4x the points, the error falls by about 4^order
    assert math.log(errors[1] / errors[2], 4) > order - 0.2 and errors[2] < (0.03 if order == 1 else 1e-3), errors


def test_ddpm_euler_is_ddim_with_eta_zero():
    """Karras et al. 2022, section 3: DDIM is Euler's method in x / alpha against sigma / alpha."""
    model = genzoo.create("ddpm", genzoo.DataSpec(1, 4, 4, 5), **tiny("ddpm"), dropout=0.0).double().eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    shape = (3, 1, 4, 4)
    a, _ = samplers.discrete(model.process, model.net, "euler", shape, 7, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
    b, _ = samplers.discrete(model.process, model.net, "ddim", shape, 7, 0.0, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    c, _ = samplers.discrete(model.process, model.net, "heun", shape, 7, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
    assert (a - c).abs().max() > 1e-4, "heun must differ from euler on a network that is not linear"


# (model, sampler, steps, expected NFE); None: the sampler decides (adaptive)
CASES = [("ddpm", "ancestral", None, 20), ("ddpm", "ddim", 5, 5), ("ddpm", "euler", 5, 5), ("ddpm", "heun", 5, 9),
         ("ddpm", "dpm-solver++", 5, 5),
         ("score-sde", "pc", 4, 8), ("score-sde", "em", 4, 4), ("score-sde", "ode", None, None),
         ("score-sde", "euler", 4, 4), ("score-sde", "heun", 4, 7), ("score-sde", "dpm-solver++", 4, 4),
         ("flow-matching", "euler", 4, 4), ("flow-matching", "heun", 4, 8), ("flow-matching", "dpm-solver++", 4, 4),
         ("flow-matching", "ode", None, None),
         ("vdm", "ancestral", None, 4), ("vdm", "euler", 4, 4), ("vdm", "heun", 4, 8), ("vdm", "dpm-solver++", 4, 4)]


@pytest.mark.parametrize("name,sampler,steps,nfe", CASES)
def test_every_sampler_is_deterministic_for_a_generator_and_reports_its_nfe(name, sampler, steps, nfe):
    spec = genzoo.DataSpec(1, 4, 4, 5)
    torch.manual_seed(0)
    model = genzoo.create(name, spec, **tiny(name)).double().eval()
    options = {"sampler": sampler, "steps": steps}
    if sampler == "ode":
        options = {"sampler": "ode", "rtol": 1e-3, "atol": 1e-3}
    a = model.sample(3, torch.Generator().manual_seed(2), **options)
    b = model.sample(3, torch.Generator().manual_seed(2), **options)
    assert torch.equal(a, b)
    stats = model.sample_stats()
    assert stats is not None and stats.sampler == sampler
    assert stats.nfe == nfe if nfe is not None else stats.nfe > 0


def test_a_sampler_that_does_not_apply_lists_those_that_do():
    model = genzoo.create("flow-matching", genzoo.DataSpec(1, 4, 4, 5), **tiny("flow-matching"))
    with pytest.raises(GenzooError, match="does not apply to this model; choose one of heun, euler, dpm-solver"):
        model.sample(2, sampler="ancestral")
    with pytest.raises(GenzooError, match="is not a sampler"):
        model.sample(2, sampler="rk9")
    with pytest.raises(GenzooError, match="steps"):
        model.sample(2, steps=0)


@pytest.mark.parametrize("rho", [7.0, math.inf])
def test_karras_sigmas_fall_from_sigma_max_to_sigma_min_evenly_in_sigma_to_the_one_over_rho(rho):
    """Karras et al. 2022, eq. 5: sigma^(1/rho) is evenly spaced; rho = inf: log sigma (= -lambda) is."""
    sigmas = torch.tensor(samplers.karras_sigmas(80.0, 0.002, 12, rho), dtype=torch.float64)
    assert sigmas[0].item() == pytest.approx(80.0, rel=1e-12) and sigmas[-1].item() == pytest.approx(0.002, rel=1e-12)
    assert (sigmas[1:] < sigmas[:-1]).all()
    even = sigmas.log() if math.isinf(rho) else sigmas ** (1 / rho)
    torch.testing.assert_close(even.diff(), even.diff()[:1].expand(11), rtol=1e-10, atol=0)


@pytest.mark.parametrize("rho", [7.0, math.inf])
def test_discrete_noise_level_grid_is_distinct_steps_from_0_to_T_minus_1_nearest_to_karras_sigmas(rho):
    alpha_bar = schedules.alpha_bar_of(schedules.make_betas("linear", 1000, 1e-4, 0.02).double())
    log_sigma = 0.5 * ((1 - alpha_bar) / alpha_bar).log()
    for steps in (1, 2, 10, 20, 100, 1000):
        taus = samplers.sigma_timesteps(alpha_bar, steps, rho)
        assert len(taus) == steps and taus[-1] == 999 and (steps == 1 or taus[0] == 0)
        assert all(a < b for a, b in zip(taus, taus[1:]))
    taus = samplers.sigma_timesteps(alpha_bar, 10, rho)  # few steps: no collisions, each the nearest
    targets = samplers.karras_sigmas(log_sigma[-1].exp().item(), log_sigma[0].exp().item(), 10, rho)[::-1]
    for t, target in zip(taus, targets):
        assert abs(log_sigma[t] - math.log(target)) <= (log_sigma - math.log(target)).abs().min() + 1e-12


@pytest.mark.parametrize("rho", [7.0, math.inf])
def test_continuous_noise_level_grid_hits_karras_sigmas_and_the_ends(rho):
    sde = VPSDE()

    def sigma(t):
        m, s = sde.marginal(t)
        return s / m

    t = samplers.sigma_times(sigma, 1.0, 1e-3, 15, rho)
    assert t[0].item() == 1.0 and t[-1].item() == 1e-3 and (t.diff() < 0).all()
    expected = samplers.karras_sigmas(sigma(t[:1]).item(), sigma(t[-1:]).item(), 15, rho)
    torch.testing.assert_close(sigma(t), torch.tensor(expected, dtype=torch.float64), rtol=1e-10, atol=0)


@pytest.mark.parametrize("sampler", ["dpm-solver++", "heun"])
def test_second_order_samplers_on_their_default_grids_converge_to_the_probability_flow_ode_solution(sampler):
    """Gaussian data N(MU, SD^2): along the probability-flow ODE (x / alpha - MU) / sqrt(SD^2 + sigma^2)
    stays constant, sigma = sigma_t / alpha_t. On a linear-beta DDPM's grid of `sigma_timesteps` (as its
    model samples) from t = T-1 to t = 0, and on a VP SDE's grid of `sigma_times` from t = 1 to 1e-3,
    the result approaches that exact solution, at second order."""
    rho = samplers.GRID_RHO[sampler]
    alpha_bar = schedules.alpha_bar_of(schedules.make_betas("linear", 1000, 1e-4, 0.02).double())
    sde = VPSDE()

    def discrete_grid(n):
        taus = samplers.sigma_timesteps(alpha_bar, n, rho)[::-1]
        return alpha_bar[taus].sqrt(), (1 - alpha_bar[taus]).sqrt()

    def sde_grid(n):
        return sde.marginal(samplers.sigma_times(lambda t: sde.marginal(t)[1] / sde.marginal(t)[0], 1.0, 1e-3, n, rho))

    x1 = torch.randn(64, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for grid in (discrete_grid, sde_grid):
        errors = []
        for n in (20, 40, 80, 160):
            alphas, sigmas = (v.tolist() for v in grid(n))
            out, _ = samplers.gaussian_path(sampler, gaussian_x0(alphas, sigmas), x1, alphas, sigmas)
            s0, s1 = sigmas[0] / alphas[0], sigmas[-1] / alphas[-1]
            exact = alphas[-1] * (MU + (x1 / alphas[0] - MU) * math.sqrt((SD ** 2 + s1 ** 2) / (SD ** 2 + s0 ** 2)))
            errors.append((out - exact).abs().max().item())
        rates = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
        assert min(rates) > 1.7 and errors[-1] < 2e-3, (grid.__name__, errors, rates)
