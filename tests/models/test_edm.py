"""EDM against its mathematics: the preconditioning gives the network unit-variance inputs and
targets at every noise level on data of variance sigma_data^2; Heun on the rho = 7 levels converges
to the probability-flow ODE's solution as the steps grow (exact denoiser of Gaussian data, whose
ODE has a closed form), and draws the data's variance; churn adds noise and keeps the NFE; the
loss is lambda(sigma) ||D - y||^2, which is ||F - target||^2."""
from __future__ import annotations

import math

import pytest
import torch

import genzoo
from genzoo.data.spec import DataSpec
from genzoo.models.diffusion import reverse
from tiny import tiny

SPEC = DataSpec(1, 8, 8, 17)


def edm(**over):
    return genzoo.create("edm", SPEC, seed=0, **{**tiny("edm"), **over}).double().eval()


@pytest.mark.parametrize("sigma", [0.002, 0.05, 0.5, 3.0, 80.0])
def test_the_preconditioning_gives_unit_variance_inputs_and_targets(sigma):
    model = edm()
    sd = model.config.sigma_data
    g = torch.Generator().manual_seed(0)
    y = sd * torch.randn(20000, 1, 1, 1, generator=g, dtype=torch.float64)
    x = y + sigma * torch.randn(y.shape, generator=g, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = model.preconditioning(torch.full((len(y),), sigma, dtype=torch.float64))
    assert abs(float((c_in * x).var()) - 1) < 0.03
    assert abs(float(((y - c_skip * x) / c_out).var()) - 1) < 0.03
    assert torch.allclose(c_noise, torch.full_like(c_noise, math.log(sigma) / 4))


S = 0.4  # the toy data: N(0, S^2) per pixel, whose exact denoiser is S^2 / (S^2 + sigma^2) x


def exact(model):
    model.denoise = lambda x, sigma, labels=None, guidance=1.0: S ** 2 / (S ** 2 + sigma.view(-1, 1, 1, 1) ** 2) * x
    return model


def test_heun_converges_to_the_ode_solution_and_draws_the_datas_variance():
    model = exact(edm())
    smax = model.config.sigma_max
    process = model.reverse_process(None, 1.0)
    start = smax * torch.randn(400, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    truth = start * S / math.sqrt(S ** 2 + smax ** 2)  # x(0) = x(sigma_max) sqrt((S^2 + 0) / (S^2 + sigma_max^2))
    errors = []
    for steps in (6, 18, 72):
        x, nfe = process.run("heun", start.clone(), smax, steps, None, None)
        assert nfe == 2 * steps - 1
        errors.append(float((x - truth).abs().max()))
    # second order: four times the steps, about sixteen times closer (the last step into 0 is Euler's)
    assert errors[0] / errors[1] > 8 and errors[1] / errors[2] > 8 and errors[2] < 0.01, errors
    x, _ = reverse.sample(process, (400, 1, 8, 8), "heun", 72, torch.Generator().manual_seed(2))
    assert abs(float(x.std()) - S) < 0.01


def test_churn_adds_noise_and_keeps_the_evaluations():
    model = exact(edm())
    a = model.sample(4, generator=torch.Generator().manual_seed(0), steps=5)
    b = model.sample(4, generator=torch.Generator().manual_seed(0), steps=5, churn=10.0)
    assert not torch.equal(a, b) and model.sample_stats() == ("heun", 9)


def test_the_weighted_loss_is_the_squared_error_of_the_network_against_its_target():
    model = edm(dropout=0.0).train()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    x = torch.randint(0, 17, (3, *SPEC.shape), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5)
    loss = model.loss(x)
    torch.manual_seed(5)  # the same draws, by hand: dequantization, ln sigma, noise
    y = model.dequantize(x)
    sigma = (torch.randn(3, dtype=y.dtype) * model.config.p_std + model.config.p_mean).exp()
    noisy = y + sigma.view(-1, 1, 1, 1) * torch.randn_like(y)
    c_skip, c_out, c_in, c_noise = model.preconditioning(sigma)
    f = model.net(c_in * noisy, model.time_index(c_noise))
    torch.testing.assert_close(loss, (f - (y - c_skip * noisy) / c_out).pow(2).mean())


def test_edm_inpaints_by_repaint_keeps_the_known_pixels_and_takes_classes_with_guidance():
    model = genzoo.create("edm", SPEC, seed=0, **tiny("edm"), num_classes=3).eval()
    x = torch.randint(0, 17, (2, *SPEC.shape), generator=torch.Generator().manual_seed(0))
    known = torch.rand(2, *SPEC.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    out = model.inpaint(x, known, generator=torch.Generator().manual_seed(2), labels=torch.tensor([0, 2]),
                        jump_length=2, resamplings=2)
    assert torch.equal(out[known], x[known]) and model.sample_stats().sampler == "repaint (jump 2, 2 resamplings)"
    model.sample(2, generator=torch.Generator().manual_seed(0), label=1, guidance=2.0)
    assert model.sample_stats() == ("heun", 2 * (2 * 3 - 1))  # guidance: two passes per evaluation
