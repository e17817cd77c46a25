"""Gated PixelCNN, PixelCNN++ and cached sampling: the defining properties, in float64 with random weights."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

import genzoo
from genzoo import Dataset, DataSpec, GenzooError
from genzoo.nn.init import shifted_out

GATED = {"hidden_channels": 6, "num_layers": 2, "first_kernel_size": 3, "output_hidden": 6}
PP = {"hidden_channels": 6, "num_resnet": 1, "num_scales": 2, "num_mixtures": 3}
SPECS = [DataSpec(1, 2, 2, 3), DataSpec(3, 2, 2, 2)]


def randomized(model: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """float64, eval mode, every parameter drawn at random (zero-initialised layers test nothing)."""
    gen = torch.Generator().manual_seed(0)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return model


def all_images(spec: DataSpec) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(spec.levels), repeat=spec.dims))).view(-1, *spec.shape)


@pytest.mark.parametrize("name,config", [("gated-pixelcnn", GATED), ("pixelcnn++", PP)])
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_probabilities_of_all_images_sum_to_one(name, config, spec):
    model = randomized(genzoo.create(name, spec, **config))
    x = all_images(spec)
    with torch.no_grad():
        ll = model.log_likelihood(x)
        logits = model.logits(x)
    assert ll.kind == "exact"
    torch.testing.assert_close(ll.nats.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
    # the per-sub-pixel scores factor the same likelihood (product rule)
    per_pixel = -F.cross_entropy(logits, x, reduction="none").flatten(1).sum(1)
    torch.testing.assert_close(per_pixel, ll.nats)


def test_pixelcnn_pp_normalizes_when_the_image_is_padded_to_the_coarsest_scale():
    spec = DataSpec(1, 3, 1, 3)  # 3 x 1 is padded to 4 x 2 inside
    model = randomized(genzoo.create("pixelcnn++", spec, **PP))
    with torch.no_grad():
        total = model.log_likelihood(all_images(spec)).nats.exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


@pytest.mark.parametrize("channels", [1, 3])
def test_gated_pixelcnn_sees_every_earlier_sub_pixel_and_no_later_one(channels):
    """No blind spot: unlike masked 3x3 stacks, the vertical stack covers the whole upper right."""
    spec = DataSpec(channels, 6, 6, 4)
    model = randomized(genzoo.create("gated-pixelcnn", spec, hidden_channels=24, num_layers=3, first_kernel_size=7,
                                     output_hidden=24), scale=0.5)
    order = torch.arange(6 * 6 * channels).view(6, 6, channels).permute(2, 0, 1)  # raster, then channel
    gen = torch.Generator().manual_seed(1)
    for i, j in [(0, 0), (2, 3), (3, 0), (5, 5)]:
        for c in range(channels):
            before = order < order[c, i, j]
            seen = torch.zeros_like(before)
            for _ in range(8):  # a sub-pixel is seen if the gradient is nonzero for some input (ReLUs can be off)
                x = torch.rand(1, channels, 6, 6, generator=gen, dtype=torch.float64, requires_grad=True)
                model.logits(x * 3)[0, :, c, i, j].sum().backward()
                grad = x.grad[0] != 0
                assert not grad[~before].any(), f"sub-pixel ({c}, {i}, {j}) sees itself or a later one"
                seen |= grad
            assert seen[before].all(), f"sub-pixel ({c}, {i}, {j}) has a blind spot"


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelcnn_pp_parameters_see_only_earlier_pixels(channels):
    spec = DataSpec(channels, 8, 8, 4)
    model = randomized(genzoo.create("pixelcnn++", spec, hidden_channels=6, num_resnet=2, num_scales=2, num_mixtures=2))
    order = torch.arange(64).view(8, 8)
    gen = torch.Generator().manual_seed(1)
    for i, j in [(0, 0), (2, 3), (4, 0), (7, 7)]:
        before = order < i * 8 + j
        seen = torch.zeros_like(before)
        for _ in range(3):
            x = torch.rand(1, channels, 8, 8, generator=gen, dtype=torch.float64, requires_grad=True)
            model.params(x * 3)[0, :, i, j].sum().backward()
            grad = (x.grad[0] != 0).any(0)
            assert not grad[~before].any(), f"pixel ({i}, {j}) sees itself or a later pixel"
            seen |= grad
        assert seen[before].all(), f"pixel ({i}, {j}) has a blind spot"


@pytest.mark.parametrize("name", ["pixelcnn", "gated-pixelcnn"])
@pytest.mark.parametrize("channels", [1, 3])
def test_cached_and_naive_sampling_draw_the_same_images(name, channels):
    spec = DataSpec(channels, 5, 6, 4)
    config = ({"hidden_channels": 6, "num_blocks": 2, "output_hidden": 6} if name == "pixelcnn"
              else {"hidden_channels": 6, "num_layers": 3, "output_hidden": 6})
    model = randomized(genzoo.create(name, spec, **config), scale=0.5).train()

    def run(cache, seed, given=None):
        return model.sample(4, generator=torch.Generator().manual_seed(seed), cache=cache, given=given)

    fast = run(True, 0)
    assert torch.equal(fast, run(False, 0))
    assert model.training, "sample() must restore training mode"
    assert len({tuple(s.flatten().tolist()) for s in fast}) > 1, "samples do not vary"
    given = torch.full((4, channels, 5, 6), -1)
    given[:, :, :2] = fast[:, :, :2]          # known top rows
    given[0, 0, 3, 2] = 3                     # a pixel known in one image only
    given[:, -1, 4, 5] = 1                    # a sub-pixel known in every image
    completed = run(True, 1, given)
    assert torch.equal(completed, run(False, 1, given))
    known = given >= 0
    assert torch.equal(completed[known], given[known])


@pytest.mark.parametrize("channels", [1, 3])
def test_pixelcnn_pp_row_limited_and_full_passes_draw_the_same_images(channels):
    spec = DataSpec(channels, 5, 3, 6)  # 5 rows: the coarsest scale pads to 6
    model = randomized(genzoo.create("pixelcnn++", spec, **PP))
    given = torch.full((3, channels, 5, 3), -1)
    given[:, :, 1] = 2
    given[1, 0, 3, 1] = 5
    for g in (None, given):
        a = model.sample(3, generator=torch.Generator().manual_seed(0), cache=True, given=g)
        assert torch.equal(a, model.sample(3, generator=torch.Generator().manual_seed(0), cache=False, given=g))
    assert torch.equal(a[given >= 0], given[given >= 0])


def test_sampling_frequencies_match_the_model_probabilities():
    spec = DataSpec(1, 1, 2, 3)
    model = randomized(genzoo.create("pixelcnn++", spec, **PP), scale=0.5)
    x = all_images(spec)
    with torch.no_grad():
        p = model.log_likelihood(x).nats.exp()
    samples = model.sample(4000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(samples[:, 0, 0, 0] * 3 + samples[:, 0, 0, 1], minlength=9).double()
    assert (counts / 4000 - p).abs().max() < 0.03


def test_gated_pixelcnn_conditions_on_labels():
    spec = DataSpec(1, 3, 3, 3)
    model = randomized(genzoo.create("gated-pixelcnn", spec, **GATED, num_classes=2), scale=0.5)
    x = all_images(spec)
    with torch.no_grad():
        for label in (0, 1):
            labels = torch.full((len(x),), label)
            torch.testing.assert_close(model.log_likelihood(x, labels).nats.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
        a = model.log_likelihood(x[:5], torch.zeros(5, dtype=torch.long)).nats
        b = model.log_likelihood(x[:5], torch.ones(5, dtype=torch.long)).nats
    assert not torch.allclose(a, b), "the label changes nothing"

    def run(cache, **kw):
        return model.sample(4, generator=torch.Generator().manual_seed(0), cache=cache, **kw)

    assert torch.equal(run(True, label=1), run(False, label=1))
    per_sample = torch.tensor([1, 0, 1, 1])
    assert torch.equal(run(True, labels=per_sample), run(False, labels=per_sample))
    with pytest.raises(GenzooError):
        model.loss(x[:4])
    with pytest.raises(GenzooError):
        model.loss(x[:4], torch.full((4,), 2))
    # an unconditional model ignores labels, so a training loop may pass a dataset's labels to any model
    plain = randomized(genzoo.create("gated-pixelcnn", spec, **GATED))
    torch.testing.assert_close(plain.loss(x[:4], torch.zeros(4, dtype=torch.long)), plain.loss(x[:4]))


@pytest.mark.parametrize("name,field,value", [("gated-pixelcnn", "kernel_size", 4), ("gated-pixelcnn", "num_classes", -1),
                                              ("pixelcnn++", "num_mixtures", 0), ("pixelcnn++", "dropout", 1.5),
                                              ("pixelcnn++", "data_init", "yes")])
def test_bad_config_values_are_one_clear_error(name, field, value):
    with pytest.raises(GenzooError, match=field):
        genzoo.create(name, DataSpec(1, 4, 4, 3), **{field: value})


@pytest.mark.parametrize("name,config", [
    ("pixelcnn", {"hidden_channels": 7, "num_blocks": 2, "first_kernel_size": 3, "output_hidden": 8, "dropout": 0.0}),
    ("gated-pixelcnn", {"hidden_channels": 7, "num_layers": 2, "first_kernel_size": 3, "output_hidden": 8, "dropout": 0.0}),
])
def test_colour_models_with_widths_not_a_multiple_of_three_stay_causal_and_normalized(name, config):
    """Uneven channel groups (7 features -> 3, 2, 2): the masks still follow R -> G -> B."""
    spec = DataSpec(3, 2, 2, 2)
    model = randomized(genzoo.create(name, spec, **config), scale=0.5)
    total = torch.logsumexp(model.log_likelihood(all_images(spec)).nats, 0)
    torch.testing.assert_close(total, torch.zeros((), dtype=torch.float64), atol=1e-10, rtol=0)
    order = torch.arange(12).view(2, 2, 3).permute(2, 0, 1)  # raster, then channel
    gen = torch.Generator().manual_seed(2)
    for c in range(3):
        before = order < order[c, 1, 1]
        # many inputs, spread wide, so that every path is open (ReLU on) for some of them
        x = (torch.rand(64, 3, 2, 2, generator=gen, dtype=torch.float64) * 3 - 1).requires_grad_(True)
        model.logits(x)[:, :, c, 1, 1].sum().backward()
        seen = (x.grad != 0).any(0)
        assert not seen[~before].any(), f"channel {c} sees itself or a later sub-pixel"
        assert seen[before].all(), f"channel {c} misses an earlier sub-pixel"
    fast = model.sample(3, generator=torch.Generator().manual_seed(0), cache=True)
    assert torch.equal(fast, model.sample(3, generator=torch.Generator().manual_seed(0), cache=False))


@pytest.mark.parametrize("name", ["pixelcnn", "gated-pixelcnn", "pixelcnn++"])
def test_default_configs_build_for_colour_images(name):
    model = genzoo.create(name, DataSpec(3, 8, 8, 4))
    assert model.log_likelihood(torch.randint(0, 4, (2, 3, 8, 8))).nats.shape == (2,)


def test_pixelcnn_pp_keeps_its_weights_when_prepared_without_data_init():
    spec = DataSpec(1, 4, 4, 5)
    model = randomized(genzoo.create("pixelcnn++", spec, **PP)).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.prepare(Dataset(torch.randint(0, 5, (16, 1, 4, 4)), spec))
    model.loss(torch.randint(0, 5, (16, 1, 4, 4)))
    assert "initialized" not in state  # the state of models saved before the option existed
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], msg=k)


def test_pixelcnn_pp_initializes_from_the_training_data_once():
    spec = DataSpec(1, 4, 4, 5)
    model = randomized(genzoo.create("pixelcnn++", spec, **PP, data_init=True)).train()
    x = torch.randint(0, 5, (16, 1, 4, 4))
    model.loss(x)
    assert int(model.initialized) == 0, "a training step alone does not initialize"
    model.prepare(Dataset(x, spec))
    assert int(model.initialized) == 1
    # on that batch, without dropout, every convolution's output is normalized per channel
    model.eval()
    outs: dict[str, torch.Tensor] = {}
    convs = {name: m for name, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))}
    handles = [m.register_forward_hook(lambda m, i, o, name=name: outs.__setitem__(name, shifted_out(m, o)))
               for name, m in convs.items()]
    with torch.no_grad():
        model.params(x)
    for h in handles:
        h.remove()
    assert set(outs) == set(convs)
    for name, out in outs.items():
        target = 0.1 if name.endswith("conv_out") else 1.0
        mean, std = out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3))
        torch.testing.assert_close(mean, torch.zeros_like(mean), msg=name)
        torch.testing.assert_close(std, torch.full_like(std, target), msg=name)
    # other data, and a reloaded model, do not initialize again
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train().prepare(Dataset(torch.randint(0, 5, (16, 1, 4, 4)), spec))
    reloaded = genzoo.create("pixelcnn++", spec, **PP, data_init=True).double()
    reloaded.load_state_dict(state)
    reloaded.train().prepare(Dataset(x, spec))
    for m in (model, reloaded):
        for k, v in m.state_dict().items():
            torch.testing.assert_close(v, state[k], msg=k)


def test_pixelcnn_pp_stays_normalized_after_initialization():
    spec = SPECS[1]
    model = randomized(genzoo.create("pixelcnn++", spec, **PP))
    x = all_images(spec)
    model.initialize(x)
    with torch.no_grad():
        total = model.log_likelihood(x).nats.exp().sum()
    torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))
