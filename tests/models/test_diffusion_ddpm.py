"""DDPM and the 2015 formulation: samplers, the variational bound in nats, and the contract pieces."""
import pytest
import torch
from torch import nn

import genzoo
from genzoo.errors import GenzooError
from genzoo.models.diffusion import samplers
from genzoo.models.diffusion.schedules import predict_x0_from_eps

SPEC = genzoo.DataSpec(1, 4, 4, 5)
TINY = {"timesteps": 12, "base_channels": 8, "channel_mults": (1, 2), "attention_resolutions": (2,),
        "validation_terms": 5, "dropout": 0.0}


def build(name="ddpm", **overrides):
    torch.manual_seed(0)
    model = genzoo.create(name, SPEC, **{**TINY, **overrides}).double().eval()
    with torch.no_grad():  # default init of the last conv is small; make the network matter
        for p in model.net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def data(n=6, seed=0):
    return torch.randint(0, SPEC.levels, (n, *SPEC.shape), generator=torch.Generator().manual_seed(seed))


def test_ddim_with_eta_one_over_all_steps_is_ancestral_sampling():
    model = build(variance="fixed_small")
    shape = (4, *SPEC.shape)
    T = model.process.timesteps
    a, _ = samplers.ancestral(model.process, model.net, shape, torch.Generator().manual_seed(3), dtype=torch.float64)
    b, _ = samplers.ddim(model.process, model.net, shape, list(range(T)), 1.0, torch.Generator().manual_seed(3),
                      dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    c, _ = samplers.ddim(model.process, model.net, shape, list(range(T)), 0.0, torch.Generator().manual_seed(3),
                      dtype=torch.float64)
    assert (a - c).abs().max() > 1e-3, "eta = 0 must differ from the stochastic sampler"


def test_ddim_at_eta_zero_draws_only_x_T():
    model = build()
    shape = (3, *SPEC.shape)
    g = torch.Generator().manual_seed(5)
    out, nfe = samplers.ddim(model.process, model.net, shape, [0, 4, 7, 11], 0.0, g, dtype=torch.float64)
    assert nfe == 4
    expected_state = torch.Generator().manual_seed(5)
    x_T = torch.randn(shape, generator=expected_state, dtype=torch.float64)
    torch.testing.assert_close(g.get_state(), expected_state.get_state())
    # one step from x_T at the largest step: x0_hat, then a deterministic chain; recompute by hand
    x = x_T
    taus = [0, 4, 7, 11]
    abar = model.alpha_bar
    for i in range(3, -1, -1):
        t = torch.full((3,), taus[i])
        eps = model.net(x, t.double())
        x0 = predict_x0_from_eps(abar, x, t, eps).clamp(-1, 1)
        if i == 0:
            break
        eps = (x - abar[taus[i]].sqrt() * x0) / (1 - abar[taus[i]]).sqrt()
        x = abar[taus[i - 1]].sqrt() * x0 + (1 - abar[taus[i - 1]]).sqrt() * eps
    torch.testing.assert_close(out, x0)


@pytest.mark.parametrize("name", ["ddpm", "sohl-dickstein"])
def test_bound_on_discrete_data_is_finite_and_at_most_zero(name):
    model = build(name)
    ll = model.log_likelihood(data(), generator=torch.Generator().manual_seed(0))
    assert ll.kind == "lower_bound" and ll.nats.shape == (6,)
    assert torch.isfinite(ll.nats).all() and (ll.nats <= 0).all()
    strided = model.validation_nats(data())
    assert torch.isfinite(strided.nats).all()


class Oracle(nn.Module):
    """The exact eps for data that is always x0: eps = (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""

    def __init__(self, x0, alpha_bar):
        super().__init__()
        self.x0, self.alpha_bar = x0, alpha_bar
        self.dtype_marker = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, xt, t):
        abar = self.alpha_bar[t.long()].view(-1, 1, 1, 1)
        return (xt - abar.sqrt() * self.x0) / (1 - abar).sqrt()


def test_bound_of_an_oracle_is_the_prior_term_plus_the_decoder():
    """With eps predicted exactly and sigma_t^2 = beta-tilde_t, every KL term vanishes: the bound is
    -L_T - L_0 with L_0 the mass of N(x0, beta-tilde_1) outside x0's bin."""
    model = build(variance="fixed_small")
    x = data(3)
    x0 = x.double() * (2 / (SPEC.levels - 1)) - 1
    model.net = Oracle(x0, model.alpha_bar)
    T = model.process.timesteps
    terms = model.bound_terms(x, torch.arange(T), torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms[:, 1:], torch.zeros(3, T - 1, dtype=torch.float64), atol=1e-8, rtol=0)
    sd = torch.exp(0.5 * model.process.log_var_small[0])
    h = 1 / (SPEC.levels - 1)
    inside = torch.special.ndtr(h / sd) - torch.special.ndtr(-h / sd)
    edge = torch.special.ndtr(h / sd)
    interior = ((x > 0) & (x < SPEC.levels - 1)).flatten(1).sum(1)
    decoder = -(interior * torch.log(inside) + (SPEC.dims - interior) * torch.log(edge))
    torch.testing.assert_close(terms[:, 0], decoder)
    ll = model.log_likelihood(x)
    torch.testing.assert_close(-ll.nats, decoder + closed_form_prior_kl(model.betas, x0))


def closed_form_prior_kl(betas, x0):
    """L_T = KL(N(sqrt(abar_T) x_0, (1 - abar_T) I) || N(0, I)) summed per image, with torch.distributions."""
    abar_T = torch.prod(1 - betas)
    q = torch.distributions.Normal(abar_T.sqrt() * x0, (1 - abar_T).sqrt())
    return torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1)


