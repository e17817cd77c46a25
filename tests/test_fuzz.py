"""Mutated files never crash a reader: every reader, config.json and safetensors header gives a
GenzooError or a valid result, never another exception (property-based, a bounded number of
examples so the suite stays fast; derandomized, so a failure repeats)."""
from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import genzoo
from genzoo import GenzooError
from genzoo.checkpoint import load_tensors, read_header, save_tensors
from genzoo.data.cifar import read_binary_batch, read_python_batch
from genzoo.data.folder import read_image
from genzoo.data.idx import read_idx

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6)
MUTATION = st.tuples(EDITS, st.one_of(st.none(), st.integers(0, 10_000)), st.binary(max_size=16))


def mutate(data: bytes, mutation) -> bytes:
    """Overwrite bytes at positions, cut the file, append junk."""
    edits, cut, tail = mutation
    out = bytearray(data)
    for pos, value in edits:
        if out:
            out[pos % len(out)] = value
    if cut is not None:
        out = out[: cut % (len(out) + 1)]
    return bytes(out) + tail


def outcome(read, path: Path) -> str:
    try:
        read(path)
    except GenzooError as e:
        assert "\n" not in str(e)
        return "refused"
    return "read"


def idx_bytes() -> bytes:
    x = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    return struct.pack(">IIII", 0x803, 3, 4, 4) + x.tobytes()


@SETTINGS
@given(mutation=MUTATION, gz=st.booleans())
def test_a_mutated_idx_file_is_read_or_refused(tmp_path, mutation, gz):
    raw = idx_bytes()
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(mutate(gzip.compress(raw) if gz else raw, mutation))
    outcome(lambda p: read_idx(p, 3), path)


@SETTINGS
@given(mutation=MUTATION)
def test_a_mutated_cifar_binary_batch_is_read_or_refused(tmp_path, mutation):
    records = np.random.default_rng(0).integers(0, 10, (2, 3073), dtype=np.uint8)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(mutate(records.tobytes(), mutation))
    outcome(read_binary_batch, path)


@SETTINGS
@given(mutation=MUTATION, protocol=st.sampled_from([2, 4, 5]))
def test_a_mutated_cifar_python_batch_is_read_or_refused(tmp_path, mutation, protocol):
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [1, 7]}
    path = tmp_path / "data_batch_1"
    path.write_bytes(mutate(pickle.dumps(batch, protocol=protocol), mutation))
    outcome(read_python_batch, path)


@SETTINGS
@given(mutation=MUTATION, fmt=st.sampled_from(["PNG", "JPEG"]))
def test_a_mutated_image_is_read_or_refused(tmp_path, mutation, fmt):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (6, 5, 3), dtype=np.uint8)).save(buf, format=fmt)
    path = tmp_path / ("a.png" if fmt == "PNG" else "a.jpg")
    path.write_bytes(mutate(buf.getvalue(), mutation))
    outcome(lambda p: read_image(p, 4, False), path)


@SETTINGS
@given(mutation=MUTATION)
def test_a_mutated_safetensors_file_is_read_or_refused(tmp_path, mutation):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"a": torch.randn(2, 3), "b": torch.arange(4)})
    path.write_bytes(mutate(path.read_bytes()[:120], mutation) + path.read_bytes()[120:])
    outcome(read_header, path)
    outcome(lambda p: load_tensors(p, {"a": ((2, 3), torch.float32), "b": ((4,), torch.int64)}), path)


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                              st.text(max_size=8)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4)),
                    max_leaves=12)


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ckpt")
    genzoo.save(genzoo.create("pixelcnn", genzoo.DataSpec(1, 4, 4, 3), hidden_channels=6, num_blocks=1,
                              output_hidden=6, first_kernel_size=3), d)
    return d


@SETTINGS
@given(field=st.sampled_from(["hidden_channels", "num_blocks", "dropout", "kernel_size", "model", "spec", "config",
                              "extra"]), value=JSON)
def test_a_config_json_with_any_value_in_any_field_loads_or_is_refused(checkpoint_dir, tmp_path, field, value):
    meta = json.loads((checkpoint_dir / "config.json").read_text())
    if field in ("model", "spec", "config"):
        meta[field] = value
    else:
        meta["config"][field] = value
    (tmp_path / "config.json").write_text(json.dumps(meta))
    (tmp_path / "model.safetensors").write_bytes((checkpoint_dir / "model.safetensors").read_bytes())
    outcome(genzoo.load, tmp_path)
