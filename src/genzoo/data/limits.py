"""The caps every dataset reader keeps, so that a corrupt or hostile file costs one sentence, not
the machine's memory: a file, compressed or decompressed, holds at most MAX_FILE_BYTES; an image
at most MAX_IMAGE_PIXELS pixels (decided from its header, before it is decoded); pickled CIFAR
labels are a flat list of integers (no nesting). A MemoryError while reading becomes one sentence
naming the file.
"""
from __future__ import annotations

import zlib
from pathlib import Path

from ..errors import GenzooError

MAX_FILE_BYTES = 1 << 28          # 256 MiB: full MNIST is 47 MB, a CIFAR-10 batch 30 MB
MAX_IMAGE_PIXELS = 50_000_000     # width x height of one image (a 7000 x 7000 photograph)
_GZIP_MAGIC = b"\x1f\x8b"


def read_raw(path: Path) -> bytes:
    """The bytes of `path` as stored, at most MAX_FILE_BYTES."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise GenzooError(f"{path} holds {size:,} bytes, more than genzoo reads from one file "
                              f"({MAX_FILE_BYTES:,}).")
        return path.read_bytes()
    except OSError as e:
        raise GenzooError(f"cannot read {path}: {e.strerror or e}.") from e
    except MemoryError as e:
        raise GenzooError(f"{path} does not fit in memory.") from e


def read_bytes(path: Path) -> bytes:
    """The bytes of `path`, at most MAX_FILE_BYTES; gzip content (by name or by magic) is
    decompressed, to at most MAX_FILE_BYTES as well."""
    data = read_raw(path)
    return gunzip(data, path, MAX_FILE_BYTES) if is_gzip(path, data) else data


def is_gzip(path: Path, data: bytes) -> bool:
    return path.suffix == ".gz" or data[:2] == _GZIP_MAGIC


def gunzip(data: bytes, path: Path, limit: int, at_limit: str = "refuse", truncated_ok: bool = False) -> bytes:
    """Decompress a gzip stream a megabyte at a time, never holding more than `limit` bytes (+1 MiB):
    beyond `limit` it is refused (a gzip bomb), or with at_limit="stop" its first `limit` bytes are
    returned. A truncated or corrupt stream is refused unless `truncated_ok` (reading a header)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    parts, total, pending = [], 0, data
    try:
        while pending or not inflater.eof:
            chunk = inflater.decompress(pending, 1 << 20)
            pending = inflater.unconsumed_tail
            parts.append(chunk)
            total += len(chunk)
            if total > limit:
                if at_limit == "stop":
                    return b"".join(parts)[:limit]
                raise GenzooError(f"{path} expands beyond {limit:,} bytes when decompressed; genzoo refuses it.")
            if not chunk and not pending:
                break
        if (not inflater.eof or inflater.unused_data) and not truncated_ok:
            raise GenzooError(f"{path} is not a valid gzip file: it is truncated or corrupt.")
    except zlib.error as e:
        if truncated_ok:
            return b"".join(parts)
        raise GenzooError(f"{path} is not a valid gzip file: it is truncated or corrupt.") from e
    except MemoryError as e:
        raise GenzooError(f"{path} does not fit in memory once decompressed.") from e
    return b"".join(parts)
