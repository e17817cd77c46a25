"""Self-describing checkpoints: `config.json` + `model.safetensors`, written atomically.

Nothing is ever unpickled: weights are safetensors (a JSON header and raw buffers), and every
other piece of state is JSON. A weights file that is a pickle (or anything else that is not
safetensors) is refused before a byte of it is interpreted.
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .data.spec import DataSpec
from .errors import GenzooError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_MAX_HEADER = 100 * 1024 * 1024


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str | Path, what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise GenzooError(f"{what} {str(path)!r} does not exist.")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GenzooError(f"{what} {str(path)!r} is not valid JSON ({e.__class__.__name__} at {getattr(e, 'pos', '?')}).") from e


def save_tensors(path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically write a dict of tensors as safetensors (shared storage is copied apart)."""
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(flat, metadata=metadata))


def load_tensors(path: str | Path) -> dict[str, Tensor]:
    """Read a safetensors file, refusing anything else (pickles included) without interpreting it."""
    path = Path(path)
    if not path.is_file():
        raise GenzooError(f"weights file {str(path)!r} does not exist.")
    data = path.read_bytes()
    header_ok = False
    if len(data) >= 9:
        (n,) = struct.unpack("<Q", data[:8])
        header_ok = n <= _MAX_HEADER and 8 + n <= len(data) and data[8:9] == b"{"
    if not header_ok:
        if data[:2] == b"PK" or (data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
            raise GenzooError(f"{str(path)!r} holds a pickle (torch.save format), which genzoo never loads; "
                              "convert it to safetensors.")
        if len(data) < 9:
            raise GenzooError(f"{str(path)!r} is truncated: {len(data)} bytes is too short for a safetensors file.")
        raise GenzooError(f"{str(path)!r} is not a valid safetensors file (bad or truncated header).")
    try:
        return st_load(data)
    except Exception as e:  # safetensors raises its own error types for corrupt buffers
        raise GenzooError(f"{str(path)!r} is a corrupt safetensors file: {e}.") from e


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from JSON, turning lists back into tuples where fields are tuples."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(d) - set(fields)
    if unknown:
        raise GenzooError(f"checkpoint config has field {sorted(unknown)[0]!r}, which {cls.__name__} does not know; "
                          "was it written by a newer genzoo?")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise GenzooError(f"checkpoint config is not a valid {cls.__name__}: {e}.") from e


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
    return meta


def build_from_config(meta: dict[str, Any]) -> torch.nn.Module:
    from .registry import model_class

    cls = model_class(meta["model"])
    config = config_from_dict(cls.Config, meta["config"])
    return cls(DataSpec.from_dict(meta["spec"]), config)


def load_state(model: torch.nn.Module, tensors: dict[str, Tensor], where: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        what = f"lacks {missing[0]!r}" if missing else f"has unexpected {unexpected[0]!r}"
        raise GenzooError(f"weights in {where} do not fit the model its config describes: the file {what}.")
    for k, v in tensors.items():
        if own[k].shape != v.shape:
            raise GenzooError(f"weights in {where} do not fit the model: {k!r} has shape {tuple(v.shape)}, "
                              f"expected {tuple(own[k].shape)}.")
    model.load_state_dict(tensors, strict=True)


def load(directory: str | Path) -> torch.nn.Module:
    """Rebuild the model from `config.json` and `model.safetensors` alone; returned in eval mode."""
    directory = Path(directory)
    meta = read_config(directory)
    model = build_from_config(meta)
    load_state(model, load_tensors(directory / WEIGHTS_FILE), str(directory / WEIGHTS_FILE))
    return model.eval()
