"""Hostile and mistaken files: checkpoints with huge sizes, wrong types, NaN weights, headers that
lie; images and archives beyond the readers' caps. Each is one GenzooError sentence, refused
before the allocation it asks for."""
from __future__ import annotations

import gzip
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import genzoo
from genzoo import GenzooError
from genzoo.data import limits
from genzoo.data.folder import read_image
from genzoo.data.idx import read_idx

SPEC = genzoo.DataSpec(1, 4, 4, 3)
SMALL = dict(hidden_channels=6, num_blocks=1, output_hidden=6, first_kernel_size=3)


@pytest.fixture
def ckpt(tmp_path) -> Path:
    genzoo.save(genzoo.create("pixelcnn", SPEC, **SMALL), tmp_path)
    return tmp_path


def edit_config(ckpt: Path, **fields) -> None:
    meta = json.loads((ckpt / "config.json").read_text())
    meta["config"].update(fields)
    (ckpt / "config.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("fields, words", [
    ({"hidden_channels": 10**9}, "at most 100,000"),
    ({"hidden_channels": 90_000}, "parameters; genzoo builds at most"),
    ({"num_blocks": 10**7}, "at most 100,000"),
    ({"hidden_channels": "64"}, "hidden_channels must be an integer"),
    ({"dropout": [0.1]}, "dropout must be a number"),
    ({"dropout": None}, "dropout must be a number"),
    ({"colour": 3}, "has no field 'colour'"),
])
def test_a_config_that_lies_is_one_sentence_before_any_allocation(ckpt, fields, words):
    edit_config(ckpt, **fields)
    with pytest.raises(GenzooError, match=words) as info:
        genzoo.load(ckpt)
    assert "\n" not in str(info.value)


def test_a_config_missing_a_field_is_one_sentence(ckpt):
    meta = json.loads((ckpt / "config.json").read_text())
    del meta["config"]["kernel_size"]
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(GenzooError, match="lacks the field 'kernel_size'"):
        genzoo.load(ckpt)


def rewrite_header(path: Path, change) -> None:
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    text = change(header)
    text = text if isinstance(text, bytes) else json.dumps(text).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


def test_weights_with_nan_are_refused(ckpt):
    model = genzoo.load(ckpt)
    with torch.no_grad():
        model.out.bias[0] = float("nan")
    genzoo.save(model, ckpt)
    with pytest.raises(GenzooError, match="not finite: 'out.bias'"):
        genzoo.load(ckpt)


def test_a_header_larger_than_the_file_is_refused_without_reading_it(ckpt):
    path = ckpt / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + path.read_bytes()[8:])
    with pytest.raises(GenzooError, match="header claims 1,000,000,000,000 bytes, more than the file holds"):
        genzoo.load(ckpt)


def test_duplicate_names_a_wrong_dtype_and_a_wrong_size_are_refused(ckpt):
    path = ckpt / "model.safetensors"
    original = path.read_bytes()

    def duplicate(header):
        text = json.dumps(header)
        first = next(k for k in header if k != "__metadata__")
        entry = json.dumps({first: header[first]})[1:-1]
        return (text[:-1] + ", " + entry + "}").encode()

    rewrite_header(path, duplicate)
    with pytest.raises(GenzooError, match="appears twice"):
        genzoo.load(ckpt)
    path.write_bytes(original)
    rewrite_header(path, lambda h: {**h, "out.bias": {**h["out.bias"], "dtype": "I32"}})
    with pytest.raises(GenzooError, match="'out.bias' is torch.int32"):
        genzoo.load(ckpt)
    path.write_bytes(original)
    rewrite_header(path, lambda h: {**h, "out.bias": {**h["out.bias"], "shape": [10**6]}})
    with pytest.raises(GenzooError, match="outside the file or has the wrong size"):
        genzoo.load(ckpt)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with almost no data behind it."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


def test_an_image_claiming_too_many_pixels_is_refused_from_its_header(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(12000, 12000))
    with pytest.raises(GenzooError, match="claims 12000 x 12000 pixels"):
        read_image(path, 8, True)


@pytest.mark.parametrize("fmt, name, words", [("GIF", "a.png", "not a readable PNG"),
                                              ("JPEG", "a.png", "holds a JPEG image under a .png name"),
                                              ("TIFF", "a.jpg", "not a readable PNG")])
def test_other_formats_under_an_image_name_are_refused(tmp_path, fmt, name, words):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, format=fmt)
    (tmp_path / name).write_bytes(buf.getvalue())
    with pytest.raises(GenzooError, match=words):
        read_image(tmp_path / name, 4, True)


def test_an_image_with_missing_rows_is_refused(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(GenzooError, match="corrupt, truncated"):
        read_image(tmp_path / "cut.png", 8, True)


def test_a_gzip_that_expands_beyond_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 10_000)
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 1, 200, 200) + bytes(40_000)))
    with pytest.raises(GenzooError, match="declares 40,016 bytes in its header, more than genzoo reads"):
        read_idx(bomb, 3)
    liar = tmp_path / "liar-idx3-ubyte.gz"  # a small header over a large stream: decompressed only as far as it declares
    liar.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 1, 2, 2) + bytes(40_000)))
    with pytest.raises(GenzooError, match="is corrupt: its header promises shape"):
        read_idx(liar, 3)
    with pytest.raises(GenzooError, match="expands beyond 10,000 bytes"):
        limits.read_bytes(bomb)


def test_eval_checks_the_recorded_spec_before_reading_data(tmp_path, capsys):
    from genzoo.cli import main

    out = tmp_path / "run"
    assert main(["train", "pixelcnn", "--hidden-channels", "8", "--num-blocks", "1", "--output-hidden", "8",
                 "--first-kernel-size", "3", "--steps", "2", "--eval-every", "2", "--grid-size", "0",
                 "--no-progress", "--out", str(out)]) == 0
    meta = json.loads((out / "config.json").read_text())
    meta["run"].update({"data": "mnist", "root": "/no/such/place", "spec": {**meta["spec"], "height": 28, "width": 28}})
    (out / "config.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["eval", str(out)]) == 2
    assert "records data of spec" in capsys.readouterr().err  # refused before /no/such/place is looked at


def test_a_folder_link_that_leads_outside_the_root_is_not_followed(tmp_path):
    from genzoo.data.folder import list_images

    outside = tmp_path / "outside.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(outside)
    root = tmp_path / "root"
    root.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "inside.png")
    (root / "escape.png").symlink_to(outside)
    assert [p.name for p in list_images(root)] == ["inside.png"]
