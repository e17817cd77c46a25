"""2-D toy densities: shapes, grid round trip, deterministic and distinct splits, density shapes."""
import numpy as np
import pytest
import torch

import genzoo
from genzoo.data.toy import BOX, grid_to_points, points_to_grid
from genzoo.errors import GenzooError

TOYS = ["moons", "8gaussians", "checkerboard", "spirals", "rings"]


@pytest.mark.parametrize("name", TOYS)
def test_toy_dataset_shape_spec_and_sizes(name):
    sizes = {s: len(genzoo.data.load(name, split=s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 20000, "val": 2000, "test": 2000}
    ds = genzoo.data.load(name, split="val", n=500)
    assert ds.x.shape == (500, 2, 1, 1) and ds.x.dtype == torch.int64
    assert ds.spec == genzoo.data.DataSpec(2, 1, 1, 256) and ds.labels is None
    assert 0 <= int(ds.x.min()) and int(ds.x.max()) <= 255


@pytest.mark.parametrize("name", TOYS)
def test_toy_splits_are_deterministic_and_differ(name):
    a, b = genzoo.data.load(name, n=300), genzoo.data.load(name, n=300)
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, genzoo.data.load(name, split="test", n=300).x)
    assert not torch.equal(a.x, genzoo.data.load(name, split="val", n=300).x)


def test_grid_round_trip_lands_in_the_same_bin_within_half_a_bin():
    points = np.random.default_rng(0).uniform(BOX[0], BOX[1], (1000, 2))
    levels = points_to_grid(points)
    centres = grid_to_points(levels)
    width = (BOX[1] - BOX[0]) / 256
    assert np.all(np.abs(centres - points) <= width / 2 + 1e-12)
    np.testing.assert_array_equal(points_to_grid(centres), levels)
    np.testing.assert_array_equal(grid_to_points(torch.from_numpy(levels).view(-1, 2, 1, 1)), centres)
    assert points_to_grid(np.array([[-100.0, 100.0]])).tolist() == [[0, 255]]
    assert grid_to_points(np.array([[0, 255]])).tolist() == [[BOX[0] + width / 2, BOX[1] - width / 2]]


def test_densities_have_their_shapes():
    pts = {name: grid_to_points(genzoo.data.load(name, n=4000).x) for name in TOYS}
    r = np.linalg.norm(pts["rings"], axis=1)
    near = np.min(np.abs(r[:, None] - np.array([0.75, 1.5, 2.25, 3.0])), axis=1)
    assert np.mean(near < 0.3) > 0.99
    r8 = np.linalg.norm(pts["8gaussians"], axis=1)
    assert abs(np.median(r8) - 4 / np.sqrt(2)) < 0.2
    board = np.floor(pts["checkerboard"] / 2).astype(int)
    assert np.all(board.sum(1) % 2 == 0)          # only one colour of squares (cell edges are bin edges)
    assert np.all(np.abs(pts["moons"]) < 4) and np.all(np.linalg.norm(pts["spirals"], axis=1) < 4.2)


def test_toy_bad_n_is_a_clear_error():
    with pytest.raises(GenzooError, match="n must be a positive integer"):
        genzoo.data.load("moons", n=0)
