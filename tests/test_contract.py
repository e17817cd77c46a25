"""Every registered model (the README's plugin too) keeps the contract of docs/models.md, on its `tiny` config:
finite loss, gradients reach every parameter of every stage, samples of the right shape and
range, and save/load round-trips exactly."""
from __future__ import annotations

import math

import pytest
import torch

import genzoo
from genzoo.data.spec import Dataset, DataSpec
from genzoo.registry import list_models
from readme_plugin import NAME, plugin_class
from tiny import tiny, tiny_spec

genzoo.register(NAME, plugin_class())  # a model from outside keeps the same contract


def build(name: str) -> tuple[genzoo.GenerativeModel, Dataset]:
    spec = DataSpec(*tiny_spec(name))
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, spec.levels, (16, *spec.shape), generator=g)
    labels = torch.randint(0, 10, (16,), generator=g)
    model = genzoo.create(name, spec, **tiny(name))
    model.prepare(Dataset(x, spec, labels, name="random"))
    return model, Dataset(x, spec, labels, name="random")


@pytest.mark.parametrize("name", list_models())
def test_loss_is_finite_and_gradients_reach_every_parameter(name):
    model, data = build(name)
    for stage in model.stages:
        model.begin_stage(stage, data)
        params = [p for p in model.stage_parameters(stage) if p.requires_grad]
        assert params, f"stage {stage!r} optimizes nothing"
        with torch.no_grad():  # move zero-initialised layers off the identity, so every path carries gradient
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
        model.zero_grad(set_to_none=True)
        model.train()
        loss = model.loss(data.x[:8])
        assert loss.ndim == 0 and torch.isfinite(loss), f"{name} [{stage}]: loss {loss}"
        loss.backward()
        names = {id(p): n for n, p in model.named_parameters()}
        for p in params:
            assert p.grad is not None, f"{name} [{stage}]: no gradient reaches {names[id(p)]}"
            assert torch.isfinite(p.grad).all(), f"{name} [{stage}]: non-finite gradient in {names[id(p)]}"
            assert p.grad.abs().sum() > 0, f"{name} [{stage}]: zero gradient in {names[id(p)]}"


@pytest.mark.parametrize("name", list_models())
def test_samples_have_the_right_shape_and_range(name):
    model, data = build(name)
    for stage in model.stages:
        model.begin_stage(stage, data)
    model.eval()
    if model.conditional:
        pytest.skip(f"{name} is conditional and samples only given an input")
    g = torch.Generator().manual_seed(0)
    x = model.sample(3, generator=g)
    assert x.shape == (3, *model.spec.shape) and x.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) <= model.spec.levels - 1
    again = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again), "the same generator must give the same samples"
    quick = model.sample(3, generator=g, **model.quick_sample_options)  # the grids of genzoo train and compare
    assert quick.shape == x.shape and quick.dtype == torch.int64
    assert int(quick.min()) >= 0 and int(quick.max()) <= model.spec.levels - 1


@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trips_exactly(name, tmp_path):
    model, data = build(name)
    for stage in model.stages:
        model.begin_stage(stage, data)
        model.train()
        model.loss(data.x[:8])  # data-dependent initialisation happens on the first batch
    genzoo.save(model, tmp_path)
    loaded = genzoo.load(tmp_path)
    assert not loaded.training and loaded.name == model.name and loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    model.eval()
    torch.manual_seed(3)
    la = model.loss(data.x[:8])
    torch.manual_seed(3)
    lb = loaded.loss(data.x[:8])
    assert torch.equal(la, lb)
    if model.has_likelihood:
        torch.manual_seed(4)
        ll = model.log_likelihood(data.x[:4])
        torch.manual_seed(4)
        ll2 = loaded.log_likelihood(data.x[:4])
        assert ll.kind in ("exact", "lower_bound") and ll.nats.shape == (4,)
        torch.testing.assert_close(ll.nats, ll2.nats)


@pytest.mark.parametrize("name", list_models())
def test_bits_per_dim_has_a_kind_and_matches_the_likelihood(name):
    model, data = build(name)
    if not model.has_likelihood:
        pytest.skip(f"{name} has no likelihood")
    for stage in model.stages:
        model.begin_stage(stage, data)
    model.eval()
    torch.manual_seed(5)
    bpd = genzoo.bits_per_dim(model, data.x[:4])
    torch.manual_seed(5)
    ll = model.log_likelihood(data.x[:4])
    assert bpd.kind == ll.kind
    assert math.isclose(bpd.value, float(-ll.nats.detach().mean() / (model.spec.dims * math.log(2))), rel_tol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_wrong_input_shape_is_one_clear_sentence(name):
    model, data = build(name)
    for stage in model.stages:
        model.begin_stage(stage, data)
    bad = torch.zeros(2, model.spec.channels, model.spec.height + 1, model.spec.width + 3, dtype=torch.long)
    with pytest.raises(genzoo.GenzooError, match="shape"):
        model.loss(bad)
