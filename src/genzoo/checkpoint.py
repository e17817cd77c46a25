"""Self-describing checkpoints: `config.json` + `model.safetensors`, written atomically.

Nothing is ever unpickled: weights are safetensors (a JSON header and raw buffers), and every
other piece of state is JSON. A weights file that is a pickle (or anything else that is not
safetensors) is refused before a byte of it is interpreted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .data.spec import DataSpec
from .errors import GenzooError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024
TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> str:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part.

    The file gets the permissions a plain open() would give (0666 less the umask). An OSError (a
    full disk, no permission) becomes one sentence naming the file. Returns the SHA-256 of `data`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise GenzooError(f"cannot write {str(path)!r}: {e.strerror or e}.") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise GenzooError(f"cannot write {str(path)!r}: {e.strerror or e}.") from e
        raise
    return hashlib.sha256(data).hexdigest()


def remove_temporary_files(directory: str | Path) -> list[Path]:
    """Delete what killed atomic writes left in `directory` and below (.NAME.XXXX.tmp files)."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for tmp in directory.rglob(f".*{TMP_SUFFIX}"):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def refuse_links(directory: str | Path, names: Any) -> None:
    """Refuse, in one sentence naming the entry, a directory whose entries `names` (files or folders
    genzoo writes or deletes there) are symbolic links: a link would let a write or a clean-up reach
    files outside the directory."""
    directory = Path(directory)
    for name in names:
        if os.path.islink(directory / name):
            raise GenzooError(f"{str(directory / name)!r} is a symbolic link; genzoo writes only its own files in "
                              f"{str(directory)!r}, never through a link (remove the link or choose another directory).")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


MAX_JSON_BYTES = 16 << 20   # a config, a run record or a state is a few kilobytes
MAX_JSON_DEPTH = 32         # genzoo's own files nest 4 deep
MAX_JSON_DIGITS = 24        # integers up to 10^24: seeds and sizes are far below


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_JSON_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _depth(text: bytes) -> int:
    """How deeply JSON text nests arrays and objects, read from its brackets outside strings (a scan in C
    and numpy: no recursion, and no Python loop over a million elements)."""
    b = np.frombuffer(_STRING.sub(b'""', text), dtype=np.uint8)
    steps = np.isin(b, (ord("["), ord("{"))).astype(np.int64) - np.isin(b, (ord("]"), ord("}")))
    return int(steps.cumsum().max()) if len(steps) else 0


def parse_json(text: str | bytes, where: str) -> Any:
    """JSON from a file genzoo reads, within limits on size, nesting depth and integer length checked
    before any field is: one sentence naming `where` otherwise."""
    if len(text) > MAX_JSON_BYTES:
        raise GenzooError(f"{where} is {len(text):,} bytes; genzoo reads at most {MAX_JSON_BYTES:,} of JSON.")
    raw = text.encode() if isinstance(text, str) else text
    if _depth(raw) > MAX_JSON_DEPTH:
        raise GenzooError(f"{where} nests deeper than genzoo reads ({MAX_JSON_DEPTH} levels).")
    try:
        return json.loads(raw, parse_int=_int)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # JSONDecodeError is a ValueError
        detail = f"at {e.pos}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise GenzooError(f"{where} is not valid JSON ({type(e).__name__} {detail}).") from None


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise GenzooError(f"{what} {str(path)!r} does not exist.")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise GenzooError(f"{what} {str(path)!r} is {size:,} bytes; genzoo reads at most {MAX_JSON_BYTES:,} of JSON.")
    return parse_json(path.read_bytes(), f"{what} {str(path)!r}")


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
Expected = dict[str, tuple[tuple[int, ...], torch.dtype]]


