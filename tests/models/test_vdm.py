"""VDM against its mathematics, in float64 with random weights: the learned schedule rises strictly
with the derivative it reports, and stays monotone under training; the bound of a Gaussian toy (the
exact noise predictor of N(0, 1) data) equals its closed form up to Monte-Carlo error; the diffusion
term depends on the schedule only through its end points; the shape's gradient is that of the mean
squared estimate and every other gradient that of the bound; the samplers of the toy draw N(0, S^2)
and the ODE samplers converge to the probability-flow solution."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import genzoo
from genzoo.data.spec import DataSpec
from tiny import tiny

SPEC = DataSpec(1, 4, 4, 5)


def vdm(**over):
    model = genzoo.create("vdm", SPEC, seed=0, **{**tiny("vdm"), "dropout": 0.0, **over}).double().eval()
    with torch.no_grad():  # random weights away from the initialisation (the U-Net's last layer starts at zero)
        for name, p in model.named_parameters():
            if name != "ends":
                p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    return model


def set_ends(model, g0, g1):
    with torch.no_grad():
        model.ends.copy_(torch.tensor([g0, math.log(g1 - g0)], dtype=torch.float64))


def test_the_learned_schedule_rises_strictly_between_its_end_points_with_the_derivative_it_reports():
    model = vdm()
    set_ends(model, -6.0, 4.0)
    t = torch.linspace(0, 1, 2001, dtype=torch.float64)
    g, dg = model.gamma(t)
    g, dg = g.detach(), dg.detach()
    assert abs(float(g[0]) + 6) < 1e-12 and abs(float(g[-1]) - 4) < 1e-12
    assert (g.diff() > 0).all() and (dg > 0).all()
    central = (g[2:] - g[:-2]) / (t[2:] - t[:-2])
    torch.testing.assert_close(central, dg[1:-1], rtol=1e-5, atol=1e-5)
    linear = vdm(schedule="linear")  # fixed: gamma_min + (gamma_max - gamma_min) t
    torch.testing.assert_close(linear.gamma(t)[0], -13.3 + 18.3 * t)


def gaussian_toy(model):
    """The exact noise predictor of N(0, 1) data under a variance-preserving process: eps_hat = sigma z."""
    model.eps = lambda z, g, labels=None, guidance=1.0: torch.sigmoid(g).sqrt().view(-1, 1, 1, 1) * z
    return model


def closed_form_nats(x, levels, g0, g1):
    """-log P(x) bound of the toy, nats per image: the decoder by Gauss-Hermite quadrature, the prior KL
    and 1/2 sum_i [ln(sigma_1^2 / sigma_0^2) - alpha_0^2 + alpha_1^2 + x_i^2 (alpha_0^2 - alpha_1^2)]."""
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    a0, a1, s0, s1 = sig(-g0), sig(-g1), sig(g0), sig(g1)
    c = 2 * x.double() / (levels - 1) - 1
    diffusion = 0.5 * (math.log(s1 / s0) - a0 + a1 + c.pow(2) * (a0 - a1)).flatten(1).sum(1)
    prior = 0.5 * (s1 + a1 * c.pow(2) - 1 - math.log(s1)).flatten(1).sum(1)
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # E over N(0, 1)
    centres = np.linspace(-1, 1, levels)
    decoder = np.zeros(levels)
    for k in range(levels):  # E_e[-log softmax_j(-(c_k + r e - c_j)^2 / (2 r^2))_k], r = exp(g0 / 2)
        z = centres[k] + math.exp(g0 / 2) * nodes
        logits = -0.5 * ((z[:, None] - centres[None]) / math.exp(g0 / 2)) ** 2
        log_p = logits[:, k] - np.logaddexp.reduce(logits, axis=1)
        decoder[k] = -(weights * log_p).sum() / weights.sum()
    recon = torch.tensor(decoder)[x.long()].flatten(1).sum(1)
    return recon + prior + diffusion


def test_the_bound_of_a_gaussian_toy_equals_its_closed_form():
    model = gaussian_toy(vdm())
    set_ends(model, -3.0, 2.5)  # a decoder that does not round perfectly, a prior term that is not zero
    x = torch.randint(0, 5, (4, *SPEC.shape), generator=torch.Generator().manual_seed(0))
    copies = x.repeat(1000, 1, 1, 1)
    nats = -model.log_likelihood(copies, generator=torch.Generator().manual_seed(1), samples=4).nats
    truth = closed_form_nats(x, 5, -3.0, 2.5)
    estimate = nats.view(1000, 4)
    se = estimate.std(0) / math.sqrt(1000)
    assert ((estimate.mean(0) - truth).abs() < 4 * se).all(), (estimate.mean(0), truth, se)
    assert (se < 0.01 * truth).all()  # precise enough that a wrong term would show


def diffusion_mean(model, x, batches=20, seed=0):
    """Mean and standard error of the diffusion term of each image in x: `batches` estimates, each over
    500 draws with t stratified, t_j = (u + j / 500) mod 1."""
    g = torch.Generator().manual_seed(seed)
    means = []
    with torch.no_grad():
        for _ in range(batches):
            u = torch.rand((), generator=g, dtype=torch.float64)
            t = ((u + torch.arange(500, dtype=torch.float64) / 500) % 1).repeat_interleave(len(x))
            means.append(model.diffusion(x.repeat(500, 1, 1, 1), t, None, g).view(500, len(x)).mean(0))
    d = torch.stack(means)
    return d.mean(0), d.std(0) / math.sqrt(batches)


def test_the_diffusion_term_depends_on_the_schedule_only_through_its_end_points():
    learned = vdm()
    linear = vdm(schedule="linear")
    linear.net.load_state_dict(learned.net.state_dict())  # the same network, two schedule shapes
    set_ends(learned, -13.3, 5.0)
    with torch.no_grad():  # a shape far from linear: the sigmoid units dominate the linear term
        learned.shape_net.a.fill_(-4.0)
        learned.shape_net.w.mul_(4.0)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    assert (learned.gamma(t)[0] - linear.gamma(t)[0]).abs().max() > 0.5  # the shapes differ
    x = torch.randint(0, 5, (3, *SPEC.shape), generator=torch.Generator().manual_seed(2))
    a, sa = diffusion_mean(learned, x)
    b, sb = diffusion_mean(linear, x, seed=1)
    assert ((a - b).abs() < 4 * (sa ** 2 + sb ** 2).sqrt()).all(), (a, b, sa, sb)
    set_ends(learned, -13.3, 2.0)  # other end points: another value, far outside the error
    c, sc = diffusion_mean(learned, x)
    assert ((a - c).abs() > 10 * (sa ** 2 + sc ** 2).sqrt()).all()


def test_the_shape_gets_the_gradient_of_the_squared_estimate_and_the_rest_that_of_the_bound():
    model = vdm().train()
    x = torch.randint(0, 5, (6, *SPEC.shape), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(5)
    model.loss(x).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    torch.manual_seed(5)  # the same draws by hand: the times, the noise of z_t, the decoder's noise
    B, per_dim = len(x), 1 / (SPEC.dims * math.log(2))
    t = ((torch.rand(()) + torch.arange(B) / B) % 1).double()
    diffusion = model.diffusion(x, t, None)
    bound = ((model.reconstruction(x) + model.prior_kl(x) + diffusion) * per_dim).mean()
    shape = [p for n, p in model.named_parameters() if n.startswith("shape_net")]
    rest = [(n, p) for n, p in model.named_parameters() if not n.startswith("shape_net")]
    want_shape = torch.autograd.grad((diffusion * per_dim).pow(2).mean(), shape, retain_graph=True)
    want_rest = torch.autograd.grad(bound, [p for _, p in rest])
    for (n, _), w in zip([(n, p) for n, p in model.named_parameters() if n.startswith("shape_net")], want_shape):
        torch.testing.assert_close(got[n], w)
    for (n, _), w in zip(rest, want_rest):
        torch.testing.assert_close(got[n], w)
    assert all(float(w.abs().max()) > 0 for w in want_shape)


def test_the_schedule_stays_monotone_under_training():
    model = vdm().train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("shape_net") or n == "ends"}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    torch.manual_seed(0)
    for _ in range(40):
        x = torch.randint(0, 5, (16, *SPEC.shape))
        optimizer.zero_grad()
        model.loss(x).backward()
        optimizer.step()
    moved = max(float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters() if n in before)
    assert moved > 0.2  # training moved the schedule
    t = torch.linspace(0, 1, 5001, dtype=torch.float64)
    with torch.no_grad():
        g, dg = model.gamma(t)
    assert (g.diff() > 0).all() and (dg > 0).all()


S = 0.4  # data N(0, S^2) per pixel: eps_hat = (z - alpha x_hat) / sigma, x_hat = alpha S^2 z / (alpha^2 S^2 + sigma^2)


def toy_sampler_model():
    model = vdm()
    set_ends(model, -8.0, 6.0)

    def eps(z, g, labels=None, guidance=1.0):
        a2, s2 = torch.sigmoid(-g).view(-1, 1, 1, 1), torch.sigmoid(g).view(-1, 1, 1, 1)
        x_hat = a2.sqrt() * S ** 2 * z / (a2 * S ** 2 + s2)
        return (z - a2.sqrt() * x_hat) / s2.sqrt()

    model.eps = eps
    return model


@pytest.mark.parametrize("sampler, steps", [("ancestral", 200), ("heun", 30), ("dpm-solver++", 30), ("euler", 200)])
def test_the_samplers_of_the_toy_draw_its_variance(sampler, steps):
    process = toy_sampler_model().reverse_process(None, 1.0)
    start = torch.randn(2000, *SPEC.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x, _ = process.run(sampler, start, 1.0, steps, torch.Generator().manual_seed(2), None)
    assert abs(float(x.std()) - S) < 0.01, float(x.std())


def test_heun_converges_to_the_probability_flow_solution():
    model = toy_sampler_model()
    process = model.reverse_process(None, 1.0)
    start = torch.randn(100, *SPEC.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (a1, s1), (a0, s0) = process.alpha_sigma(1.0), process.alpha_sigma(0.0)
    # in x~ = z / alpha and s = sigma / alpha the flow is x~(s) proportional to sqrt(S^2 + s^2)
    truth = start / a1 * math.sqrt(S ** 2 + (s0 / a0) ** 2) / math.sqrt(S ** 2 + (s1 / a1) ** 2)
    errors = [float((process.run("heun", start.clone(), 1.0, n, None, None)[0] - truth).abs().max()) for n in (5, 20, 80)]
    assert errors[0] / errors[1] > 8 and errors[1] / errors[2] > 8 and errors[2] < 0.005, errors


def test_the_likelihood_repeats_with_its_generator_and_depends_on_the_class():
    model = vdm(num_classes=3)
    x = torch.randint(0, 5, (4, *SPEC.shape), generator=torch.Generator().manual_seed(0))
    a, b, c = (model.log_likelihood(x, torch.full((4,), y), torch.Generator().manual_seed(1)).nats for y in (0, 0, 1))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert model.log_likelihood(x, torch.zeros(4, dtype=torch.long)).kind == "lower_bound"


def test_the_decoder_is_the_same_a_few_values_at_a_time(monkeypatch):
    from genzoo.models.diffusion import vdm as module

    model = vdm()
    set_ends(model, -3.0, 2.5)
    x = torch.randint(0, 5, (3, *SPEC.shape), generator=torch.Generator().manual_seed(4))
    whole = model.reconstruction(x, torch.Generator().manual_seed(0))
    monkeypatch.setattr(module, "DECODER_CHUNK", 7)  # one value at a time (7 // 5 levels)
    torch.testing.assert_close(model.reconstruction(x, torch.Generator().manual_seed(0)), whole)


def test_guidance_mixes_the_conditional_and_the_null_class_predictions():
    model = vdm(num_classes=3)
    z = torch.randn(2, *SPEC.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g, labels = torch.tensor([-2.0, 1.0], dtype=torch.float64), torch.tensor([1, 2])
    u, c = model.eps(z, g, torch.full((2,), 3)), model.eps(z, g, labels)
    assert not torch.allclose(u, c)
    torch.testing.assert_close(model.eps(z, g, labels, 3.0), u + 3.0 * (c - u))
    model.sample(2, torch.Generator().manual_seed(0), sampler="euler", steps=3, guidance=2.0, label=1)
    assert model.sample_stats().nfe == 2 * 3
