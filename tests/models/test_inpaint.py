"""Inpainting with an exact likelihood, checked by enumeration on a 2x2 image with 3 levels: the exact
conditional of a raster-suffix mask is P(x) / sum over the unknown sub-pixels of P(x), and both the
ancestral completion and the Gibbs sweeps (for any other mask) draw from it; known sub-pixels come
back bit-identical for every autoregressive model; other families refuse in one sentence."""
from __future__ import annotations

import pytest
import torch
from test_pixelcnn import all_images, random_pixelcnn

import genzoo
from genzoo import GenzooError
from genzoo.data.spec import DataSpec
from genzoo.models.autoregressive.common import categorical_log_prob
from genzoo.models.autoregressive.inpaint import raster_suffix
from tiny import tiny

SPEC = DataSpec(1, 2, 2, 3)


def exact_conditional(model, x: torch.Tensor, known: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every completion of x's unknown sub-pixels and its probability P(x) / sum P, by enumeration."""
    images = all_images(SPEC)
    match = (images == x[:1]) | ~known[:1]
    completions = images[match.flatten(1).all(1)]
    log_p = model.log_likelihood(completions).nats
    return completions, torch.softmax(log_p, 0)


def frequencies(samples: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
    hits = (samples.unsqueeze(1) == completions.unsqueeze(0)).flatten(2).all(2)  # (N, M)
    assert bool(hits.any(1).all()), "a sample outside the completions of x"
    return hits.double().mean(0)


def test_a_raster_suffix_mask_is_recognised_per_image():
    top_known = torch.tensor([[True, True], [False, False]]).view(1, 1, 2, 2)
    assert raster_suffix(top_known) and raster_suffix(torch.ones(1, 1, 2, 2, dtype=torch.bool))
    assert not raster_suffix(~top_known)  # bottom known, top unknown
    assert not raster_suffix(torch.cat([top_known, ~top_known]))


def test_the_raster_conditionals_of_the_unknown_pixels_are_the_exact_conditional():
    """For a raster-suffix mask, the product of the model's conditionals at the unknown sub-pixels is
    P(x) / sum over the unknown sub-pixels of P(x), in float64 with random weights."""
    model = random_pixelcnn(SPEC)
    known = torch.tensor([[True, True], [False, False]]).view(1, 1, 2, 2)
    x = torch.tensor([[2, 0], [0, 0]]).view(1, 1, 2, 2)
    completions, p = exact_conditional(model, x, known)
    logits = model.logits(completions)
    per_site = -torch.nn.functional.cross_entropy(logits, completions, reduction="none")  # (M, C, H, W)
    product = (per_site * (~known)).flatten(1).sum(1).exp()
    torch.testing.assert_close(product, p, rtol=1e-12, atol=1e-14)
    assert torch.allclose(categorical_log_prob(logits, completions), model.log_likelihood(completions).nats)


@pytest.mark.parametrize("mask", ["top known", "bottom known", "diagonal known"])
def test_inpainting_draws_from_the_exact_conditional(mask):
    model = random_pixelcnn(SPEC)
    known = {"top known": [[True, True], [False, False]], "bottom known": [[False, False], [True, True]],
             "diagonal known": [[True, False], [False, True]]}[mask]
    n = 3000
    known = torch.tensor(known).view(1, 1, 2, 2).expand(n, 1, 2, 2)
    x = torch.tensor([[1, 2], [2, 1]]).view(1, 1, 2, 2).expand(n, 1, 2, 2)
    completions, p = exact_conditional(model, x, known)
    out = model.inpaint(x, known, generator=torch.Generator().manual_seed(1), sweeps=8)
    assert torch.equal(out[known], x[known])
    assert model.sample_stats().sampler == ("exact conditional" if mask == "top known" else "gibbs (8 sweeps)")
    freq = frequencies(out, completions)
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 4.5 * se + 2e-3).all(), (freq, p)  # fails for the raster sampler alone


def test_the_raster_completion_alone_is_not_the_conditional_of_a_hole_that_gibbs_fixes():
    """The control that makes the test above able to fail: with the known pixels after the unknown
    ones, ancestral completion ignores them and is off the exact conditional."""
    model = random_pixelcnn(SPEC)
    n = 3000
    known = torch.tensor([[False, False], [True, True]]).view(1, 1, 2, 2).expand(n, 1, 2, 2)
    x = torch.tensor([[1, 2], [2, 1]]).view(1, 1, 2, 2).expand(n, 1, 2, 2)
    completions, p = exact_conditional(model, x, known)
    raster = model.sample(n, generator=torch.Generator().manual_seed(1), given=torch.where(known, x, -1))
    assert (frequencies(raster, completions) - p).abs().max() > 0.05


@pytest.mark.parametrize("name", ["pixelcnn", "gated-pixelcnn", "pixelcnn++"])
def test_known_pixels_come_back_bit_identical(name):
    spec = DataSpec(1, 4, 4, 5)
    model = genzoo.create(name, spec, seed=0, **tiny(name)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (3, 1, 4, 4), generator=g)
    known = torch.rand(3, 1, 4, 4, generator=g) < 0.5
    out = model.inpaint(x, known, generator=g, sweeps=2)
    assert out.dtype == torch.int64 and torch.equal(out[known], x[known])
    assert int(out.min()) >= 0 and int(out.max()) <= 4


def test_a_model_without_a_principled_completion_refuses_in_one_sentence():
    model = genzoo.create("glow", DataSpec(1, 8, 8, 17), **tiny("glow"))
    x = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    for name in ("glow", "vqvae"):  # flows and VQ-VAEs: one sentence that names the families that can
        model = genzoo.create(name, DataSpec(1, 8, 8, 17), **tiny(name))
        with pytest.raises(GenzooError, match="does not inpaint.*the autoregressive models, vae and the diffusion"):
            model.inpaint(x, torch.ones_like(x, dtype=torch.bool))
    pixelcnn = random_pixelcnn(SPEC)
    with pytest.raises(GenzooError, match="known must be a boolean tensor"):
        pixelcnn.inpaint(torch.zeros(1, 1, 2, 2, dtype=torch.long), torch.ones(1, 1, 2, 2))


@pytest.mark.parametrize("name", ["pixelcnn", "pixelcnn++"])
def test_the_conditional_likelihood_of_a_completion_is_exact(name):
    """log P(unknown | known) = log P(x) - log sum over the unknown sub-pixels of P(x), by enumeration."""
    model = random_pixelcnn(SPEC) if name == "pixelcnn" else genzoo.create(name, SPEC, seed=0, **tiny(name)).double().eval()
    known = torch.tensor([[True, True], [True, False]]).view(1, 1, 2, 2)
    x = torch.tensor([[0, 2], [1, 1]]).view(1, 1, 2, 2)
    completions, p = exact_conditional(model, x, known)
    truth = torch.log(p[(completions == x).flatten(1).all(1)])
    got = model.log_likelihood_given(x, known)
    assert got.kind == "exact"
    torch.testing.assert_close(got.nats, truth, rtol=1e-10, atol=1e-12)
    with pytest.raises(GenzooError, match="every unknown sub-pixel after every known one"):
        model.log_likelihood_given(x, ~known)


def test_vae_pseudo_gibbs_keeps_the_known_pixels_and_completes_from_them():
    """Images of one level throughout: a VAE that learned them fills the unknown half with the known
    half's level far more often than the 1 time in 5 of chance."""
    spec = DataSpec(1, 4, 4, 5)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (256, 1, 1, 1), generator=g).expand(256, *spec.shape).clone()
    data = genzoo.Dataset(x, spec, name="flat")
    model = genzoo.create("vae", spec, seed=0, latent_dim=2, hidden_channels=16, num_blocks=1, dropout=0.0)
    genzoo.train(model, data, data, steps=300, lr=3e-3, batch_size=64, eval_every=300, grid_size=0, progress=False)
    known = torch.zeros_like(x, dtype=torch.bool)
    known[:, :, :2] = True
    out = model.inpaint(x[:64], known[:64], generator=torch.Generator().manual_seed(1), sweeps=10)
    assert torch.equal(out[known[:64]], x[:64][known[:64]])
    assert (out[~known[:64]] == x[:64][~known[:64]]).double().mean() > 0.6  # chance: 0.2
    again = model.inpaint(x[:64], known[:64], generator=torch.Generator().manual_seed(1), sweeps=10)
    assert torch.equal(out, again) and model.sample_stats().sampler == "pseudo-gibbs (10 sweeps)"
