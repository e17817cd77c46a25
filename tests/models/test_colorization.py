"""Colorization: sRGB <-> Lab, in-gamut colour bins, lightness kept, rebalancing weights."""
from __future__ import annotations

import pytest
import torch

import genzoo
from genzoo.data.spec import Dataset, DataSpec
from genzoo.models.colorization import ab_bins, in_gamut, lab_to_rgb, lab_to_rgb_in_gamut, rgb_to_lab

SPEC = DataSpec(3, 6, 6, 256)


def build(**overrides) -> genzoo.GenerativeModel:
    model = genzoo.create("colorization", SPEC, **{"hidden_channels": 8, "num_blocks": 1, **overrides}).double()
    with torch.no_grad():  # random, non-identity weights
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def test_lab_of_reference_colours():
    """Published CIE Lab values (D65) of sRGB white, black, red, green and blue."""
    rgb = torch.tensor([[1.0, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    expected = torch.tensor([[100.0, 0, 0], [0, 0, 0], [53.2408, 80.0925, 67.2032],
                             [87.7347, -86.1827, 83.1793], [32.2970, 79.1875, -107.8602]], dtype=torch.float64)
    torch.testing.assert_close(rgb_to_lab(rgb), expected, atol=2e-3, rtol=0)


def test_rgb_to_lab_to_rgb_round_trips_in_float64():
    rgb = torch.rand(4, 3, 5, 7, dtype=torch.float64)
    rgb[0, :, 0, :3] = torch.tensor([0.0, 0.003, 0.04045])[None]  # the linear pieces and their joints
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-12, rtol=0)


def test_bins_are_in_gamut_and_round_trip_through_rgb():
    model = build()
    centres, lightness = model.bin_centres.double(), model.bin_lightness.double()
    lab = torch.cat([lightness[:, None], centres], 1).T[None]            # (1, 3, Q)
    rgb = lab_to_rgb(lab)
    assert in_gamut(rgb, tol=1e-9).all(), "a bin centre is out of gamut at its recorded lightness"
    back = rgb_to_lab(rgb)[:, 1:, :, None]                                # (1, 2, Q, 1)
    assert torch.equal(model.to_bins(back).flatten(), torch.arange(len(centres)))
    # the bins are the centres of the 10-unit grid that are in gamut: not all of the grid, and
    # every real sRGB colour is near one of them
    assert 150 < len(centres) < 23 * 23
    colours = rgb_to_lab(torch.rand(1, 3, 2000, dtype=torch.float64))[0, 1:].T
    assert torch.cdist(colours, centres).min(1).values.max() < 10 * 2 ** 0.5


def test_bins_of_other_sizes():
    c20, _ = ab_bins(20.0)
    c10, _ = ab_bins(10.0)
    assert len(c20) < len(c10) and (c20.remainder(20) == 0).all()


def test_gamut_mapping_keeps_lightness_and_lands_in_gamut():
    L = torch.rand(50, dtype=torch.float64) * 100
    ab = (torch.rand(50, 2, dtype=torch.float64) - 0.5) * 300            # mostly out of gamut
    rgb = lab_to_rgb_in_gamut(L, ab)
    assert ((rgb >= 0) & (rgb <= 1)).all()
    torch.testing.assert_close(rgb_to_lab(rgb)[:, 0], L, atol=1e-6, rtol=0)
    inside = torch.tensor([[0.2, 0.5, 0.7]], dtype=torch.float64)      # an in-gamut colour is not changed
    lab = rgb_to_lab(inside)
    torch.testing.assert_close(lab_to_rgb_in_gamut(lab[:, 0], lab[:, 1:]), inside)


def max_lightness_gradient() -> float:
    """max over the RGB cube of sum_c |dL/dc|, on a 33^3 grid (130.2; 132.7 on a 129^3 grid) plus 10% for points between."""
    g = torch.linspace(0, 1, 33, dtype=torch.float64)
    rgb = torch.stack(torch.meshgrid(g, g, g, indexing="ij")).reshape(1, 3, -1).requires_grad_()
    rgb_to_lab(rgb)[:, 0].sum().backward()
    return 1.1 * float(rgb.grad.abs().sum(1).max())


def test_colorize_keeps_the_lightness_of_the_input():
    """Only rounding to levels changes L: each channel moves by at most half a level, 0.5 / (K-1),
    so |L_out - L_in| <= G * 0.5 / (K-1), G the largest gradient 1-norm of L over the cube (~133,
    reached in dark colours, where L = 903.3 Y is steepest)."""
    model = build()
    x = torch.randint(0, 256, (4, *SPEC.shape))
    out = model.colorize(x)
    assert out.shape == x.shape and out.dtype == torch.int64 and out.min() >= 0 and out.max() <= 255
    L_in = rgb_to_lab(x.double() / 255)[:, 0]
    L_out = rgb_to_lab(out.double() / 255)[:, 0]
    tol = max_lightness_gradient() * 0.5 / 255
    assert 0.2 < tol < 0.4
    assert (L_out - L_in).abs().max() <= tol
    assert not torch.equal(out, model.grey(x)), "the prediction is all grey"


def test_annealed_mean_interpolates_between_mean_and_mode():
    model = build().eval()
    x = torch.randint(0, 256, (2, *SPEC.shape))
    with torch.no_grad():
        probs = torch.softmax(model.logits(x), 1)
        mean = torch.einsum("bqhw,qc->bchw", probs, model.bin_centres.double())
        mode = model.bin_centres.double()[probs.argmax(1)].permute(0, 3, 1, 2)
        torch.testing.assert_close(model.predict_ab(x, temperature=1.0), mean)
        torch.testing.assert_close(model.predict_ab(x, temperature=1e-4), mode, atol=1e-6, rtol=0)


def test_rebalancing_weights_follow_the_training_bin_frequencies():
    model = build(rebalance=True)
    x = torch.randint(0, 256, (8, *SPEC.shape))
    x[:6] = torch.tensor([200, 40, 40])[None, :, None, None]            # mostly one reddish colour
    with pytest.raises(genzoo.GenzooError, match="rebalancing"):
        model.loss(x)
    model.prepare(Dataset(x, SPEC, name="colours"))
    p = model.bin_frequencies(x)
    w = model.bin_weights.double()
    common = int(p.argmax())
    assert bool(model.rebalance_fitted) and w[common] < 1 < w.max()
    # sum_q p~_q w_q = 1 for the smoothed p~, and w is (1 - lambda) p~ + lambda / Q inverted
    c = model.bin_centres.double()
    p_smooth = torch.exp(-torch.cdist(c, c).pow(2) / 50) @ p
    p_smooth = p_smooth / p_smooth.sum()
    torch.testing.assert_close((p_smooth * w).sum(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(w * (0.5 * p_smooth + 0.5 / len(c)),
                               torch.full_like(w, float(w[0] * (0.5 * p_smooth[0] + 0.5 / len(c)))))
    assert torch.isfinite(model.loss(x))


def test_sampling_needs_the_images_to_colorize():
    model = build().eval()
    assert model.conditional
    with pytest.raises(genzoo.GenzooError, match="conditional"):
        model.sample(2)
    x = torch.randint(0, 256, (2, *SPEC.shape))
    assert torch.equal(model.sample(2, given=x), model.colorize(x))
    with pytest.raises(genzoo.GenzooError, match="3 channels"):
        genzoo.create("colorization", DataSpec(1, 8, 8, 17))
