"""CIFAR-10 (3, 32, 32, 256 levels) from the standard binary or python batches.

Binary batches (`cifar-10-batches-bin/data_batch_1.bin` ... `data_batch_5.bin`, `test_batch.bin`):
records of 1 label byte and 3072 pixel bytes (1024 red, then green, then blue, each 32x32 in
row-major order). Python batches (`cifar-10-batches-py/data_batch_1` ... `test_batch`): pickled
dicts with "data" (N, 3072) uint8 in the same layout and "labels" (N,). `root` may be the
batches directory itself or its parent; the binary batches are used when both are present.

A python batch is read by `RestrictedUnpickler`, which rebuilds numpy arrays, lists, dicts,
strings and bytes and nothing else: any other global in the file is refused with a
GenzooError before it is called, so a malicious file cannot run code.

Splits: the five training batches, concatenated in order, are the training file; "train" is
its first 90%, "val" its last 10% (`holdout_split`), "test" is the test batch.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import GenzooError
from .idx import check_root, requantize
from .limits import read_bytes
from .spec import Dataset, DataSpec, check_split, holdout_split

SPEC = DataSpec(channels=3, height=32, width=32, levels=256)
RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"


def _numpy_attr(module: str, name: str) -> Callable[..., Any]:
    # numpy 2 moved numpy.core to numpy._core; pickles name either, resolve to whichever exists.
    core = getattr(np, "_core", None) or np.core
    return getattr(getattr(core, module), name)


def _bytes_from_latin1(text: str, encoding: str) -> bytes:
    """The one use of _codecs.encode in pickles: Python 3 writes bytes this way in protocol 2."""
    if encoding != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _frombuffer(buffer: Any, dtype: np.dtype, shape: tuple[int, ...], order: str,
                axis_order: tuple[int, ...] | None = None) -> np.ndarray:
    """numpy's protocol-5 array constructor (numpy._core.numeric._frombuffer), restated here."""
    array = np.frombuffer(buffer, dtype=dtype)
    if order == "K" and axis_order is not None:
        return array.reshape(shape, order="C").transpose(axis_order)
    return array.reshape(shape, order=order)


_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr("multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"): lambda: _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): lambda: _frombuffer,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: _bytes_from_latin1,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose globals are only those needed to rebuild numpy arrays and bytes.

    Allowed: numpy.ndarray, numpy.dtype, numpy.(_)core.multiarray._reconstruct,
    numpy.(_)core.numeric._frombuffer (protocol 5), _codecs.encode with "latin1" only (bytes in
    protocol 2). Lists, dicts, tuples, strings, bytes and numbers need no globals.
    """

    def find_class(self, module: str, name: str) -> Any:
        make = _ALLOWED.get((module, name))
        if make is None:
            raise RefusedGlobal(module, name)
        return make()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def restricted_load(path: Path) -> Any:
    """Unpickle `path` with `RestrictedUnpickler` (Python 2 strings decoded as latin1, as numpy needs)."""
    data = read_bytes(path)
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except RefusedGlobal as e:
        raise GenzooError(f"{path} was refused: the pickle asks for {e.qualname}, which is not a numpy array, list, dict "
                          "or bytes (genzoo never unpickles arbitrary objects).") from None
    except Exception as e:  # a corrupt pickle can fail with almost any exception type
        raise GenzooError(f"{path} is not a readable python batch: it is truncated or corrupt ({type(e).__name__}).") from None


def _check_labels(labels: np.ndarray, n: int, path: Path) -> None:
    if len(labels) != n:
        raise GenzooError(f"{path} is corrupt: it holds {n} images but {len(labels)} labels.")
    if n and (labels.min() < 0 or labels.max() > 9):
        raise GenzooError(f"{path} is corrupt: it holds labels outside 0 to 9.")


def read_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one binary batch."""
    data = read_bytes(path)
    if len(data) == 0 or len(data) % RECORD_BYTES:
        raise GenzooError(f"{path} is truncated or corrupt: it holds {len(data)} bytes, "
                          f"not a whole number of {RECORD_BYTES}-byte records.")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, len(records), path)
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 of one python batch, unpickled safely."""
    batch = restricted_load(path)
    if not isinstance(batch, dict):
        raise GenzooError(f"{path} is not a CIFAR-10 python batch: it holds a {type(batch).__name__}, not a dict.")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != RECORD_BYTES - 1:
        raise GenzooError(f"{path} is not a CIFAR-10 python batch: its 'data' is not an (N, 3072) uint8 array.")
    flat = isinstance(labels, np.ndarray) and labels.ndim == 1 and labels.dtype.kind in "iu"
    if not flat and not (isinstance(labels, (list, tuple)) and all(type(v) is int for v in labels)):
        raise GenzooError(f"{path} is not a CIFAR-10 python batch: its 'labels' are not a flat list of integers.")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except OverflowError:
        raise GenzooError(f"{path} is corrupt: it holds labels outside 0 to 9.") from None
    _check_labels(labels, len(data), path)
    return data.reshape(-1, 3, 32, 32), labels


def _locate(base: Path) -> tuple[Path, str]:
    """The batches directory and its format, "bin" or "py"."""
    for fmt, probe in (("bin", "data_batch_1.bin"), ("py", "data_batch_1")):
        for d in (base, base / f"cifar-10-batches-{fmt}"):
            if (d / probe).is_file():
                return d, fmt
    raise GenzooError(f"missing file {base / 'cifar-10-batches-bin' / 'data_batch_1.bin'}: "
                      f"{base} holds neither the binary nor the python CIFAR-10 batches.")


def load_cifar10(split: str = "train", root: str | None = None, levels: int | None = None) -> Dataset:
    """CIFAR-10 (3, 32, 32, 256 levels) from the binary or python batches under `root`."""
    check_split(split)
    base = check_root(root, "cifar10", "cifar-10-batches-bin or cifar-10-batches-py")
    batches, fmt = _locate(base)
    names = [TEST_BATCH] if split == "test" else TRAIN_BATCHES
    read = read_binary_batch if fmt == "bin" else read_python_batch
    paths = [batches / (name + ".bin" if fmt == "bin" else name) for name in names]
    for path in paths:
        if not path.is_file():
            raise GenzooError(f"missing file {path}: CIFAR-10 needs data_batch_1 to data_batch_5 and test_batch.")
    parts = [read(path) for path in paths]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    rows = slice(0, len(images)) if split == "test" else holdout_split(len(images), split)
    x, k = requantize(images[rows], levels)
    rule = "the test batch" if split == "test" else "data_batch_1..5 concatenated; train: first 90%, val: last 10%"
    info = {"split_rule": rule, "format": fmt, "files": [str(p) for p in paths],
            "rows": [rows.start, rows.stop], "levels": k}
    return Dataset(torch.from_numpy(x.astype(np.int64)), DataSpec(3, 32, 32, k),
                   torch.from_numpy(labels[rows].copy()), name="cifar10", split=split, info=info)
