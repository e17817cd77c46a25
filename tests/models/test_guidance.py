"""Classes and classifier-free guidance in the discrete-time diffusion models: guidance 1 is the
conditional network, guidance 0 the unconditional one (the null class), any other w gives
u + w (c - u) on the mean output and costs two network evaluations a step; labels are dropped in
training with label_dropout; the bound is of p(x | y), so the generative classifier works."""
from __future__ import annotations

import pytest
import torch

import genzoo
from genzoo import GenzooError
from genzoo.data.spec import Dataset, DataSpec
from genzoo.evaluate import evaluate
from tiny import tiny

SPEC = DataSpec(1, 8, 8, 17)


def conditional(name: str, **over) -> genzoo.GenerativeModel:
    model = genzoo.create(name, SPEC, seed=0, **{**tiny(name), "num_classes": 3, **over}).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # non-trivial weights: zero-initialised outputs carry no signal
    return model


@pytest.mark.parametrize("name", ["ddpm", "sohl-dickstein"])
def test_guidance_1_is_the_conditional_network_0_the_unconditional_and_w_extrapolates(name):
    model = conditional(name)
    x, t = torch.randn(4, *SPEC.shape, dtype=torch.float64), torch.tensor([3.0, 7.0, 11.0, 19.0], dtype=torch.float64)
    labels, null = torch.tensor([0, 1, 2, 1]), torch.full((4,), 3)
    c, u = model.net(x, t, labels), model.net(x, t, null)
    mean = c.shape[1] - (SPEC.channels if model.config.variance == "learned" else 0)
    torch.testing.assert_close(model.network(labels, 1.0)(x, t), c)
    torch.testing.assert_close(model.network(labels, 0.0)(x, t)[:, :mean], u[:, :mean])
    guided = model.network(labels, 2.5)(x, t)
    torch.testing.assert_close(guided[:, :mean], u[:, :mean] + 2.5 * (c[:, :mean] - u[:, :mean]))
    torch.testing.assert_close(guided[:, mean:], c[:, mean:])  # a learned variance is the conditional one's


def test_guided_sampling_costs_two_evaluations_a_step_and_takes_the_classes_asked_for():
    model = conditional("ddpm")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = model.sample(3, generator=g(), sampler="ddim", steps=4, labels=torch.tensor([0, 1, 2]))
    assert model.sample_stats().nfe == 4
    b = model.sample(3, generator=g(), sampler="ddim", steps=4)  # the classes 0, 1, 2 in turn by default
    assert torch.equal(a, b)
    model.sample(3, generator=g(), sampler="ddim", steps=4, label=2, guidance=3.0)
    assert model.sample_stats().nfe == 8
    with pytest.raises(GenzooError, match="labels must lie in"):
        model.sample(2, labels=torch.tensor([0, 3]))


def test_labels_are_dropped_in_training_and_the_bound_gives_a_generative_classifier():
    model = conditional("ddpm", label_dropout=0.5)
    x = torch.randint(0, 17, (6, *SPEC.shape), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    seen = []
    hook = model.net.label_embed.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    model.train()
    torch.manual_seed(0)
    model.loss(x, labels=y)
    hook.remove()
    assert (seen[0] == 3).any() and (seen[0] != 3).any()  # some labels dropped to the null class, some kept
    model.eval()
    report = evaluate(model, Dataset(x, SPEC, y, name="toy"), likelihood_options={"stride": 5})
    assert report["generative_kind"] == "lower_bound" and 0 <= report["generative_accuracy"] <= 1


@pytest.mark.parametrize("name", ["ddpm", "flow-matching", "gated-pixelcnn"])
def test_an_unconditional_model_refuses_a_class_or_a_guidance_rather_than_ignore_it(name):
    model = genzoo.create(name, SPEC, seed=0, **tiny(name)).eval()
    with pytest.raises(GenzooError, match="is not conditioned on classes"):
        model.sample(2, label=3)
    if name != "gated-pixelcnn":
        with pytest.raises(GenzooError, match="is not conditioned on classes"):
            model.sample(2, guidance=2.0)


def test_score_sde_takes_classes_with_guidance_and_its_bound_is_of_p_x_given_y():
    model = conditional("score-sde")
    x, t = torch.randn(3, *SPEC.shape, dtype=torch.float64), torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    labels = torch.tensor([0, 1, 2])
    c, u = model.eps_pred(x, t, labels), model.eps_pred(x, t, torch.full((3,), 3))
    torch.testing.assert_close(model.eps_pred(x, t, labels, 3.0), u + 3.0 * (c - u))
    model.sample(3, generator=torch.Generator().manual_seed(0), sampler="euler", steps=3, guidance=2.0)
    assert model.sample_stats().nfe == 2 * 3
    images = torch.randint(0, 17, (3, *SPEC.shape), generator=torch.Generator().manual_seed(0))
    a = model.log_likelihood(images, generator=torch.Generator().manual_seed(1), method="rk4", steps=2, labels=labels)
    b = model.log_likelihood(images, generator=torch.Generator().manual_seed(1), method="rk4", steps=2,
                             labels=torch.tensor([2, 0, 1]))
    assert not torch.allclose(a.nats, b.nats)  # the bound depends on the class


@pytest.mark.parametrize("name", ["ddpm", "score-sde", "flow-matching", "edm", "vdm"])
def test_a_guidance_weight_that_is_not_a_number_in_range_is_one_sentence(name):
    model = genzoo.create(name, SPEC, seed=0, **tiny(name), num_classes=2)
    for bad in ("x", 1e9, True):
        with pytest.raises(GenzooError, match="guidance must be a number from -100 to 100"):
            model.sample(2, guidance=bad)
