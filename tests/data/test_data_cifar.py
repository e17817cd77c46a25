"""CIFAR-10 reader: binary and python batches written here, corrupt ones, and malicious pickles."""
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import genzoo
from genzoo.data.cifar import read_python_batch
from genzoo.errors import GenzooError

N_PER_BATCH = 4  # 5 training batches -> 20 training images: 18 train, 2 val


def make_batches(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {n: (rng.integers(0, 256, (N_PER_BATCH, 3072)).astype(np.uint8),
                rng.integers(0, 10, N_PER_BATCH)) for n in names}


def write_binary(directory: Path, batches) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in batches.items():
        records = np.concatenate([labels.astype(np.uint8)[:, None], data], 1)
        (directory / f"{name}.bin").write_bytes(records.tobytes())
    return directory


class _Python2Pickler(pickle._Pickler):
    """Writes strings and bytes as Python 2 `str` (BINSTRING), as the official CIFAR files do."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def python2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump(obj)
    # Python 2's numpy lived in numpy.core; GLOBAL opcodes are text, so the rename is exact.
    return buf.getvalue().replace(b"numpy._core.", b"numpy.core.")


def write_python(directory: Path, batches, protocol) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in batches.items():
        batch = {"batch_label": name, "labels": labels.tolist(), "data": data, "filenames": ["a.png"] * len(data)}
        if protocol == "python2":
            blob = python2_pickle(batch)
        else:
            blob = pickle.dumps({k.encode(): v for k, v in batch.items()}, protocol=protocol)
        (directory / name).write_bytes(blob)
    return directory


def expected(batches, names):
    data = np.concatenate([batches[n][0] for n in names]).reshape(-1, 3, 32, 32)
    return data, np.concatenate([batches[n][1] for n in names])


def check_splits(root: Path, batches) -> None:
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    data, labels = expected(batches, train_names)
    train = genzoo.data.load("cifar10", split="train", root=str(root))
    val = genzoo.data.load("cifar10", split="val", root=str(root))
    test = genzoo.data.load("cifar10", split="test", root=str(root))
    assert (len(train), len(val), len(test)) == (18, 2, N_PER_BATCH)
    assert train.spec == genzoo.data.DataSpec(3, 32, 32, 256) and train.x.dtype == torch.int64
    np.testing.assert_array_equal(train.x.numpy(), data[:18])
    np.testing.assert_array_equal(val.x.numpy(), data[18:])
    np.testing.assert_array_equal(val.labels.numpy(), labels[18:])
    np.testing.assert_array_equal(test.x.numpy(), expected(batches, ["test_batch"])[0])


@pytest.mark.parametrize("parent", [True, False], ids=["parent", "batches-dir"])
def test_cifar_binary_batches_decode_and_split(tmp_path, parent):
    batches = make_batches(np.random.default_rng(0))
    directory = write_binary(tmp_path / "cifar-10-batches-bin", batches)
    check_splits(tmp_path if parent else directory, batches)


@pytest.mark.parametrize("protocol", ["python2", 2, 4, 5])
def test_cifar_python_batches_decode_and_split(tmp_path, protocol):
    batches = make_batches(np.random.default_rng(1))
    write_python(tmp_path / "cifar-10-batches-py", batches, protocol)
    check_splits(tmp_path, batches)
    assert genzoo.data.load("cifar10", root=str(tmp_path)).info["format"] == "py"


def test_cifar_binary_layout_is_label_then_red_green_blue_planes(tmp_path):
    record = np.zeros(3073, np.uint8)
    record[0], record[1 + 5], record[1 + 1024 + 32], record[1 + 2048 + 1023] = 7, 11, 22, 33
    directory = tmp_path / "cifar-10-batches-bin"
    directory.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (directory / f"{name}.bin").write_bytes(record.tobytes())
    test = genzoo.data.load("cifar10", split="test", root=str(tmp_path))
    x = test.x[0]
    assert test.labels.tolist() == [7]
    assert (x[0, 0, 5], x[1, 1, 0], x[2, 31, 31]) == (11, 22, 33) and int(x.sum()) == 66


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').system('true')",))


@pytest.mark.parametrize("payload, refused", [
    (lambda m: {b"data": _Evil(m), b"labels": []}, "posix.system"),
    (lambda m: _Evil(m), "posix.system"),
    (lambda m: {b"data": _EvalEvil()}, "eval"),  # protocol 2 names it __builtin__.eval
    (lambda m: {b"data": np.load}, "numpy.load"),
])
def test_malicious_pickle_is_refused_without_running(tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    directory = write_python(tmp_path / "cifar-10-batches-py", make_batches(np.random.default_rng(2)), 4)
    evil = directory / "data_batch_3"
    evil.write_bytes(pickle.dumps(payload(marker), protocol=2))
    with pytest.raises(GenzooError, match="refused") as e:
        genzoo.data.load("cifar10", root=str(tmp_path))
    assert str(evil) in str(e.value) and refused in str(e.value)
    assert not marker.exists()


def test_refusal_happens_before_any_call(tmp_path):
    # A REDUCE of an allowed callable after a refused GLOBAL must never be reached.
    path = tmp_path / "test_batch"
    path.write_bytes(b"\x80\x02csubprocess\nPopen\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.")
    with pytest.raises(GenzooError, match="subprocess.Popen"):
        read_python_batch(path)


@pytest.mark.parametrize("kind", ["truncated-binary", "bad-label", "truncated-pickle", "not-a-dict", "wrong-shape"])
def test_corrupt_cifar_batch_names_file(tmp_path, kind):
    batches = make_batches(np.random.default_rng(3))
    if kind in ("truncated-binary", "bad-label"):
        directory = write_binary(tmp_path / "cifar-10-batches-bin", batches)
        path = directory / "test_batch.bin"
        raw = bytearray(path.read_bytes())
        if kind == "bad-label":
            raw[0] = 10
        path.write_bytes(bytes(raw[:-100] if kind == "truncated-binary" else raw))
    else:
        directory = write_python(tmp_path / "cifar-10-batches-py", batches, 4)
        path = directory / "test_batch"
        blob = {"truncated-pickle": path.read_bytes()[:-50],
                "not-a-dict": pickle.dumps([1, 2, 3]),
                "wrong-shape": pickle.dumps({b"data": np.zeros((2, 3), np.uint8), b"labels": [0, 1]})}[kind]
        path.write_bytes(blob)
    with pytest.raises(GenzooError) as e:
        genzoo.data.load("cifar10", split="test", root=str(tmp_path))
    assert str(path) in str(e.value)


def test_cifar_missing_batch_and_missing_root(tmp_path):
    directory = write_binary(tmp_path / "cifar-10-batches-bin", make_batches(np.random.default_rng(4)))
    (directory / "data_batch_4.bin").unlink()
    with pytest.raises(GenzooError, match="missing file") as e:
        genzoo.data.load("cifar10", root=str(tmp_path))
    assert "data_batch_4.bin" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenzooError, match="holds neither") as e:
        genzoo.data.load("cifar10", root=str(tmp_path / "empty"))
    assert "data_batch_1.bin" in str(e.value)
    with pytest.raises(GenzooError, match="does not exist"):
        genzoo.data.load("cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(GenzooError, match="root=DIR"):
        genzoo.data.load("cifar10")
