"""Flow matching against Gaussian data, whose optimal velocity on the linear path is known in closed
form, and the optimum of its loss on a tiny discrete set (float64)."""
import math

import torch

import genzoo
from genzoo.data.transforms import from_centered
from genzoo.models.diffusion.flow_matching import linear_path
from genzoo.models.diffusion.ode import change_of_variables
from tiny import tiny

MU, SD = 0.3, 0.5
SPEC = genzoo.DataSpec(2, 1, 1, 9)


def gaussian_velocity(x, t, *args):
    """E[x_1 - x_0 | x_t = x] for x_0 ~ N(0, 1), x_1 ~ N(MU, SD^2) per dimension:
    MU + (t SD^2 - (1 - t)) / ((1 - t)^2 + t^2 SD^2) (x - t MU)."""
    t = t.view(-1, *[1] * (x.ndim - 1))
    return MU + (t * SD ** 2 - (1 - t)) / ((1 - t) ** 2 + t ** 2 * SD ** 2) * (x - t * MU)


def log_normal(x, mu, sd):
    return (-0.5 * ((x - mu) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def oracle():
    model = genzoo.create("flow-matching", SPEC, **tiny("flow-matching")).double().eval()
    model.velocity = gaussian_velocity  # the optimal velocity field, in place of the network
    return model


def test_ode_of_the_optimal_velocity_maps_noise_to_the_data_gaussian():
    """In 1-D the flow is the monotone map z -> MU + SD z, the only one between the two Gaussians."""
    model = oracle()
    z = torch.randn(500, *SPEC.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for sampler, steps in (("ode", None), ("heun", 200), ("dpm-solver++", 200)):
        x = model.sample(500, torch.Generator().manual_seed(0), sampler=sampler, steps=steps, rtol=1e-9, atol=1e-9)
        expected = from_centered(MU + SD * z, SPEC.levels)
        assert (x - expected).abs().max() <= 1 and (x == expected).double().mean() > 0.99, sampler


def test_ode_log_likelihood_of_the_optimal_velocity_is_the_gaussian_density():
    y = torch.tensor([-1.0, 0.0, 0.3, 1.2, 2.0, -0.4], dtype=torch.float64).view(3, 2, 1, 1)
    z, delta, _ = change_of_variables(gaussian_velocity, y, 1.0, 0.0, "exact", rtol=1e-10, atol=1e-10)
    log_p = log_normal(z, 0.0, 1.0) + delta
    torch.testing.assert_close(log_p, log_normal(y, MU, SD), rtol=0, atol=1e-7)
    # the model's bound: the same density at its dequantized point, plus D log(bin width)
    model = oracle()
    x = torch.randint(0, SPEC.levels, (5, *SPEC.shape), generator=torch.Generator().manual_seed(1))
    ll = model.log_likelihood(x, generator=torch.Generator().manual_seed(2), rtol=1e-10, atol=1e-10)
    y = model.dequantize(x, torch.Generator().manual_seed(2))
    assert ll.kind == "lower_bound"
    torch.testing.assert_close(ll.nats, log_normal(y, MU, SD) + SPEC.dims * math.log(2 / (SPEC.levels - 1)),
                               rtol=0, atol=1e-6)


def test_flow_matching_loss_optimum_on_a_discrete_set_is_the_conditional_expectation():
    """x_0, x_1 in {-1, 1} with weights p; at t = 1/2 the pairs (-1, 1) and (1, -1) meet at x_t = 0,
    so the best v(0) is E[x_1 - x_0 | x_t = 0] = (0.3 * 2 + 0.1 * (-2)) / 0.4 = 1."""
    x0 = torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64).view(4, 1)
    x1 = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64).view(4, 1)
    p = torch.tensor([0.2, 0.3, 0.1, 0.4], dtype=torch.float64)
    xt, u = linear_path(x0, x1, torch.full((4,), 0.5, dtype=torch.float64))
    points, index = torch.unique(xt.flatten(), return_inverse=True)
    table = torch.zeros(len(points), dtype=torch.float64, requires_grad=True)  # v at each distinct x_t
    opt = torch.optim.LBFGS([table], lr=1.0, max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = (p * (table[index] - u.flatten()) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    by_hand = {-1.0: 0.0, 0.0: 1.0, 1.0: 0.0}
    for point, value in zip(points.tolist(), table.tolist()):
        assert abs(value - by_hand[point]) < 1e-8, (point, value)


def test_classifier_free_guidance_combines_the_conditional_and_null_velocities():
    spec = genzoo.DataSpec(1, 4, 4, 5)
    torch.manual_seed(0)
    model = genzoo.create("flow-matching", spec, **tiny("flow-matching"), num_classes=3, dropout=0.0).double()
    x = torch.randint(0, 5, (6, *spec.shape))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    model.loss(x, labels).backward()
    assert model.net.label_embed.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    xt = torch.randn(6, *spec.shape, dtype=torch.float64)
    t = torch.rand(6, dtype=torch.float64)
    v_c = model.velocity(xt, t, labels)
    v_u = model.velocity(xt, t, torch.full_like(labels, 3))
    assert (v_c - v_u).abs().max() > 1e-6, "the label must change the velocity"
    torch.testing.assert_close(model.velocity(xt, t, labels, guidance=2.5), v_u + 2.5 * (v_c - v_u))
    model.sample(4, torch.Generator().manual_seed(0), sampler="euler", steps=3, label=1, guidance=2.0)
    assert model.sample_stats().nfe == 6


def test_fixed_step_likelihood_converges_at_fourth_order_on_the_warped_clock():
    """RK4 runs on the clock s with t = t0 + (t1 - t0) s^2 (ode.warped_clock): the same ODE, so the
    fixed-step density converges to the exact Gaussian one, the error falling about 16x per halving."""
    y = torch.tensor([-1.0, 0.0, 0.3, 1.2, 2.0, -0.4], dtype=torch.float64).view(3, 2, 1, 1)
    exact = log_normal(y, MU, SD)
    errors = []
    for steps in (4, 8, 16):
        z, delta, _ = change_of_variables(gaussian_velocity, y, 1.0, 0.0, "exact", method="rk4", steps=steps)
        errors.append(float((log_normal(z, 0.0, 1.0) + delta - exact).abs().max()))
    assert errors[2] < 1e-4 and errors[0] / errors[1] > 8 and errors[1] / errors[2] > 8, errors
