"""The generative classifier a class-conditional likelihood model gives for free, checked by enumeration
on a 2x2 image with 3 levels: p(y | x) is Bayes' rule computed by hand, it sums to 1 over classes,
and the marginal p(x) = sum_y p(x | y) p(y) sums to 1 over every image; `genzoo eval` reports it."""
from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

import genzoo
from genzoo.cli import main
from genzoo.data.spec import Dataset, DataSpec
from genzoo.evaluate import class_log_posterior, evaluate

SPEC = DataSpec(1, 2, 2, 3)


EXACT = {"gated-pixelcnn": dict(hidden_channels=8, num_layers=2, first_kernel_size=3, output_hidden=8),
         "pixelcnn": dict(hidden_channels=8, num_blocks=1, first_kernel_size=3, output_hidden=8),
         "pixelcnn++": dict(hidden_channels=8, num_resnet=1, num_scales=1, num_mixtures=2)}


def random_conditional_model(name: str = "gated-pixelcnn") -> genzoo.GenerativeModel:
    model = genzoo.create(name, SPEC, **EXACT[name], dropout=0.0, num_classes=3).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("name", list(EXACT))
def test_the_posterior_is_bayes_rule_and_the_marginal_is_a_distribution(name):
    model = random_conditional_model(name)
    images = torch.tensor(list(itertools.product(range(3), repeat=4))).view(-1, *SPEC.shape)
    posterior, marginal, kind = class_log_posterior(model, images)
    by_hand = torch.stack([model.log_likelihood(images, labels=torch.full((81,), y)).nats.exp() for y in range(3)], 1)
    for y in range(3):
        torch.testing.assert_close(by_hand[:, y].sum(), torch.ones((), dtype=torch.float64))  # each p(x | y)
    torch.testing.assert_close(posterior.exp(), by_hand / by_hand.sum(1, keepdim=True), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(posterior.exp().sum(1), torch.ones(81, dtype=torch.float64))
    torch.testing.assert_close(marginal.exp().sum(), torch.ones((), dtype=torch.float64))
    assert kind == "exact"


def test_eval_reports_the_generative_accuracy_and_the_marginal_bits(tmp_path, capsys):
    model = random_conditional_model()
    images = torch.randint(0, 3, (60, *SPEC.shape), generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(1))
    report = evaluate(model, Dataset(images, SPEC, labels, name="toy"))
    posterior, marginal, _ = class_log_posterior(model, images)
    assert report["generative_accuracy"] == float((posterior.argmax(1) == labels).double().mean())
    assert math.isclose(report["marginal_bits_per_dim"], float(-marginal.mean() / (4 * math.log(2))), rel_tol=1e-12)
    assert report["generative_kind"] == "exact"
    run = tmp_path / "run"  # and through the command line, on digits
    assert main(["train", "gated-pixelcnn", "--num-classes", "10", "--hidden-channels", "8", "--num-layers", "2",
                 "--output-hidden", "8", "--steps", "2", "--eval-every", "2", "--grid-size", "0", "--no-progress",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert 0 <= out["generative_accuracy"] <= 1 and out["marginal_bits_per_dim"] > 0
