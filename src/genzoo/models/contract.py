"""The contract of models/base.py checked on a class, when it is registered (`genzoo.register`), so
that a plugin that breaks it is one sentence naming the class and the hook, not an error at
training step 1.

What is checked: the class and its frozen `Config` (every field with a default); the required
methods and the parameter names the trainer, evaluation and the command line pass them (`x`,
`labels`, `n`, `generator`); that a likelihood is declared in one way only (by subclassing
`LikelihoodModel`, which requires `log_likelihood`); and that the model, built on the meta device
with its default config, has parameters to train.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable

import torch

from ..data.spec import DataSpec
from ..errors import GenzooError
from .base import GenerativeModel, LikelihoodModel

# Specs a default model is built for when registration counts its parameters (grey, colour, 2-D toy).
PROBE_SPECS = (DataSpec(1, 8, 8, 17), DataSpec(3, 8, 8, 256), DataSpec(2, 1, 1, 256))


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether `fn` takes a keyword argument `name` (by that name, or through **kwargs)."""
    params = inspect.signature(fn).parameters.values()
    return any(p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params) or any(
        p.kind is p.VAR_KEYWORD for p in params)


def _defines(cls: type, method: str) -> bool:
    fn = getattr(cls, method, None)
    return fn is not None and not getattr(fn, "_required", False) and fn is not getattr(GenerativeModel, method, None)


def check_model_class(name: str, cls: Any) -> None:
    """One sentence naming the class and the hook unless `cls` keeps the contract (models/base.py)."""
    what = f"model {name!r}"
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModel)):
        raise GenzooError(f"{what} must be a subclass of genzoo.GenerativeModel, got {cls!r}.")
    what = f"{what} ({cls.__name__})"
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and dataclasses.is_dataclass(config)):
        raise GenzooError(f"{what} needs a config dataclass as its `Config` attribute.")
    if not config.__dataclass_params__.frozen:
        raise GenzooError(f"{what}: its Config {config.__name__} must be a frozen dataclass.")
    for f in dataclasses.fields(config):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise GenzooError(f"{what}: the field {f.name!r} of its Config {config.__name__} has no default; every "
                              f"config field needs one, since genzoo.create builds a model from the defaults.")
    if cls.name and cls.name != name:
        raise GenzooError(f"{what}: the class calls itself {cls.name!r}; register it under that name.")
    _check_likelihood(cls, what)
    conditional_on_classes = any(f.name == "num_classes" for f in dataclasses.fields(config))
    hooks = [("loss", ("x",)), ("sample", ("n", "generator"))]
    if cls.has_likelihood:
        hooks += [("log_likelihood", ("x",)), ("validation_nats", ("x",))]
    for method, names in hooks:
        if method == "sample" and cls.conditional:
            continue
        if not _defines(cls, method) and method != "validation_nats":
            raise GenzooError(f"{what} does not define {method}, which the contract requires.")
        fn = getattr(cls, method)
        wanted = names + (("labels",) if conditional_on_classes and method != "validation_nats" else ())
        for arg in wanted:
            if not _accepts(fn, arg):
                why = "its Config has num_classes, so " if arg == "labels" else ""
                raise GenzooError(f"{what}: {method} must take the argument {arg!r} by that name ({why}genzoo calls "
                                  f"{method}({', '.join(f'{a}=...' for a in wanted)})); its signature is "
                                  f"{method}{inspect.signature(fn)}.")
    _check_parameters(cls, config, what)


def _check_likelihood(cls: type, what: str) -> None:
    """One way to say that a model has a likelihood: subclassing LikelihoodModel, which defines it."""
    for klass in cls.__mro__:
        if klass in (GenerativeModel, LikelihoodModel):
            break
        if "has_likelihood" in klass.__dict__:
            raise GenzooError(f"{what} sets has_likelihood by hand; genzoo derives it: subclass genzoo.LikelihoodModel "
                              f"and define log_likelihood for a model with a likelihood, genzoo.GenerativeModel otherwise.")
    if issubclass(cls, LikelihoodModel) and not _defines(cls, "log_likelihood"):
        raise GenzooError(f"{what} subclasses genzoo.LikelihoodModel but does not define log_likelihood; define it, or "
                          f"subclass genzoo.GenerativeModel for a model without a likelihood.")
    if not issubclass(cls, LikelihoodModel) and _defines(cls, "log_likelihood"):
        raise GenzooError(f"{what} defines log_likelihood but subclasses genzoo.GenerativeModel; subclass "
                          f"genzoo.LikelihoodModel so that evaluation and compare use its likelihood.")


def _check_parameters(cls: type, config: type, what: str) -> None:
    """The default model, built on the meta device (no memory), must have parameters to train. A
    constructor that cannot run on meta, or refuses every probe spec, is left to create()."""
    for spec in PROBE_SPECS:
        try:
            with torch.device("meta"):
                count = sum(p.numel() for p in cls(spec, config()).parameters())
        except Exception:  # noqa: BLE001 -- this spec or the meta device does not suit the model: try another
            continue
        if count == 0:
            raise GenzooError(f"{what} has no parameters with its default config; the trainer optimizes a model's "
                              f"parameters, so a model needs at least one (an nn.Parameter or a layer).")
        return
