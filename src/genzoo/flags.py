"""Command-line flags built from declarations: config dataclass fields and the keyword options of a
model's methods (GenerativeModel.options), each converted by its type annotation after parsing."""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Sequence

from .configs import field_docs
from .errors import GenzooError
from .models.base import GenerativeModel

try:
    from types import UnionType  # `int | None` annotations
except ImportError:  # Python < 3.10
    UnionType = None


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one sentence, no usage dump
        if message.startswith("unrecognized arguments:"):
            extra = message.split(":", 1)[1].strip()
            raise GenzooError(f"unknown option {extra}; '{self.prog} --help' lists the options.")
        raise GenzooError(message or "bad arguments")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def converter(annotation: Any) -> Callable[[str], Any]:
    """A str -> value function for a type annotation: int, float, bool, str, Literal, tuple[...], X | None."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (UnionType is not None and origin is UnionType):
        inner = [a for a in args if a is not type(None)]
        base = converter(inner[0]) if len(inner) == 1 else str

        def optional(text: str) -> Any:
            return None if text.lower() in ("none", "null") else base(text)
        return optional
    if origin is typing.Literal:
        def literal(text: str) -> Any:
            for choice in args:
                if str(choice) == text:
                    return choice
            raise ValueError(f"choose one of {', '.join(map(str, args))}")
        return literal
    if origin in (tuple, list):
        item = converter(args[0] if args else str)
        return lambda text: tuple(item(t) for t in text.split(",") if t.strip())
    if annotation is bool:
        return _parse_bool
    if annotation in (int, float):
        def number(text: str) -> Any:
            try:
                return annotation(text)
            except ValueError:
                raise ValueError("expected an integer" if annotation is int else "expected a number") from None
        return number
    return str


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or bool in typing.get_args(annotation)


class Flags:
    """Flags of one group, built from (name, annotation, default, help) and converted after parsing."""

    def __init__(self, parser: argparse.ArgumentParser, title: str, prefix: str) -> None:
        self.group = parser.add_argument_group(title)
        self.prefix = prefix
        self.convert: dict[str, Callable[[str], Any]] = {}

    def add(self, name: str, annotation: Any, default: Any, help: str = "") -> None:
        shown = f"default {default!r}" if default is not dataclasses.MISSING else "required"
        if typing.get_origin(annotation) is typing.Literal:
            shown = f"one of {', '.join(map(str, typing.get_args(annotation)))}; {shown}"
        kwargs: dict[str, Any] = {"nargs": "?", "const": "true"} if _is_bool(annotation) else {}
        self.group.add_argument(flag(name), dest=f"{self.prefix}__{name}", default=None, metavar="VALUE",
                                help=f"{help} ({shown})" if help else shown, **kwargs)
        self.convert[name] = converter(annotation)

    def values(self, args: argparse.Namespace) -> dict[str, Any]:
        """The flags the user gave, converted; one sentence for a bad value."""
        out = {}
        for name, conv in self.convert.items():
            text = getattr(args, f"{self.prefix}__{name}", None)
            if text is not None:
                try:
                    out[name] = conv(text)
                except (ValueError, TypeError) as e:
                    raise GenzooError(f"bad value {text!r} for {flag(name)}: {e}.") from None
        return out


def dataclass_flags(parser: argparse.ArgumentParser, cls: type, title: str, prefix: str,
                    defaults: dict[str, Any] | None = None) -> Flags:
    """One flag per field of dataclass `cls`, showing `defaults` (else the field's own default)."""
    flags = Flags(parser, title, prefix)
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        default = (defaults or {}).get(f.name, f.default)
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        flags.add(f.name, hints[f.name], default, docs[f.name])
    return flags


def option_flags(parser: argparse.ArgumentParser, cls: type[GenerativeModel], methods: Sequence[str],
                 taken: set[str]) -> tuple[Flags, dict[str, list[str]]]:
    """Flags for the keyword options of the model's `methods` (GenerativeModel.options); a flag shared
    by several methods goes to each. Returns the flags and name -> the methods that take it."""
    flags = Flags(parser, f"{cls.name} options", "opt")
    where: dict[str, list[str]] = {}
    for method in methods:
        for opt in cls.options(method):
            if opt.name in taken:
                continue
            if opt.name not in where:
                flags.add(opt.name, opt.annotation, opt.default, f"{cls.name}.{method}")
            where.setdefault(opt.name, []).append(method)
    return flags, where


def route(values: dict[str, Any], where: dict[str, list[str]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{method: {option: value}} for the option flags given."""
    routed: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for name, value in values.items():
        for method in where[name]:
            routed[method][name] = value
    return routed


