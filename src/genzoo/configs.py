"""Config values checked field by field against the config dataclass's annotations, before a
model is built: for `genzoo.create`, the command line, `--config FILE` and every checkpoint.

One sentence for an unknown field, a missing one (when all are required, as in a checkpoint),
a value of the wrong type, and for sizes beyond the caps below, which keep a hostile or mistyped
config from allocating gigabytes or building millions of layers.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from .errors import GenzooError

MAX_INT = 100_000            # any integer field (channels, blocks, time steps, codes, ...)
MAX_PARAMETERS = 500_000_000  # parameters of a model built from a config (2 GB in float32)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def check_value(value: Any, annotation: Any, where: str, max_int: int | None = MAX_INT) -> Any:
    """`value` converted to the field's annotation where JSON loses the type (lists -> tuples,
    integral numbers -> float), or one GenzooError sentence naming `where`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return check_value(value, a, where, max_int)
            except GenzooError as e:
                errors.append(e)
        raise errors[0] if len(errors) == 1 else GenzooError(
            f"{where} must be one of {', '.join(map(_type_name, args))}, got {value!r}.")
    if origin is typing.Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise GenzooError(f"{where} must be one of {', '.join(map(str, args))}, got {value!r}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise GenzooError(f"{where} must be a list, got {value!r}.")
        if len(value) > 64:
            raise GenzooError(f"{where} has {len(value)} entries; at most 64 are allowed.")
        item = args[0] if args else Any
        return tuple(check_value(v, item, f"{where}[{i}]", max_int) for i, v in enumerate(value))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise GenzooError(f"{where} must be true or false, got {value!r}.")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GenzooError(f"{where} must be an integer, got {value!r}.")
        if max_int is not None and abs(value) > max_int:
            raise GenzooError(f"{where} is {value}; genzoo allows at most {max_int:,} for an integer setting.")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GenzooError(f"{where} must be a number, got {value!r}.")
        if not math.isfinite(value):
            raise GenzooError(f"{where} must be a finite number, got {value!r}.")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise GenzooError(f"{where} must be text, got {value!r}.")
        return value
    return value  # nested configs and other types: the dataclass's own __post_init__ checks them


def check_fields(cls: type, values: Any, what: str, require_all: bool = False,
                 max_int: int | None = MAX_INT) -> dict[str, Any]:
    """`values` (a dict of field -> value) checked against dataclass `cls`: no unknown field, no
    missing one when `require_all`, each value of its field's type (integers capped at `max_int`)."""
    if not isinstance(values, dict):
        raise GenzooError(f"{what} must be a JSON object of fields, got {type(values).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields), key=str)
    if unknown:
        raise GenzooError(f"{what} has no field {unknown[0]!r}; its fields are: {', '.join(sorted(fields))}.")
    if require_all:  # but fields a config declares newer than some checkpoints take their defaults there
        missing = [n for n in fields if n not in values and n not in getattr(cls, "added_fields", ())]
        if missing:
            raise GenzooError(f"{what} lacks the field {missing[0]!r}.")
    hints = typing.get_type_hints(cls)
    return {name: check_value(value, hints[name], f"{what}: {name}", max_int) for name, value in values.items()}


def build(cls: type, values: dict[str, Any], what: str, require_all: bool = False,
          max_int: int | None = MAX_INT) -> Any:
    """The dataclass instance, after check_fields; one sentence for what its own checks refuse."""
    checked = check_fields(cls, values, what, require_all, max_int)
    try:
        return cls(**checked)
    except GenzooError:
        raise
    except (TypeError, ValueError) as e:
        raise GenzooError(f"bad {what}: {e}.") from e


def field_docs(cls: type) -> dict[str, str]:
    """The documentation of each field of dataclass `cls` (and of the dataclasses it inherits from):
    `field(metadata={"help": ...})` where given, else the comment on the field's line, else the
    comment lines right above it. Shown by `--help`; a field without one has an empty string."""
    import inspect
    import io
    import tokenize

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or "__dataclass_fields__" not in klass.__dict__:
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # defined where no source can be read
            continue
        own = set(klass.__dict__.get("__annotations__", {}))
        above: list[str] = []
        lines = source.splitlines()
        comments = {t.start[0]: t.string.lstrip("#").strip()
                    for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}
        for number, line in enumerate(lines, 1):
            stripped = line.strip()
            if stripped.startswith("#"):
                above.append(comments.get(number, ""))
                continue
            name = stripped.split(":", 1)[0].strip() if ":" in stripped else ""
            if name in own and line.startswith("    ") and not line.startswith("     "):
                trailing = comments.get(number, "") if not stripped.startswith("#") else ""
                docs[name] = trailing or " ".join(above)
            above = []
    for f in dataclasses.fields(cls):
        if "help" in f.metadata:
            docs[f.name] = str(f.metadata["help"])
        docs.setdefault(f.name, "")
    return docs