@pytest.mark.parametrize("name,variance", [("ddpm", "fixed_small"), ("ddpm", "fixed_large"),
                                           ("sohl-dickstein", "learned")])
def test_bound_equals_its_terms_from_the_closed_form_gaussians(name, variance):
    """log_likelihood = -(L_T + sum_{t>=1} L_t + L_0), each term rebuilt here in float64 from the
    betas alone (Ho et al. 2020, eqs. 5-7, 11 and 13) with torch.distributions, for a random network.
    The reverse variance at step 0 is beta-tilde_1 (beta-tilde_0 = 0 has no width)."""
    model = build(name, variance=variance, prediction="eps", timesteps=5, beta_start=0.05, beta_end=0.5)
    x = data(4)
    K, T, B = SPEC.levels, 5, 4
    x0 = x.double() * (2 / (K - 1)) - 1
    betas = model.betas
    alpha = 1 - betas
    abar = torch.cumprod(alpha, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    beta_tilde = (1 - abar_prev) / (1 - abar) * betas
    small, large = beta_tilde.clone(), betas.clone()
    small[0] = large[0] = beta_tilde[1]
    g = torch.Generator().manual_seed(7)  # the bound draws one x_t per step, from t = T-1 down to 0
    total = closed_form_prior_kl(betas, x0)
    for t in range(T - 1, -1, -1):
        xt = abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        out = model.net(xt, torch.full((B,), float(t), dtype=torch.float64))
        eps_hat = out[:, :1]
        mu = (xt - betas[t] / (1 - abar[t]).sqrt() * eps_hat) / alpha[t].sqrt()            # eq. 11
        if variance == "learned":
            frac = (out[:, 1:] + 1) / 2                        # Nichol & Dhariwal 2021, eq. 15
            var = torch.exp(frac * torch.log(betas[t]) + (1 - frac) * torch.log(small[t]))
        else:
            var = (small if variance == "fixed_small" else large)[t].expand_as(mu)
        p = torch.distributions.Normal(mu, var.sqrt())
        if t > 0:                                                                          # L_t, eqs. 6-7
            mu_tilde = (abar_prev[t].sqrt() * betas[t] / (1 - abar[t]) * x0
                        + alpha[t].sqrt() * (1 - abar_prev[t]) / (1 - abar[t]) * xt)
            q = torch.distributions.Normal(mu_tilde, beta_tilde[t].sqrt())
            total = total + torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
        else:                                                                              # L_0, eq. 13
            h = 1 / (K - 1)
            upper = torch.where(x == K - 1, torch.ones_like(x0), p.cdf(x0 + h))
            lower = torch.where(x == 0, torch.zeros_like(x0), p.cdf(x0 - h))
            total = total - torch.log(upper - lower).flatten(1).sum(1)
    ll = model.log_likelihood(x, generator=torch.Generator().manual_seed(7))
    assert ll.kind == "lower_bound"
    torch.testing.assert_close(ll.nats, -total)


@pytest.mark.parametrize("name,objective,prediction", [
    ("ddpm", "simple", "eps"), ("ddpm", "simple", "levels"), ("sohl-dickstein", "hybrid", "levels"),
    ("sohl-dickstein", "vlb", "levels"), ("sohl-dickstein", "hybrid", "eps")])
def test_objectives_are_finite_and_train_every_parameter(name, objective, prediction):
    model = build(name, objective=objective, prediction=prediction).train()
    loss = model.loss(data(8))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_learned_variance_interpolates_between_beta_tilde_and_beta():
    model = build("sohl-dickstein", prediction="eps")
    C = SPEC.channels
    for v, table in [(-1.0, model.process.log_var_small), (1.0, torch.log(model.betas))]:
        net = lambda xt, t, v=v: torch.cat([torch.zeros_like(xt), torch.full_like(xt, v)], 1)  # noqa: E731
        t = torch.tensor([3, 10])
        out = model.process.p_mean_variance(net, torch.randn(2, C, 4, 4, dtype=torch.float64), t)
        torch.testing.assert_close(out["log_var"], table[t].view(2, 1, 1, 1).expand(2, C, 4, 4))


def test_sample_contract_and_errors():
    model = build()
    x = model.sample(3, torch.Generator().manual_seed(0))
    assert x.shape == (3, *SPEC.shape) and x.dtype == torch.int64 and 0 <= x.min() and x.max() < SPEC.levels
    y = model.sample(3, torch.Generator().manual_seed(0), sampler="ddim", steps=5)
    z = model.sample(3, torch.Generator().manual_seed(0), sampler="ddim", steps=5)
    assert torch.equal(y, z)
    with pytest.raises(GenzooError):
        model.sample(2, sampler="pc")
    with pytest.raises(GenzooError):
        model.sample(2, sampler="ancestral", steps=5)
    with pytest.raises(GenzooError):
        model.q_sample(torch.zeros(2, 1, 4, 4), torch.tensor([0, 12]), torch.zeros(2, 1, 4, 4))
    with pytest.raises(GenzooError):
        genzoo.create("sohl-dickstein", SPEC, variance="fixed_small")
    with pytest.raises(GenzooError):
        genzoo.create("ddpm", SPEC, objective="vlb")


def test_even_timesteps_cover_both_ends():
    assert samplers.even_timesteps(1000, 50)[0] == 0 and samplers.even_timesteps(1000, 50)[-1] == 999
    assert len(samplers.even_timesteps(1000, 50)) == 50
    assert samplers.even_timesteps(10, 10) == list(range(10))


def test_level_posterior_is_bayes_rule_over_the_levels():
    """P(x_0 = v_k | x_t) is proportional to exp(logit_k) N(x_t; sqrt(abar_t) v_k, 1 - abar_t),
    computed here pixel by pixel with torch.distributions."""
    model = build("sohl-dickstein", variance="learned")
    K, C = SPEC.levels, SPEC.channels
    logits = torch.randn(2, C * K, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    net = lambda xt, t: torch.cat([logits, torch.zeros_like(xt)], 1)  # noqa: E731
    xt = torch.randn(2, C, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 7])
    out = model.process.p_mean_variance(net, xt, t)
    v = torch.linspace(-1, 1, K, dtype=torch.float64)
    for b in range(2):
        abar = model.alpha_bar[t[b]]
        for i in range(4):
            for j in range(4):
                lik = torch.distributions.Normal(abar.sqrt() * v, (1 - abar).sqrt()).log_prob(xt[b, 0, i, j])
                joint = logits[b, :, i, j] + lik
                post = torch.softmax(joint, 0)
                torch.testing.assert_close(out["log_probs"][b, 0, :, i, j].exp(), post)
                torch.testing.assert_close(out["x0"][b, 0, i, j], (post * v).sum())
    mean, _ = model.process.q_posterior(out["x0"], xt, t)
    torch.testing.assert_close(out["mean"], mean)


def test_level_prediction_rounds_exactly_at_low_noise():
    """Where the noise is far below the bin width the evidence decides: x_0-hat is the true level
    whatever the (random) network says, so the first KL terms nearly vanish."""
    model = build("sohl-dickstein", timesteps=200, beta_start=1e-5, beta_end=0.02)
    x = data(4)
    x0 = model.to_model_space(x)
    t = torch.zeros(4, dtype=torch.long)
    xt = model.q_sample(x0, t, torch.randn_like(x0))
    out = model.process.p_mean_variance(model.net, xt, t)
    torch.testing.assert_close(out["x0"], x0, atol=1e-9, rtol=0)
    eps_model = build("ddpm", timesteps=200, beta_start=1e-5, beta_end=0.02)
    eps_out = eps_model.process.p_mean_variance(eps_model.net, xt, t)
    assert (eps_out["x0"] - x0).abs().max() > 1e-4, "an untrained eps network does not denoise"


class Fixed(nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, xt, t):
        return self.out


def test_bound_of_a_level_oracle_is_the_prior_term_plus_the_decoder():
    """Logits sure of the true level give x_0-hat = x_0, so with beta-tilde every KL term is 0."""
    model = build("ddpm", prediction="levels", variance="fixed_small")
    x = data(3)
    K = SPEC.levels
    sure = 50.0 * torch.nn.functional.one_hot(x[:, 0], K).permute(0, 3, 1, 2).double()
    model.net = Fixed(sure)
    T = model.process.timesteps
    terms = model.bound_terms(x, torch.arange(1, T), torch.Generator().manual_seed(0))
    torch.testing.assert_close(terms, torch.zeros(3, T - 1, dtype=torch.float64), atol=1e-8, rtol=0)


def test_unknown_prediction_is_one_sentence():
    with pytest.raises(GenzooError, match="prediction must be one of eps, levels"):
        genzoo.create("ddpm", SPEC, prediction="x0")


def test_strided_bound_is_within_its_standard_error_of_the_full_bound():
    """Each image draws its own offset, so the standard error over images covers the estimator's
    noise; a shared offset would move every image alike, far beyond that error."""
    model = build()
    x = data(1).expand(400, *SPEC.shape)
    g = torch.Generator().manual_seed(1)
    full = model.log_likelihood(x, generator=g).nats
    strided = model.log_likelihood(x, generator=g, stride=4).nats
    se = (full.var() / len(full) + strided.var() / len(strided)).sqrt()
    assert abs(float(strided.mean() - full.mean())) < 4 * float(se)
    assert strided.std() > full.std(), "the offset's noise shows in the spread over images"
