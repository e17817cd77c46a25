"""The step options change how a step is computed, not its numbers or what is saved: channels_last
and torch.compile give the loss and gradients of the plain step (float64; dropout off, since its
masks are drawn in memory order), and a run trained with either writes standard weights that load
without it."""
from __future__ import annotations

import pytest
import torch

import genzoo
from genzoo.data.spec import Dataset, DataSpec
from genzoo.nn.pointwise import to_channels_last
from genzoo.training import TrainConfig, train
from tiny import tiny, tiny_spec


def _loss_and_grads(model, x, loss_fn=None):
    torch.manual_seed(0)
    loss = (loss_fn or model.loss)(x)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return loss, grads


def _random_model(name):
    spec = DataSpec(*tiny_spec(name))
    model = genzoo.create(name, spec, seed=0, **tiny(name)).double().eval()
    with torch.no_grad():  # random non-identity weights: zero-initialised output layers would hide a difference
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randint(0, spec.levels, (8, *spec.shape), generator=torch.Generator().manual_seed(1))
    return model, x


@pytest.mark.parametrize("name", ["pixelcnn", "ddpm", "glow"])
def test_channels_last_gives_the_plain_loss_and_gradients_in_float64(name):
    model, x = _random_model(name)
    loss, grads = _loss_and_grads(model, x)
    to_channels_last(model)
    assert any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in model.parameters()), "no weight is in channels_last order"
    loss_cl, grads_cl = _loss_and_grads(model, x)
    torch.testing.assert_close(loss_cl, loss, rtol=1e-12, atol=1e-12)
    for g_cl, g in zip(grads_cl, grads):
        torch.testing.assert_close(g_cl, g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["pixelcnn", "gated-pixelcnn", "pixelcnn++", "ddpm", "glow", "vqvae"])
def test_under_channels_last_every_gradient_keeps_its_parameters_strides(name):
    """DistributedDataParallel copies a gradient whose strides differ from its parameter's (and warns)."""
    spec = DataSpec(*tiny_spec(name))
    model = genzoo.create(name, spec, seed=0, **tiny(name))
    to_channels_last(model)
    assert any(not p.is_contiguous() for p in model.parameters()), "no kernel is in channels_last order"
    x = torch.randint(0, spec.levels, (4, *spec.shape), generator=torch.Generator().manual_seed(1))
    model.loss(x).backward()
    for pname, p in model.named_parameters():
        if p.grad is not None:
            assert p.grad.stride() == p.stride(), f"{pname}: gradient strides {p.grad.stride()}, parameter {p.stride()}"


# glow through dynamo and AOT autograd only: inductor's code generation for its 40 layers takes a
# minute, and what is genzoo's here is that the flow traces whole (actnorm included)
@pytest.mark.parametrize("name, backend", [("pixelcnn", "inductor"), ("glow", "aot_eager")])
def test_compiled_loss_gives_the_plain_loss_and_gradients_in_float64(name, backend):
    from torch._inductor import config as inductor_config  # the module exists only once imported

    model, x = _random_model(name)
    loss, grads = _loss_and_grads(model, x)
    with inductor_config.patch(fallback_random=True):  # eager's random stream (dequantization)
        loss_c, grads_c = _loss_and_grads(model, x, torch.compile(model.loss, backend=backend))
    torch.testing.assert_close(loss_c, loss, rtol=1e-12, atol=1e-12)
    for g_c, g in zip(grads_c, grads):
        torch.testing.assert_close(g_c, g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("option", ["channels_last", "compile"])
def test_a_run_with_a_step_option_saves_weights_that_load_without_it(tmp_path, option):
    spec = DataSpec(1, 4, 4, 5)
    x = torch.randint(0, 5, (64, *spec.shape), generator=torch.Generator().manual_seed(0))
    model = genzoo.create("pixelcnn", spec, seed=0, hidden_channels=8, num_blocks=1, first_kernel_size=3,
                          output_hidden=8)
    cfg = TrainConfig(steps=3, batch_size=16, eval_every=3, sample_every=0, **{option: True})
    result = train(model, Dataset(x, spec), None, cfg, out=tmp_path, progress=False)
    assert result.steps == 3
    loaded = genzoo.load(tmp_path)
    assert all(p.is_contiguous() for p in loaded.parameters())
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), f"{name} did not load as trained"
