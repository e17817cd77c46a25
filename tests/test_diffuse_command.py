"""`genzoo diffuse`: the forward-process figures are written, bad steps are one clear sentence."""
import argparse

import pytest
import torch
from PIL import Image

from genzoo import diffuse
from genzoo.errors import GenzooError
from genzoo.models.diffusion.schedules import alpha_bar_of, linear_betas


def parse(argv):
    parser = argparse.ArgumentParser()
    diffuse.add_arguments(parser)
    return parser.parse_args(argv)


def test_diffuse_writes_the_image_grid(tmp_path):
    assert diffuse.run(parse(["--data", "digits", "--out", str(tmp_path), "--n", "2", "--steps", "0,10,999"])) == 0
    img = Image.open(tmp_path / "forward_process.png")
    assert img.size[0] > img.size[1]  # 2 images (rows) by 3 steps (columns)
    with pytest.raises(GenzooError):
        diffuse.run(parse(["--out", str(tmp_path), "--steps", "0,1000"]))


def test_diffuse_writes_the_toy_marginals(tmp_path):
    assert diffuse.run(parse(["--data", "moons", "--out", str(tmp_path), "--points", "200", "--steps", "0,999"])) == 0
    assert (tmp_path / "forward_marginals.png").is_file()


def test_forward_images_and_marginal_density_follow_q():
    abar = alpha_bar_of(linear_betas(1000))
    x0 = torch.full((2, 1, 2, 2), 0.5, dtype=torch.float64)
    xt = diffuse.forward_images(x0, abar, [0, 999], torch.Generator().manual_seed(0))
    assert xt.shape == (2, 2, 1, 2, 2)
    # the exact marginal of one point is the Gaussian kernel itself
    grid = torch.tensor([[0.0, 0.0], [1.0, -0.5]], dtype=torch.float64)
    point = torch.tensor([[0.4, -0.2]], dtype=torch.float64)
    a = float(abar[300])
    dens = diffuse.marginal_density(point, a, grid)
    var = 1 - a
    expected = torch.exp(-0.5 * ((grid - a ** 0.5 * point) ** 2).sum(1) / var) / (2 * torch.pi * var)
    torch.testing.assert_close(dens, expected)
