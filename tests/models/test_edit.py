"""SDEdit on the diffusion and flow-matching models: strength 0 returns the input itself, the
sampler starts at the noise level the strength names (its NFE says so), the same generator gives
the same edit, a callback sees every step, and other families refuse in one sentence."""
from __future__ import annotations

import pytest
import torch

import genzoo
from genzoo import GenzooError
from genzoo.data.spec import DataSpec
from tiny import tiny

SPEC = DataSpec(1, 8, 8, 17)
MODELS = ["ddpm", "sohl-dickstein", "score-sde", "flow-matching", "edm", "vdm"]


def model_of(name):
    return genzoo.create(name, SPEC, seed=0, **tiny(name)).eval()


@pytest.mark.parametrize("name", MODELS)
def test_strength_0_returns_the_input_and_an_edit_repeats_with_its_generator(name):
    model = model_of(name)
    x = torch.randint(0, 17, (3, *SPEC.shape), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.edit(x, 0.0), x)
    states = []
    a = model.edit(x, 0.5, generator=torch.Generator().manual_seed(1), steps=3)
    b = model.edit(x, 0.5, generator=torch.Generator().manual_seed(1), steps=3, callback=states.append)
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == torch.int64
    assert len(states) == model.sample_stats().nfe and model.sample_stats().sampler.startswith("sdedit")
    with pytest.raises(GenzooError, match="strength must be a number from 0 to 1"):
        model.edit(x, 1.5)


def test_ddpm_ancestral_edit_runs_the_steps_below_the_strength():
    model = model_of("ddpm")  # T = 20: strength 0.5 starts at t0 = round(0.5 * 19) = 10 and takes 11 steps
    x = torch.zeros(2, *SPEC.shape, dtype=torch.long)
    model.edit(x, 0.5, generator=torch.Generator().manual_seed(0))
    assert model.sample_stats() == ("sdedit ancestral from t = 10", 11)
    model.edit(x, 1.0, generator=torch.Generator().manual_seed(0))
    assert model.sample_stats().nfe == 20  # strength 1: every step, from x_T


def test_a_model_without_a_noising_process_refuses_to_edit():
    model = model_of("pixelcnn")
    with pytest.raises(GenzooError, match="does not edit"):
        model.edit(torch.zeros(1, *SPEC.shape, dtype=torch.long), 0.5)
