"""PixelCNN's defining properties: causality over raster-then-channel order, normalisation over
all images of tiny specs, sampling frequencies that match the model's probabilities, completion."""
from __future__ import annotations

import itertools

import pytest
import torch

import genzoo
from genzoo.data.spec import DataSpec
from genzoo.models.autoregressive.common import sample_categorical

TINY = {"hidden_channels": 12, "num_blocks": 2, "first_kernel_size": 3, "output_hidden": 12, "dropout": 0.0}


def random_pixelcnn(spec: DataSpec, **over) -> genzoo.GenerativeModel:
    model = genzoo.create("pixelcnn", spec, **{**TINY, **over}).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.4)
    return model


def all_images(spec: DataSpec) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(spec.levels), repeat=spec.dims))).view(-1, *spec.shape)


@pytest.mark.parametrize("channels", [1, 3])
def test_logits_depend_only_on_earlier_subpixels(channels):
    spec = DataSpec(channels, 5, 5, 4)
    model = random_pixelcnn(spec)
    C, H, W = spec.shape
    order = [(i, j, c) for i in range(H) for j in range(W) for c in range(C)]  # raster, then channel
    for pos, (i, j, c) in enumerate(order):
        # several inputs, so that a path a ReLU happens to close for one input still shows
        x = (torch.rand(4, C, H, W, dtype=torch.float64) * (spec.levels - 1)).requires_grad_(True)
        model.logits(x)[:, :, c, i, j].sum().backward()
        grad = x.grad.abs().sum(0)
        later = [grad[cc, ii, jj] for (ii, jj, cc) in order[pos:]]
        assert all(g == 0 for g in later), f"sub-pixel {(c, i, j)} sees itself or a later sub-pixel"
        if pos > 0:
            assert grad.sum() > 0, f"sub-pixel {(c, i, j)} sees no context"
        if c > 0:  # within a pixel, channel c sees every earlier channel of the same pixel
            assert all(grad[cc, i, j] != 0 for cc in range(c)), "G must see R, B must see R and G"


@pytest.mark.parametrize("spec", [DataSpec(1, 2, 2, 3), DataSpec(3, 2, 2, 2)])
def test_probabilities_of_all_images_sum_to_one(spec):
    model = random_pixelcnn(spec)
    ll = model.log_likelihood(all_images(spec))
    assert ll.kind == "exact"
    torch.testing.assert_close(torch.logsumexp(ll.nats, 0), torch.zeros((), dtype=torch.float64), atol=1e-10, rtol=0)


def test_sampling_frequencies_match_the_model_probabilities():
    spec = DataSpec(1, 2, 2, 2)
    model = random_pixelcnn(spec)
    images = all_images(spec)
    p = model.log_likelihood(images).nats.exp()
    n = 6000
    x = model.sample(n, generator=torch.Generator().manual_seed(0))
    index = (x.view(n, -1) * (2 ** torch.arange(spec.dims - 1, -1, -1))).sum(1)
    freq = torch.bincount(index, minlength=len(images)).double() / n
    # 4.5 standard errors per cell: fails for a wrong sampler, passes for the right one
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 4.5 * se + 1e-3).all(), (freq, p)


def test_temperature_sharpens_and_flattens_the_distribution():
    logits = torch.tensor([[2.0, 0.0, -1.0]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    cold = torch.bincount(sample_categorical(logits, 0.5, g), minlength=3).double() / 20000
    warm = torch.bincount(sample_categorical(logits, 2.0, g), minlength=3).double() / 20000
    torch.testing.assert_close(cold, torch.softmax(logits[0].double() / 0.5, 0), atol=0.015, rtol=0)
    torch.testing.assert_close(warm, torch.softmax(logits[0].double() / 2.0, 0), atol=0.015, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
def test_cached_and_plain_sampling_agree_and_completion_keeps_known_pixels(channels):
    spec = DataSpec(channels, 4, 4, 5)
    model = random_pixelcnn(spec)
    given = torch.full((3, *spec.shape), -1)
    given[:, :, :2] = torch.randint(0, 5, (3, channels, 2, 4))
    a = model.sample(3, generator=torch.Generator().manual_seed(1), cache=True, given=given)
    b = model.sample(3, generator=torch.Generator().manual_seed(1), cache=False, given=given)
    assert torch.equal(a, b)
    assert torch.equal(a[:, :, :2], given[:, :, :2])


def test_completion_draws_from_the_conditional():
    """With the first pixel given, the second is drawn from P(x_2 | x_1), not from P(x_2)."""
    spec = DataSpec(1, 1, 2, 3)
    model = random_pixelcnn(spec)
    images = all_images(spec)
    p = model.log_likelihood(images).nats.exp().view(3, 3)  # p[x1, x2]
    cond = p[2] / p[2].sum()
    n = 6000
    given = torch.full((n, 1, 1, 2), -1)
    given[:, 0, 0, 0] = 2
    x = model.sample(n, generator=torch.Generator().manual_seed(0), given=given)
    freq = torch.bincount(x[:, 0, 0, 1], minlength=3).double() / n
    assert ((freq - cond).abs() <= 4.5 * (cond * (1 - cond) / n).sqrt() + 1e-3).all()


def test_bad_arguments_are_one_clear_sentence():
    spec = DataSpec(1, 4, 4, 5)
    model = random_pixelcnn(spec)
    with pytest.raises(genzoo.GenzooError, match="temperature"):
        model.sample(2, temperature=0)
    with pytest.raises(genzoo.GenzooError, match="given"):
        model.sample(2, given=torch.zeros(2, 1, 3, 3, dtype=torch.long))
    with pytest.raises(genzoo.GenzooError, match="levels"):
        model.log_likelihood(torch.full((1, 1, 4, 4), 5))
    with pytest.raises(genzoo.GenzooError, match="at least the 3 image channels"):
        genzoo.create("pixelcnn", DataSpec(3, 4, 4, 5), hidden_channels=2)
    with pytest.raises(genzoo.GenzooError, match="has no field .hidden."):
        genzoo.create("pixelcnn", spec, hidden=3)