def save_tensors(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> str:
    """Atomically write a dict of tensors as safetensors (shared storage is copied apart); returns
    the file's SHA-256."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    return atomic_write_bytes(path, st_save(flat, metadata=metadata))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"the name {next(k for k in names if names.count(k) > 1)!r} appears twice")
    return dict(pairs)


def _is_pickle(head: bytes) -> bool:
    return head[:2] == b"PK" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def read_header(path: str | Path) -> Expected:
    """The tensors a safetensors file declares, name -> (shape, dtype), read from its header alone
    and checked against the file's size: nothing else of the file is read. Pickles (torch.save) and
    anything else are refused in one sentence without being interpreted."""
    path = Path(path)
    if not path.is_file():
        raise GenzooError(f"weights file {str(path)!r} does not exist.")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
        n = struct.unpack("<Q", head[:8])[0] if len(head) >= 9 else -1
        if n < 0 or n > _MAX_HEADER or 8 + n > size or head[8:9] != b"{":
            if _is_pickle(head):
                raise GenzooError(f"{str(path)!r} holds a pickle (torch.save format), which genzoo never loads; "
                                  "convert it to safetensors.")
            if len(head) < 9:
                raise GenzooError(f"{str(path)!r} is truncated: {size} bytes is too short for a safetensors file.")
            if n > _MAX_HEADER or 8 + n > size:
                raise GenzooError(f"{str(path)!r} is not a valid safetensors file: its header claims {n:,} bytes, "
                                  f"more than the file holds.")
            raise GenzooError(f"{str(path)!r} is not a valid safetensors file (bad header).")
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw, object_pairs_hook=_no_duplicates)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype, shape, (lo, hi) = _DTYPES[info["dtype"]], info["shape"], info["data_offsets"]
            if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
                    and isinstance(lo, int) and isinstance(hi, int)):
                raise ValueError(f"tensor {name!r} has a bad shape or offsets")
            nbytes = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
            if not 0 <= lo <= hi <= size - 8 - n or hi - lo != nbytes:
                raise ValueError(f"tensor {name!r} lies outside the file or has the wrong size")
            out[name] = (tuple(shape), dtype)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
        what = str(e) if type(e) is ValueError else f"a malformed entry ({type(e).__name__}: {e})"
        raise GenzooError(f"{str(path)!r} is not a valid safetensors file: {what}.") from e
    return out


def load_tensors(path: str | Path, expected: Expected | None = None) -> dict[str, Tensor]:
    """Read a safetensors file after checking its header (read_header) against `expected` names,
    shapes and dtypes (any floating-point dtype for a floating-point tensor: it loads into the model's
    precision), before the data are read; floating-point tensors must be finite."""
    path = Path(path)
    declared = read_header(path)
    if expected is not None:
        missing, unexpected = sorted(set(expected) - set(declared)), sorted(set(declared) - set(expected))
        if missing or unexpected:
            what = f"lacks {missing[0]!r}" if missing else f"has unexpected {unexpected[0]!r}"
            raise GenzooError(f"weights in {str(path)!r} do not fit the model its config describes: the file {what}.")
        for name, (shape, dtype) in declared.items():
            want_shape, want_dtype = expected[name]
            same_kind = dtype == want_dtype or (dtype.is_floating_point and want_dtype.is_floating_point)
            if shape != want_shape or not same_kind:  # floating-point weights load into the model's precision
                raise GenzooError(f"weights in {str(path)!r} do not fit the model: {name!r} is {dtype} of shape "
                                  f"{shape}, expected {expected[name][1]} of shape {expected[name][0]}.")
    try:
        tensors = st_load(path.read_bytes())
    except MemoryError as e:
        raise GenzooError(f"{str(path)!r} is too large to read into memory.") from e
    except Exception as e:  # safetensors raises its own error types for corrupt buffers
        raise GenzooError(f"{str(path)!r} is a corrupt safetensors file: {e}.") from e
    for name, t in tensors.items():
        if t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise GenzooError(f"weights in {str(path)!r} are not finite: {name!r} holds NaN or infinity.")
    return tensors


def expected_tensors(model: torch.nn.Module) -> Expected:
    """name -> (shape, dtype) of every tensor in the model's state dict."""
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save(model: torch.nn.Module, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `config.json` (model name, config, DataSpec, genzoo version) and `model.safetensors`.

    The weights are written first and config.json last, each atomically, so a directory with a
    config.json always has the weights it describes.
    """
    from . import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / WEIGHTS_FILE, model.state_dict())
    meta = {
        "genzoo_version": __version__,
        "model": model.name,
        "config": config_to_dict(model.config),
        "spec": model.spec.to_dict(),
    }
    if extra:
        meta.update(extra)
    atomic_write_json(directory / CONFIG_FILE, meta)
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    if not directory.is_dir():
        raise GenzooError(f"checkpoint directory {str(directory)!r} does not exist.")
    meta = read_json(directory / CONFIG_FILE, "checkpoint config")
    if not isinstance(meta, dict) or not {"model", "config", "spec"} <= set(meta):
        raise GenzooError(f"{str(directory / CONFIG_FILE)!r} is not a genzoo checkpoint config (needs model, config and spec).")
    for key, kind, what in (("model", str, "a model name"), ("config", dict, "an object"), ("spec", dict, "an object"),
                            ("run", dict, "an object")):
        if key in meta and not isinstance(meta[key], kind):
            raise GenzooError(f"{str(directory / CONFIG_FILE)!r}: its {key!r} must be {what}, got {meta[key]!r:.60}.")
    return meta


def build_from_config(meta: dict[str, Any]) -> torch.nn.Module:
    """The model a checkpoint's config describes, every field checked (genzoo.configs) and its size
    bounded before anything is allocated."""
    from .registry import check_size, make_config, model_class

    if not isinstance(meta.get("model"), str):
        raise GenzooError(f"a checkpoint's model must be a name, got {meta.get('model')!r}.")
    cls = model_class(meta["model"])
    config = make_config(meta["model"], meta["config"], require_all=True)
    spec = DataSpec.from_dict(meta["spec"])
    check_size(cls, spec, config)
    return cls(spec, config)


def load_state(model: torch.nn.Module, path: str | Path) -> None:
    """Load the weights file `path` into `model`, checked against the model (load_tensors)."""
    model.load_state_dict(load_tensors(path, expected_tensors(model)), strict=True)


def load(directory: str | Path) -> torch.nn.Module:
    """Rebuild the model from `config.json` and `model.safetensors` alone; returned in eval mode."""
    directory = Path(directory)
    meta = read_config(directory)
    model = build_from_config(meta)
    load_state(model, directory / WEIGHTS_FILE)
    return model.eval()
