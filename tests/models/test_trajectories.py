"""Trajectories: every autoregressive sampler reports the canvas after every pixel through one
callback convention; a callback sees every step and changes nothing (the samples are bit-identical
with and without one); `genzoo sample --trajectory` writes them as an animated GIF and a strip."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

import genzoo
from genzoo.cli import main
from genzoo.data.spec import DataSpec
from tiny import tiny

SPEC = DataSpec(1, 4, 4, 5)


@pytest.mark.parametrize("name, cache", [("pixelcnn", True), ("pixelcnn", False), ("gated-pixelcnn", True),
                                         ("pixelcnn++", True)])
def test_a_callback_sees_the_canvas_fill_and_changes_nothing(name, cache):
    model = genzoo.create(name, SPEC, seed=0, **tiny(name)).eval()
    states = []
    plain = model.sample(3, generator=torch.Generator().manual_seed(4), cache=cache)
    seen = model.sample(3, generator=torch.Generator().manual_seed(4), cache=cache, callback=states.append)
    assert torch.equal(plain, seen)
    assert [s["step"] for s in states] == list(range(1, 17)) and all(s["steps"] == 16 for s in states)
    for k, state in enumerate(states):  # pixels 0..k are drawn, and equal to the final ones
        flat, final = state["x"].flatten(2), seen.flatten(2)
        assert torch.equal(flat[:, :, :k + 1], final[:, :, :k + 1])
    states[0]["x"].fill_(3)  # a callback that writes to what it was given changes nothing
    assert torch.equal(seen, model.sample(3, generator=torch.Generator().manual_seed(4), cache=cache,
                                          callback=lambda s: s["x"].fill_(3)))


def test_genzoo_sample_writes_the_trajectory_as_a_gif_and_a_strip(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "pixelcnn", "--hidden-channels", "8", "--num-blocks", "1", "--output-hidden", "8",
                 "--first-kernel-size", "3", "--steps", "2", "--eval-every", "2", "--grid-size", "0", "--no-progress",
                 "--out", str(run)]) == 0
    gif = tmp_path / "t.gif"
    assert main(["sample", str(run), "--n", "4", "--trajectory", str(gif), "--out", str(tmp_path / "s.png")]) == 0
    assert "(64 states)" in capsys.readouterr().out
    with Image.open(gif) as img:
        assert img.format == "GIF" and img.n_frames == 64
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name, options, steps", [
    ("ddpm", {"sampler": "ancestral"}, 20), ("ddpm", {"sampler": "ddim", "steps": 5}, 5),
    ("ddpm", {"sampler": "heun", "steps": 4}, 7), ("sohl-dickstein", {"sampler": "dpm-solver++", "steps": 4}, 4),
    ("flow-matching", {"sampler": "heun", "steps": 3}, 6), ("flow-matching", {"sampler": "ode"}, None),
    ("score-sde", {"sampler": "pc", "steps": 3}, None), ("score-sde", {"sampler": "euler", "steps": 3}, None),
    ("vdm", {"sampler": "ancestral", "steps": 3}, 3), ("vdm", {"sampler": "heun", "steps": 3}, 6),
])
def test_diffusion_samplers_report_x_t_and_change_nothing(name, options, steps):
    model = genzoo.create(name, DataSpec(1, 8, 8, 17), seed=0, **tiny(name)).eval()
    states = []
    plain = model.sample(2, generator=torch.Generator().manual_seed(5), **options)
    seen = model.sample(2, generator=torch.Generator().manual_seed(5), callback=states.append, **options)
    assert torch.equal(plain, seen)
    assert len(states) == model.sample_stats().nfe and [s["step"] for s in states] == list(range(1, len(states) + 1))
    assert all(s["steps"] == steps for s in states)
    for s in states:  # as levels, like the samples
        assert s["x"].dtype == torch.int64 and s["x"].shape == seen.shape and int(s["x"].max()) <= 16
    if "x0" in states[-1] and options["sampler"] in ("ancestral", "ddim"):
        assert torch.equal(states[-1]["x0"], seen)  # the last x_0 prediction is the sample
