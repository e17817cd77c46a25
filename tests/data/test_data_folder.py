"""Image-folder loader: PNG/JPEG written here with Pillow, crop and quantization, split rule, bad files."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genzoo
from genzoo.data.folder import split_of
from genzoo.errors import GenzooError

SPLITS = ("train", "val", "test")


def make_folder(root: Path, per_class: int = 15) -> list[str]:
    """Two class subfolders of PNGs and JPEGs of several sizes; returns relative paths."""
    rng = np.random.default_rng(0)
    paths = []
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = [(12, 20), (20, 12), (16, 16)][i % 3]
            ext = ".jpg" if i % 4 == 0 else ".png"
            rel = f"{c}/img{i:02d}{ext}"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / rel)
            paths.append(rel)
    return paths


def load_all(root: Path, **options):
    return {s: genzoo.data.load("folder", split=s, root=str(root), **options) for s in SPLITS}


def test_folder_splits_are_disjoint_cover_all_images_and_follow_split_of(tmp_path):
    paths = make_folder(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image, ignored")
    data = load_all(tmp_path, size=8)
    files = {s: d.info["files"] for s, d in data.items()}
    assert sorted(sum(files.values(), [])) == sorted(paths)
    for s, names in files.items():
        assert all(split_of(n) == s for n in names)
    assert len(files["train"]) > len(files["val"]) > 0 and len(files["test"]) > 0
    again = load_all(tmp_path, size=8)
    assert all(torch.equal(data[s].x, again[s].x) for s in SPLITS)


def test_folder_shapes_levels_and_class_labels(tmp_path):
    make_folder(tmp_path)
    ds = genzoo.data.load("folder", root=str(tmp_path), size=8, levels=16)
    assert ds.spec == genzoo.data.DataSpec(3, 8, 8, 16) and ds.x.shape[1:] == (3, 8, 8)
    assert ds.x.dtype == torch.int64 and 0 <= int(ds.x.min()) and int(ds.x.max()) <= 15
    assert ds.labels.tolist() == [0 if f.startswith("cats/") else 1 for f in ds.info["files"]]
    gray = genzoo.data.load("folder", root=str(tmp_path), size=8, grayscale=True)
    assert gray.spec == genzoo.data.DataSpec(1, 8, 8, 256)


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(30):
        Image.new("L", (10, 10), color=i).save(tmp_path / f"{i}.png")
    assert genzoo.data.load("folder", root=str(tmp_path), size=4).labels is None


def test_folder_centre_crops_shorter_side_and_quantizes_by_floor(tmp_path):
    # 8 wide, 4 high, shorter side already 4: no resampling, the crop is columns 2..5 exactly.
    a = np.zeros((4, 8), np.uint8)
    a[:, 2:6] = 200
    a[:, :2] = a[:, 6:] = 17
    a[1, 3] = 255
    rel = next(f"{i}.png" for i in range(100) if split_of(f"{i}.png") == "train")
    Image.fromarray(a).save(tmp_path / rel)
    ds = genzoo.data.load("folder", root=str(tmp_path), size=4, grayscale=True, levels=16)
    expected = np.full((4, 4), 200 * 16 // 256)
    expected[1, 1] = 15
    np.testing.assert_array_equal(ds.x[0, 0].numpy(), expected)


def test_folder_resizes_shorter_side_to_size(tmp_path):
    rel = next(f"{i}.png" for i in range(100) if split_of(f"{i}.png") == "train")
    Image.new("RGB", (60, 30), color=(10, 100, 250)).save(tmp_path / rel)
    ds = genzoo.data.load("folder", root=str(tmp_path), size=6)
    assert ds.x.shape == (1, 3, 6, 6)
    assert ds.x[0, :, 3, 3].tolist() == [10, 100, 250]


@pytest.mark.parametrize("content", [b"this is text, not a PNG", b"\x89PNG\r\n\x1a\n\x00\x00"], ids=["text", "truncated"])
def test_non_image_file_raises_naming_file(tmp_path, content):
    make_folder(tmp_path)
    bad = tmp_path / "dogs" / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(GenzooError, match="not a readable PNG or JPEG") as e:
        genzoo.data.load("folder", split=split_of("dogs/bad.png"), root=str(tmp_path), size=8)
    assert str(bad) in str(e.value)


def test_truncated_jpeg_raises_naming_file(tmp_path):
    rel = next(f"{i}.jpg" for i in range(100) if split_of(f"{i}.jpg") == "val")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / rel)
    (tmp_path / rel).write_bytes((tmp_path / rel).read_bytes()[:600])
    with pytest.raises(GenzooError) as e:
        genzoo.data.load("folder", split="val", root=str(tmp_path))
    assert rel in str(e.value)


def test_folder_errors_missing_root_empty_folder_bad_options(tmp_path):
    with pytest.raises(GenzooError, match="does not exist"):
        genzoo.data.load("folder", root=str(tmp_path / "nowhere"))
    with pytest.raises(GenzooError, match="root=DIR"):
        genzoo.data.load("folder")
    with pytest.raises(GenzooError, match="no PNG or JPEG"):
        genzoo.data.load("folder", root=str(tmp_path))
    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(GenzooError, match="levels"):
        genzoo.data.load("folder", root=str(tmp_path), levels=300)
    with pytest.raises(GenzooError, match="size"):
        genzoo.data.load("folder", root=str(tmp_path), size=0)


def test_empty_split_is_a_clear_error(tmp_path):
    rel = next(f"{i}.png" for i in range(100) if split_of(f"{i}.png") == "train")
    Image.new("L", (4, 4)).save(tmp_path / rel)
    with pytest.raises(GenzooError, match="none in the val split"):
        genzoo.data.load("folder", split="val", root=str(tmp_path))
