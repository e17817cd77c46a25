"""Pictures carry their labels: row names beside ImageRows, t above diffusion columns, toy samples
as visible dots over the data's density."""
import numpy as np
import pytest
import torch
from PIL import Image

from genzoo.data.spec import DataSpec
from genzoo.models.base import ImageRows
from genzoo.viz import save_figure, save_grid, scatter_image

SPEC = DataSpec(1, 8, 8, 4)


def rows(n=5):
    g = torch.Generator().manual_seed(0)
    return tuple(torch.randint(0, 4, (n, 1, 8, 8), generator=g) for _ in range(3))


def test_labelled_rows_get_a_left_margin_with_text_beside_every_row(tmp_path):
    plain = np.asarray(Image.open(save_figure(ImageRows(rows()), SPEC, tmp_path / "a.png")).convert("L"))
    figure = ImageRows(rows(), ("input", "noisy input", "denoised"))
    labelled = np.asarray(Image.open(save_figure(figure, SPEC, tmp_path / "b.png")).convert("L"))
    margin = labelled.shape[1] - plain.shape[1]
    assert margin > 20 and labelled.shape[0] == plain.shape[0]
    np.testing.assert_array_equal(labelled[:, margin:], plain)  # the images themselves are untouched
    band = plain.shape[0] // 3
    for r in range(3):
        assert (labelled[r * band:(r + 1) * band, :margin] < 100).any(), f"no text beside row {r}"


def test_row_labels_must_name_every_row():
    with pytest.raises(ValueError):
        ImageRows(rows(), ("input", "reconstruction"))


def test_column_labels_sit_above_their_columns(tmp_path):
    x = torch.randint(0, 4, (6, 1, 8, 8))
    plain = np.asarray(Image.open(save_grid(x, SPEC, tmp_path / "a.png", nrow=3)).convert("L"))
    path = save_grid(x, SPEC, tmp_path / "b.png", nrow=3, col_labels=("t = 0", "t = 10", "t = 999"))
    headed = np.asarray(Image.open(path).convert("L"))
    top = headed.shape[0] - plain.shape[0]
    assert top > 8 and headed.shape[1] == plain.shape[1]
    third = plain.shape[1] // 3
    for c in range(3):
        assert (headed[:top, c * third:(c + 1) * third] < 100).any(), f"no t above column {c}"


def test_toy_samples_are_red_dots_over_a_grey_density_of_the_data():
    data = torch.tensor([[64, 64]] * 50 + [[200, 200]] * 50)
    img = np.asarray(scatter_image(torch.tensor([[128, 30]]), 256, size=256, reference=data)).astype(int)
    red = (img[:, :, 0] > 150) & (img[:, :, 1] < 80)
    assert 4 <= red.sum() <= 30, "one sample is a visible dot"
    grey = img[:, :, 0] == img[:, :, 1]
    assert (img[grey] < 200).any() and img[255 - 64, 64, 1] < img[128, 128, 1], "the data's density is shaded"
