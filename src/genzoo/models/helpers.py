"""Helpers every model uses beside the contract of models/base.py: the one eval-mode context, the
one callback convention of the samplers, and the checks of config values and sampling options (each
check one sentence naming the value).
"""
from __future__ import annotations

import typing
from contextlib import contextmanager
from typing import Any, Iterator, Literal

from torch import Tensor, nn

from ..data.transforms import from_centered
from ..errors import GenzooError

Callback = typing.Callable[[dict[str, Tensor | int]], None]


def report_step(callback: Callback | None, step: int, steps: int | None, **state: Tensor) -> None:
    """The one callback convention of the samplers: `callback({"step": k, "steps": N, "x": ...})` after
    step k of N, with copies of the state (the canvas as it fills), so a callback changes nothing."""
    if callback is not None:
        callback({"step": step, "steps": steps, **{k: v.clone() for k, v in state.items()}})


def as_levels(callback: Callback | None, levels: int) -> Callback | None:
    """A callback given a sampler's continuous states in [-1, 1] (x_t, x0, ...) as the nearest levels."""
    if callback is None:
        return None
    return lambda state: callback({k: from_centered(v, levels) if isinstance(v, Tensor) else v
                                   for k, v in state.items()})


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode inside the block (dropout off), its previous mode restored after, however
    the block ends: the one way a model evaluates or samples itself."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def check_choices(config: Any) -> None:
    """Every `Literal[...]` field of a config dataclass holds one of its choices; one sentence naming
    the field and the choices otherwise. The one check of every string option (the command line
    lists the same choices in --help)."""
    for name, annotation in typing.get_type_hints(type(config)).items():
        if typing.get_origin(annotation) is Literal:
            value, choices = getattr(config, name), typing.get_args(annotation)
            if value not in choices or not isinstance(value, str):
                raise GenzooError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}.")


def check_positive(value: float, name: str, allow_zero: bool = False) -> None:
    """Raise a GenzooError naming the config field when `value` is not positive."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok:
        bound = "at least 0" if allow_zero else "positive"
        raise GenzooError(f"{name} must be {bound}, got {value!r}.")


def check_range(value: float, name: str, lo: float, hi: float) -> None:
    if not (lo <= value <= hi):
        raise GenzooError(f"{name} must be between {lo} and {hi}, got {value!r}.")


TEMPERATURES = (1e-4, 100.0)  # dividing logits: from the argmax to near-uniform
LATENT_TEMPERATURES = (0.0, 100.0)  # scaling a latent's standard deviation: 0 draws the mode


def check_strength(strength: Any) -> float:
    """An SDEdit strength: a number from 0 (x itself) to 1 (pure noise)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise GenzooError(f"strength must be a number from 0 to 1, got {strength!r}.")
    return float(strength)


def check_temperature(temperature: float, scales_latent: bool = False) -> float:
    """A sampling temperature within its documented range: TEMPERATURES where it divides logits,
    LATENT_TEMPERATURES where it scales a latent's standard deviation (beyond them samples are all
    one level, or overflow)."""
    lo, hi = LATENT_TEMPERATURES if scales_latent else TEMPERATURES
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not lo <= temperature <= hi:
        raise GenzooError(f"temperature must be a number from {lo} to {hi}, got {temperature!r}.")
    return float(temperature)
