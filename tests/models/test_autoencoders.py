"""Autoencoders against mathematics: VAE bounds, KL, decoder normalisation; DAE corruptions; AE codes."""
from __future__ import annotations

import math

import pytest
import torch

import genzoo
from genzoo import DataSpec, GenzooError
from genzoo.models.autoencoders.vae import gaussian_kl, normal_log_prob

DIGITS = DataSpec(1, 8, 8, 17)


def tiny(name: str, spec: DataSpec = DIGITS, seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny float64 model with random, non-identity weights, in eval mode."""
    torch.manual_seed(seed)
    cfg = {"latent_dim": 3, "hidden_channels": 8, "num_blocks": 1, "dropout": 0.0, **overrides}
    model = genzoo.create(name, spec, **cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def random_levels(n: int, spec: DataSpec, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, spec.levels, (n, *spec.shape), generator=g)


# -- VAE ------------------------------------------------------------------------------------------
def exact_log_likelihood(model, x: torch.Tensor) -> torch.Tensor:
    """log P(x) = log integral p(x | z) N(z; 0, 1) dz by quadrature, for a 1-D latent."""
    z = torch.linspace(-10, 10, 2001, dtype=torch.float64)
    dz = float(z[1] - z[0])
    with torch.no_grad():
        log_px_z = model.decoder_log_prob(x.repeat(len(z), 1, 1, 1), z.repeat_interleave(len(x))[:, None])
    log_px_z = log_px_z.view(len(z), len(x))
    log_pz = -0.5 * (z ** 2 + math.log(2 * math.pi))
    return torch.logsumexp(log_px_z + log_pz[:, None], 0) + math.log(dz)


def all_images(spec: DataSpec) -> torch.Tensor:
    grids = torch.cartesian_prod(*[torch.arange(spec.levels)] * spec.dims)
    return grids.view(-1, *spec.shape)


@pytest.mark.parametrize("decoder", ["categorical", "logistic"])
def test_vae_marginal_is_a_distribution_over_discrete_images_and_bounds_sit_below_it(decoder):
    spec = DataSpec(1, 1, 2, 3)
    model = tiny("vae", spec, latent_dim=1, decoder=decoder)
    x = all_images(spec)  # all 9 images
    log_p = exact_log_likelihood(model, x)
    torch.testing.assert_close(log_p.exp().sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-6, rtol=0)

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # many independent bounds in one batch: each image repeated
        elbo = model.log_likelihood(x.repeat(500, 1, 1, 1), 1, g).nats.view(500, 9)
        iwae = model.log_likelihood(x.repeat(8, 1, 1, 1), 256, g).nats.view(8, 9)
    elbo_se, iwae_se = elbo.std(0) / math.sqrt(500), iwae.std(0) / math.sqrt(8)
    elbo, iwae = elbo.mean(0), iwae.mean(0)
    assert (elbo < log_p + 4 * elbo_se).all(), "the ELBO is above the exact log-likelihood"
    assert (elbo < log_p - 0.1).any(), "the ELBO is tight everywhere: the test is too weak to fail"
    assert (iwae < log_p + 4 * iwae_se).all(), "the IWAE bound is above the exact log-likelihood"
    assert (iwae > elbo).all()
    assert (log_p - iwae).mean() < 0.1 * (log_p - elbo).mean(), "IWAE(256) does not close the ELBO's gap"


def test_vae_iwae_rises_with_num_samples_from_the_elbo():
    spec = DataSpec(1, 4, 4, 5)
    model = tiny("vae", spec, latent_dim=2)
    x = random_levels(4, spec)
    g = torch.Generator().manual_seed(0)
    reps = {1: 400, 4: 200, 32: 100}
    bounds = {}
    with torch.no_grad():  # independent bounds in one batch: each image repeated
        for k, r in reps.items():
            nats = model.log_likelihood(x.repeat(r, 1, 1, 1), k, g).nats.view(r, len(x)).mean(1)
            bounds[k] = (nats.mean(), nats.std() / math.sqrt(r))
    for a, b in ((1, 4), (4, 32)):
        gap = bounds[b][0] - bounds[a][0]
        noise = (bounds[a][1] ** 2 + bounds[b][1] ** 2).sqrt()
        assert gap > 4 * noise, f"IWAE({b}) is not above IWAE({a}): gap {gap:.4f} +- {noise:.4f}"


def test_vae_analytic_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 5, generator=g, dtype=torch.float64)
    log_var = torch.randn(3, 5, generator=g, dtype=torch.float64)
    z = mu + (0.5 * log_var).exp() * torch.randn(200000, 3, 5, generator=g, dtype=torch.float64)
    log_ratio = normal_log_prob(z, mu, log_var) - normal_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    analytic = gaussian_kl(mu, log_var).sum(1)
    assert ((mc - analytic).abs() < 4 * se).all(), f"analytic {analytic.tolist()} vs Monte Carlo {mc.tolist()}"
    assert (gaussian_kl(torch.zeros(4), torch.zeros(4)) == 0).all()


@pytest.mark.parametrize("decoder, spec", [("categorical", DIGITS), ("logistic", DIGITS),
                                           ("logistic", DataSpec(3, 4, 4, 256))])
def test_vae_decoder_probabilities_sum_to_one_per_pixel(decoder, spec):
    model = tiny("vae", spec, decoder=decoder)
    with torch.no_grad():
        for p in model.decoder.output.parameters():  # spread the scales from sharp to flat
            p.mul_(20.0)
    z = torch.randn(5, 3, dtype=torch.float64)
    log_probs = model.decode(z)
    assert log_probs.shape == (5, spec.levels, *spec.shape)
    torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(5, *spec.shape, dtype=torch.float64))
    assert torch.isfinite(log_probs).all()
    x = random_levels(5, spec)
    picked = log_probs.gather(1, x[:, None]).flatten(1).sum(1)
    torch.testing.assert_close(model.decoder_log_prob(x, z), picked)


def test_vae_interpolation_ends_at_the_reconstructions():
    model = tiny("vae")
    x_a, x_b = random_levels(3, DIGITS, 1), random_levels(3, DIGITS, 2)
    path = model.interpolate(x_a, x_b, steps=5)
    assert path.shape == (3, 5, 1, 8, 8) and path.dtype == torch.int64
    assert torch.equal(path[:, 0], model.reconstruct(x_a))
    assert torch.equal(path[:, -1], model.reconstruct(x_b))


def test_vae_temperature_scales_the_prior():
    model = tiny("vae")
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    cold = model.sample(4, g1, temperature=1e-9, greedy=True)
    with torch.no_grad():
        mode = model.decode(torch.zeros(1, 3, dtype=torch.float64)).argmax(1).expand(4, -1, -1, -1)
    assert torch.equal(cold, mode)
    hot = model.sample(200, g2, temperature=1.0)
    assert hot.dtype == torch.int64 and 0 <= int(hot.min()) and int(hot.max()) <= 16


def test_vae_reported_bound_ignores_beta_and_free_bits():
    x = random_levels(4, DIGITS)
    plain, weighted = tiny("vae", seed=5), tiny("vae", seed=5, beta=0.1, free_bits=0.5)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    with torch.no_grad():
        torch.testing.assert_close(plain.log_likelihood(x, 1, g1).nats, weighted.log_likelihood(x, 1, g2).nats)


# -- denoising AE ---------------------------------------------------------------------------------
def test_gaussian_corruption_has_the_claimed_variance():
    spec = DataSpec(1, 32, 32, 256)
    model = tiny("dae", spec, corruption="gaussian", sigma=0.05)
    x = torch.full((16, 1, 32, 32), 128)
    noisy = model.corrupt(x, torch.Generator().manual_seed(0))
    assert noisy.dtype == torch.int64
    d = (noisy - x).double()
    want = (255 * 0.05) ** 2 + 1 / 12  # Gaussian plus rounding to the nearest level
    assert abs(d.var().item() / want - 1) < 0.05
    assert abs(d.mean().item()) < 4 * math.sqrt(want / d.numel())


def test_mask_corruption_drops_the_claimed_fraction():
    spec = DataSpec(1, 32, 32, 17)
    model = tiny("dae", spec, corruption="mask", drop_rate=0.3)
    x = torch.randint(1, 17, (16, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    noisy = model.corrupt(x, torch.Generator().manual_seed(0))
    dropped = noisy == 0
    assert torch.equal(noisy[~dropped], x[~dropped])
    assert abs(dropped.double().mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / x.numel())


def test_salt_pepper_corruption_flips_the_claimed_fraction_to_the_extremes():
    spec = DataSpec(1, 32, 32, 17)
    model = tiny("dae", spec, corruption="salt_pepper", salt_pepper_rate=0.2)
    x = torch.randint(1, 16, (16, 1, 32, 32), generator=torch.Generator().manual_seed(1))
    noisy = model.corrupt(x, torch.Generator().manual_seed(0))
    changed = noisy != x
    assert ((noisy[changed] == 0) | (noisy[changed] == 16)).all()
    n = x.numel()
    assert abs(changed.double().mean().item() - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)
    assert abs((noisy == 16).double().mean().item() - 0.1) < 4 * math.sqrt(0.1 * 0.9 / n)


def test_corruption_is_reproducible_with_a_generator_and_stays_in_range():
    model = tiny("dae", sigma=2.0)
    x = random_levels(8, DIGITS)
    a = model.corrupt(x, torch.Generator().manual_seed(0))
    b = model.corrupt(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and int(a.min()) >= 0 and int(a.max()) <= 16


@pytest.mark.parametrize("overrides, field", [
    ({"sigma": -0.1}, "sigma"),
    ({"drop_rate": 1.5}, "drop_rate"),
    ({"salt_pepper_rate": -0.2}, "salt_pepper_rate"),
    ({"corruption": "blur"}, "corruption"),
    ({"latent_dim": 0}, "latent_dim"),
])
def test_bad_dae_config_is_one_clear_sentence(overrides, field):
    with pytest.raises(GenzooError) as e:
        genzoo.create("dae", DIGITS, **overrides)
    msg = str(e.value)
    assert field in msg and "\n" not in msg and msg.endswith(".")


@pytest.mark.parametrize("overrides, field", [({"beta": -1.0}, "beta"), ({"free_bits": -0.5}, "free_bits"),
                                             ({"decoder": "gaussian"}, "decoder")])
def test_bad_vae_config_is_one_clear_sentence(overrides, field):
    with pytest.raises(GenzooError, match=field):
        genzoo.create("vae", DIGITS, **overrides)


@pytest.mark.parametrize("latent_dim", [2, 100])
def test_dae_codes_can_be_under_or_over_complete(latent_dim):
    model = tiny("dae", latent_dim=latent_dim).train()
    x = random_levels(4, DIGITS)
    assert model.encode(x).shape == (4, latent_dim)
    assert torch.isfinite(model.loss(x))


def test_dae_task_metrics_report_the_denoising_gain():
    model = tiny("dae")
    data = genzoo.data.load("digits", split="test")
    m = model.task_metrics(data, torch.Generator().manual_seed(0))
    torch.testing.assert_close(m["denoising_gain_db"], m["psnr_denoised"] - m["psnr_corrupted"])
    assert all(math.isfinite(v) for v in m.values())


# -- AE codes -------------------------------------------------------------------------------------
def test_ae_code_gaussian_is_the_running_average_of_training_codes():
    model = tiny("ae").train()
    b1, b2 = random_levels(5, DIGITS, 1), random_levels(7, DIGITS, 2)
    model.loss(b1)
    model.loss(b2)
    with torch.no_grad():
        z = model.encode(torch.cat([b1, b2]))
    torch.testing.assert_close(model.code_mean, z.mean(0))
    torch.testing.assert_close(model.code_second, z.T @ z / len(z))
    _, chol = model.code_distribution()
    torch.testing.assert_close(chol @ chol.T, torch.cov(z.T, correction=0), atol=1e-8, rtol=1e-6)


def test_ae_code_gaussian_survives_save_and_load(tmp_path):
    model = tiny("ae", latent_dim=4)
    model.fit_codes(random_levels(20, DIGITS))
    assert float(model.code_count) == 20
    genzoo.save(model, tmp_path)
    loaded = genzoo.load(tmp_path).double()
    torch.testing.assert_close(loaded.code_second, model.code_second)
    s1 = model.sample(6, torch.Generator().manual_seed(0))
    s2 = loaded.sample(6, torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and s1.dtype == torch.int64


def test_reconstruct_returns_levels():
    for name in ("ae", "dae", "vae"):
        model = tiny(name)
        x = random_levels(3, DIGITS)
        r = model.reconstruct(x)
        assert r.shape == x.shape and r.dtype == torch.int64 and 0 <= int(r.min()) and int(r.max()) <= 16


def test_models_work_on_odd_and_one_pixel_sizes():
    for spec in (DataSpec(1, 13, 11, 256), DataSpec(2, 1, 1, 256), DataSpec(3, 5, 7, 4)):
        for name, extra in (("ae", {}), ("dae", {}), ("vae", {}), ("vae", {"decoder": "logistic"})):
            model = genzoo.create(name, spec, latent_dim=2, hidden_channels=8, **extra)
            x = random_levels(2, spec)
            assert torch.isfinite(model.loss(x))
            assert model.sample(2).shape == (2, *spec.shape)
