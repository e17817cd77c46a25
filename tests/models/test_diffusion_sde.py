"""Score SDEs: integrators, divergences, the probability-flow likelihood and the samplers against
a 1-D Gaussian whose score is known in closed form (float64)."""
import math

import pytest
import torch

import genzoo
from genzoo.models.diffusion.ode import divergence_exact, divergence_hutchinson, rk4, rk45
from genzoo.models.diffusion.sde_process import VESDE, VPSDE, ode_log_likelihood, ode_sample, pc_sample

MU, SD = 0.3, 0.5


def prior(sde, shape, generator):
    return torch.randn(shape, generator=generator, dtype=torch.float64) * sde.prior_std()


def gaussian_score(sde):
    """grad log p_t for data N(MU, SD^2): p_t = N(m MU, m^2 SD^2 + s^2)."""
    def score(x, t):
        m, s = sde.marginal(t)
        m, s = m.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)
        return -(x - m * MU) / (m ** 2 * SD ** 2 + s ** 2)
    return score


def log_normal(x, mu, sd):
    return -0.5 * ((x - mu) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)


@pytest.mark.parametrize("method", ["rk4", "rk45"])
def test_integrators_solve_a_linear_ode(method):
    A = torch.tensor([[0.0, 1.0], [-4.0, -0.3]], dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.0], [0.2, -1.0]], dtype=torch.float64)
    f = lambda t, y: y @ A.T  # noqa: E731
    y1, _ = (rk4(f, y0, 0.0, 2.0, 400) if method == "rk4" else rk45(f, y0, 0.0, 2.0, 1e-9, 1e-9))
    torch.testing.assert_close(y1, y0 @ torch.linalg.matrix_exp(2.0 * A).T, rtol=1e-7, atol=1e-7)
    back, _ = (rk4(f, y1, 2.0, 0.0, 400) if method == "rk4" else rk45(f, y1, 2.0, 0.0, 1e-9, 1e-9))
    torch.testing.assert_close(back, y0, rtol=1e-6, atol=1e-6)


def test_divergences_match_the_jacobian_trace():
    torch.manual_seed(0)
    W = torch.randn(12, 12, dtype=torch.float64)
    x = torch.randn(3, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    out = torch.tanh(x.flatten(1) @ W.T).view_as(x)
    traces = torch.stack([torch.autograd.functional.jacobian(lambda v: torch.tanh(v @ W.T), x.flatten(1)[i]).trace()
                          for i in range(3)])
    torch.testing.assert_close(divergence_exact(out, x), traces)
    g = torch.Generator().manual_seed(1)
    f = lambda: torch.tanh(x.flatten(1) @ W.T).view_as(x)  # noqa: E731
    est = torch.stack([divergence_hutchinson(f(), x, torch.randint(0, 2, x.shape, generator=g).double() * 2 - 1)
                       for _ in range(4000)]).mean(0)
    torch.testing.assert_close(est, traces, atol=0.15, rtol=0)


@pytest.mark.parametrize("sde,tol", [(VPSDE(0.1, 70.0), 1e-4), (VESDE(1e-4, 1000.0), 2e-3)])
def test_probability_flow_likelihood_of_a_gaussian_is_its_density(sde, tol):
    """With the exact score, log p_0 by the ODE equals the true density. The tolerance is the gap
    between p_1 and the prior (mean m(1) MU for VP, MU for VE), both near N(0, prior)."""
    x = torch.tensor([-1.0, 0.0, 0.3, 1.2], dtype=torch.float64).view(4, 1, 1, 1)
    lp, _, _ = ode_log_likelihood(sde, gaussian_score(sde), x, t0=0.0, method="rk45", rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(lp, log_normal(x.flatten(), MU, SD), atol=tol, rtol=0)


def test_samplers_with_the_exact_score_draw_the_data_distribution():
    sde = VPSDE()
    g = torch.Generator().manual_seed(0)
    shape = (4000, 1, 1, 1)
    pc, _ = pc_sample(sde, gaussian_score(sde), prior(sde, shape, g), 150, eps=1e-3, snr=0.1, generator=g)
    ode, _ = ode_sample(sde, gaussian_score(sde), prior(sde, shape, g), eps=1e-3, rtol=1e-6, atol=1e-6)
    se = SD / math.sqrt(shape[0])
    for x in (pc, ode):
        assert abs(x.mean().item() - MU) < 5 * se
        assert abs(x.std().item() - SD) < 0.05 * SD


def test_score_sde_bound_is_finite_and_hutchinson_averages_to_the_exact_divergence():
    spec = genzoo.DataSpec(2, 1, 1, 9)
    model = genzoo.create("score-sde", spec, base_channels=8, channel_mults=(1,), attention_resolutions=()).double().eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randint(0, 9, (3, 2, 1, 1), generator=torch.Generator().manual_seed(0))
    exact = model.log_likelihood(x, torch.Generator().manual_seed(1), divergence="exact", method="rk4", steps=10)
    assert exact.kind == "lower_bound" and torch.isfinite(exact.nats).all()
    auto = model.log_likelihood(x, torch.Generator().manual_seed(1), method="rk4", steps=10)
    torch.testing.assert_close(auto.nats, exact.nats)  # 2 dimensions: "auto" is exact
    # Hutchinson: the same trajectory, the divergence estimated; its average over probes is exact
    y = model.dequantize(x, torch.Generator().manual_seed(2))
    n = 200
    lp_exact, _, _ = ode_log_likelihood(model.sde, model.score, y, 1e-5, 1.0, "exact", "rk4", 5)
    lp_h, _, _ = ode_log_likelihood(model.sde, model.score, y.repeat(n, 1, 1, 1), 1e-5, 1.0, "hutchinson", "rk4", 5,
                                    generator=torch.Generator().manual_seed(3))
    est = lp_h.view(n, 3).mean(0)
    se = lp_h.view(n, 3).std(0) / math.sqrt(n)
    assert ((est - lp_exact).abs() < 5 * se + 1e-9).all()
    assert (se > 0).all()


@pytest.mark.parametrize("kind", ["vp", "ve"])
def test_score_sde_samples_and_loss(kind):
    spec = genzoo.DataSpec(1, 4, 4, 5)
    model = genzoo.create("score-sde", spec, sde=kind, base_channels=8, attention_resolutions=(2,), sample_steps=5)
    x = torch.randint(0, 5, (4, 1, 4, 4))
    assert torch.isfinite(model.loss(x))
    for sampler in ("pc", "em"):
        s = model.sample(2, torch.Generator().manual_seed(0), sampler=sampler)
        assert s.shape == (2, 1, 4, 4) and 0 <= s.min() and s.max() <= 4
    s = model.sample(2, torch.Generator().manual_seed(0), sampler="ode", method="rk4", steps=3)
    assert s.shape == (2, 1, 4, 4)
    with pytest.raises(genzoo.GenzooError):
        model.sample(2, sampler="ddim")
