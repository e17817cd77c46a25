"""Mixed precision: bf16 autocast keeps each family's losses and bits/dim close to float32 on the same
weights, because the delicate sums run in float32; the trainer runs under it; wrong choices are one sentence."""
from __future__ import annotations

import math

import pytest
import torch

import genzoo
from genzoo.data.spec import Dataset, DataSpec
from genzoo.errors import GenzooError
from genzoo.evaluate import to_bits_per_dim
from genzoo.training import TrainConfig, train
from tiny import tiny, tiny_spec

# On these untrained tiny models bf16 moves bits/dim by at most about 3e-3 (ddpm); 0.01 is the target
# of trained weights too.
TOLERANCE_BPD = 0.01


@pytest.mark.parametrize("name", ["pixelcnn", "vae", "glow", "ddpm", "score-sde"])
def test_bf16_autocast_keeps_losses_and_bits_per_dim_close_to_float32(name):
    spec = DataSpec(*tiny_spec(name))
    model = genzoo.create(name, spec, seed=0, **tiny(name)).eval()
    x = torch.randint(0, spec.levels, (16, *spec.shape), generator=torch.Generator().manual_seed(1))
    kw = {} if name == "pixelcnn" else {"generator": None}

    def measure(bf16: bool):
        torch.manual_seed(0)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            ll = model.log_likelihood(x, **{k: torch.Generator().manual_seed(0) for k in kw})
            torch.manual_seed(0)
            loss = model.loss(x)
        return ll.nats, loss

    (nats32, loss32), (nats16, loss16) = measure(False), measure(True)
    assert loss16.dtype == torch.float32 and nats16.dtype == torch.float32, "the objective left float32"
    assert torch.isfinite(loss16) and torch.isfinite(nats16).all()
    assert abs(to_bits_per_dim(nats16, spec.dims) - to_bits_per_dim(nats32, spec.dims)) < TOLERANCE_BPD
    assert abs(float(loss16) - float(loss32)) < 0.01 * abs(float(loss32)) + 1e-3


def test_training_in_bf16_steps_float32_weights(tmp_path):
    spec = DataSpec(1, 4, 4, 5)
    x = torch.randint(0, 5, (64, *spec.shape), generator=torch.Generator().manual_seed(0))
    model = genzoo.create("pixelcnn", spec, seed=0, hidden_channels=8, num_blocks=1, first_kernel_size=3,
                          output_hidden=8)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(steps=4, batch_size=16, eval_every=2, sample_every=0, precision="bf16")
    result = train(model, Dataset(x, spec), None, cfg, out=tmp_path, progress=False)
    assert result.best_value < float("inf") and all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters())), "no step was taken"
    assert genzoo.load(tmp_path).state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize("name", ["ae", "dae"])
def test_models_without_a_likelihood_train_in_bf16(name, tmp_path):
    spec = DataSpec(*tiny_spec(name))
    x = torch.randint(0, spec.levels, (32, *spec.shape), generator=torch.Generator().manual_seed(0))
    model = genzoo.create(name, spec, seed=0, **tiny(name))
    cfg = TrainConfig(steps=2, batch_size=16, eval_every=2, sample_every=0, precision="bf16")
    result = train(model, Dataset(x, spec), None, cfg, out=tmp_path, progress=False)
    assert result.steps == 2 and math.isfinite(result.best_value)


def test_wrong_precisions_are_one_sentence():
    with pytest.raises(GenzooError, match="precision must be one of"):
        TrainConfig(precision="fp8")
    spec = DataSpec(1, 4, 4, 5)
    model = genzoo.create("pixelcnn", spec, seed=0, hidden_channels=8, num_blocks=1, first_kernel_size=3,
                          output_hidden=8)
    with pytest.raises(GenzooError, match="fp16 mixed precision needs a GPU"):
        train(model, Dataset(torch.zeros(8, *spec.shape, dtype=torch.long), spec), None,
              TrainConfig(steps=1, batch_size=4, device="cpu", precision="fp16"), progress=False)
