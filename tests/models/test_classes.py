"""Classes in every family that generates: with num_classes = N the likelihood is of p(x | y) (it
changes with the label once the class weights are not zero), the registration check passes with
the new `labels` hooks, samples take the classes asked for, the cached PixelCNN sampler and the
plain one agree given labels, a conditional VQ model conditions its (top) code prior. And classifier-
free guidance on a 1-D Gaussian toy: with the exact velocities of N(m_y, s^2) and of the null class's
N(m_u, s^2), the guided flow draws N(m_u + w (m_c - m_u), s^2), the closed form, for every w."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import genzoo
from genzoo import GenzooError
from genzoo.data.spec import DataSpec
from genzoo.models.contract import check_model_class
from genzoo.models.diffusion import reverse
from genzoo.nn.unet import UNet
from tiny import tiny

SPEC = DataSpec(1, 8, 8, 5)
FAMILIES = ["pixelcnn", "pixelcnn++", "vae", "vqvae", "vqvae2", "vdm"]


def conditional(name: str) -> genzoo.GenerativeModel:
    model = genzoo.create(name, SPEC, seed=0, **tiny(name), num_classes=3).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    return model


@pytest.mark.parametrize("name", FAMILIES)
def test_the_likelihood_is_of_x_given_the_class_and_samples_take_the_classes_asked_for(name):
    model = conditional(name)
    check_model_class(name, type(model))  # the hooks take labels by name, as num_classes asks
    x = torch.randint(0, 5, (4, *SPEC.shape), generator=torch.Generator().manual_seed(0))
    nats = [model.log_likelihood(x, labels=torch.full((4,), y)).nats for y in range(3)]
    assert all(torch.isfinite(n).all() for n in nats) and not torch.allclose(nats[0], nats[1])
    assert torch.isfinite(model.loss(x, labels=torch.tensor([0, 1, 2, 0])))
    a = model.sample(3, generator=torch.Generator().manual_seed(1), labels=torch.tensor([2, 2, 2]))
    b = model.sample(3, generator=torch.Generator().manual_seed(1), label=2)
    assert torch.equal(a, b) and a.shape == (3, *SPEC.shape)
    with pytest.raises(GenzooError, match="labels must lie in"):
        model.log_likelihood(x, labels=torch.full((4,), 3))
    with pytest.raises(GenzooError, match="pass labels"):
        model.log_likelihood(x)


@pytest.mark.parametrize("name", ["pixelcnn", "pixelcnn++"])
def test_cached_and_plain_samplers_agree_given_labels(name):
    model = conditional(name).float()
    labels = torch.tensor([0, 1, 2, 1])
    a = model.sample(4, generator=torch.Generator().manual_seed(0), labels=labels, cache=True)
    b = model.sample(4, generator=torch.Generator().manual_seed(0), labels=labels, cache=False)
    assert torch.equal(a, b)


def test_an_unconditional_family_model_still_ignores_labels_in_training():
    model = genzoo.create("vae", SPEC, seed=0, **tiny("vae"))
    x = torch.randint(0, 5, (2, *SPEC.shape))
    assert torch.isfinite(model.loss(x, labels=torch.tensor([0, 1])))
    with pytest.raises(GenzooError, match="not conditioned on classes"):
        model.sample(2, label=1)


# -- guidance on a 1-D Gaussian toy ---------------------------------------------------------------

MEANS, SD, NULL_MEAN = torch.tensor([-0.5, 0.4], dtype=torch.float64), 0.2, 0.1


class ExactVelocity(nn.Module):
    """The marginal velocity E[x_1 - z | x_t] of the linear path for x_1 ~ N(m, SD^2), z ~ N(0, 1):
    m + (t SD^2 - (1 - t)) (x_t - t m) / (t^2 SD^2 + (1 - t)^2), with m the class's mean (the null
    class: NULL_MEAN); `guided` is the U-Net's own classifier-free guidance."""

    num_classes = 2
    guided = UNet.guided

    def forward(self, x, t, labels=None):
        t = (t / 999.0).view(-1, 1, 1, 1).double()
        m = torch.cat([MEANS, torch.tensor([NULL_MEAN], dtype=torch.float64)])[labels].view(-1, 1, 1, 1)
        var = t ** 2 * SD ** 2 + (1 - t) ** 2
        return m + (t * SD ** 2 - (1 - t)) * (x - t * m) / var


@pytest.mark.parametrize("w", [0.0, 1.0, 3.0])
def test_guidance_moves_the_mean_of_a_gaussian_as_the_closed_form_says(w):
    model = genzoo.create("flow-matching", DataSpec(1, 4, 4, 17), seed=0, **tiny("flow-matching"),
                          num_classes=2).double().eval()
    model.net = ExactVelocity()
    labels = torch.tensor([1] * 400)
    x, nfe = reverse.sample(model.reverse_process(labels, w), (400, 1, 4, 4), "heun", 40,
                            torch.Generator().manual_seed(0))
    expected = NULL_MEAN + w * (MEANS[1].item() - NULL_MEAN)
    assert abs(x.mean().item() - expected) < 4 * SD / 80 and abs(x.std().item() - SD) < 0.01, (x.mean(), x.std())
    assert nfe == 80 * (1 if w == 1.0 else 2)  # heun: 2 evaluations a step; guidance doubles each


@pytest.mark.parametrize("name", FAMILIES)
def test_a_run_saved_before_num_classes_existed_loads_unconditional(name, tmp_path):
    import json

    model = genzoo.create(name, SPEC, seed=0, **tiny(name))
    genzoo.save(model, tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    del config["config"]["num_classes"]  # as a run written by an earlier genzoo holds it
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    again = genzoo.load(tmp_path / "run")
    assert again.num_classes == 0 and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                            again.state_dict().values()))
