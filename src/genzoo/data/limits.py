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

MAX_FILE_BYTES = 1 << 30          # 1 GiB: full MNIST is 47 MB, CIFAR-10 180 MB
MAX_IMAGE_PIXELS = 50_000_000     # width x height of one image (a 7000 x 7000 photograph)
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The bytes of `path`, at most MAX_FILE_BYTES; gzip content (by name or by magic) is
    decompressed, to at most MAX_FILE_BYTES as well."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise GenzooError(f"{path} holds {size:,} bytes, more than genzoo reads from one file "
                              f"({MAX_FILE_BYTES:,}).")
        data = path.read_bytes()
    except OSError as e:
        raise GenzooError(f"cannot read {path}: {e.strerror or e}.") from e
    except MemoryError as e:
        raise GenzooError(f"{path} does not fit in memory.") from e
    if path.suffix == ".gz" or data[:2] == _GZIP_MAGIC:
        data = gunzip(data, path)
    return data


def gunzip(data: bytes, path: Path) -> bytes:
    """Decompress a gzip stream, refusing one that expands beyond MAX_FILE_BYTES (a gzip bomb)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, MAX_FILE_BYTES + 1)
        if len(out) > MAX_FILE_BYTES or inflater.unconsumed_tail:
            raise GenzooError(f"{path} expands beyond {MAX_FILE_BYTES:,} bytes when decompressed; genzoo "
                              "refuses it.")
        if not inflater.eof or inflater.unused_data:
            raise GenzooError(f"{path} is not a valid gzip file: it is truncated or corrupt.")
    except zlib.error as e:
        raise GenzooError(f"{path} is not a valid gzip file: it is truncated or corrupt.") from e
    except MemoryError as e:
        raise GenzooError(f"{path} does not fit in memory once decompressed.") from e
    return out
