"""Sample-quality metrics against hand-computed values, and the classifier they rest on."""
from __future__ import annotations

import json
import math

import pytest
import torch

import genzoo
from genzoo import classifier
from genzoo.errors import GenzooError
from genzoo.quality import frechet_distance, kernel_distance, precision_recall


def test_frechet_distance_of_two_gaussians_is_the_closed_form():
    # 1-D: f1 has mean 0, variance 2; f2 has mean 3, variance 8: d^2 = 9 + (sqrt 2 - sqrt 8)^2 = 11
    f1 = torch.tensor([[-1.0], [1.0]])
    f2 = torch.tensor([[1.0], [5.0]])
    assert frechet_distance(f1, f2) == pytest.approx(9 + (math.sqrt(2) - math.sqrt(8)) ** 2)
    # D-D Gaussians with diagonal covariances, then both turned by one rotation: the distance is
    # |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2 either way
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    z = (z - z.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # exactly white
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 1.0, 0.5])
    mu = torch.tensor([1.0, -2.0, 0.0])
    expected = float(mu.pow(2).sum() + (s1 - s2).pow(2).sum())
    a, b = z * s1.double(), z * s2.double() + mu.double()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    assert frechet_distance(a @ q, b @ q) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)


def test_kernel_distance_is_the_unbiased_mmd_computed_by_hand():
    # k(x, y) = (x y + 1)^3 in 1-D: within f1 k(0,1) = 1, within f2 k(1,2) = 27, across (1+1+8+27)/4
    f1, f2 = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
    kid, _ = kernel_distance(f1, f2, subsets=3)
    assert kid == pytest.approx(1 + 27 - 2 * 37 / 4)


def test_precision_and_recall_of_identical_and_disjoint_sets():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(50, 4, generator=g)
    assert precision_recall(a, a.clone()) == (1.0, 1.0)
    assert precision_recall(a, a + 100.0) == (0.0, 0.0)
    # half of the fakes on the real manifold: precision 1/2; the fakes cover every real point
    fake = torch.cat([a, a + 100.0])
    precision, recall = precision_recall(a, fake)
    assert precision == 0.5 and recall == 1.0


def test_sample_quality_of_2d_data_uses_the_points():
    test = genzoo.data.load("moons", "test")
    same = genzoo.sample_quality(test.x[:300], test.x[300:600], data="moons")
    far = genzoo.sample_quality(torch.zeros_like(test.x[:300]), test.x[300:600], data="moons")
    assert same["features"].startswith("points") and same["samples"] == 300
    assert same["fd"] < far["fd"] and same["precision"] > far["precision"] and same["recall"] > far["recall"]


def test_the_classifier_is_trained_once_cached_as_safetensors_and_scores_real_above_noise(tmp_path, monkeypatch):
    monkeypatch.setenv("GENZOO_CACHE", str(tmp_path))
    test, val = genzoo.data.load("digits", "test"), genzoo.data.load("digits", "val")
    real = genzoo.sample_quality(val.x, test.x, data="digits")
    noise = genzoo.sample_quality(torch.randint(0, 17, val.x.shape), test.x, data="digits")
    assert real["fd"] < noise["fd"] / 5 and real["kid"] < noise["kid"] and real["precision"] > noise["precision"]
    folder = next((tmp_path / "classifiers").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.json", "classifier.safetensors"]
    record = json.loads((folder / "classifier.json").read_text())
    assert record["test_accuracy"] > 0.5 and real["classifier_accuracy"] == record["test_accuracy"]
    monkeypatch.setattr(classifier, "train_classifier", None)  # a second call must read the cache
    assert genzoo.sample_quality(val.x, test.x, data="digits")["fd"] == pytest.approx(real["fd"])


def test_sample_quality_refuses_floats_in_one_sentence():
    with pytest.raises(GenzooError, match="integer levels"):
        genzoo.sample_quality(torch.rand(4, 1, 8, 8), torch.zeros(4, 1, 8, 8, dtype=torch.long), data="digits")


def test_kid_has_a_nonzero_error_when_both_sets_have_the_same_size():
    from genzoo.quality import kernel_distance

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 5, generator=g), torch.randn(40, 5, generator=g) + 0.5
    kid, se = kernel_distance(a, b, generator=torch.Generator().manual_seed(1))
    assert kid > 0 and 0 < se < kid
