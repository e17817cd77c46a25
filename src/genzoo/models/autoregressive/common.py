"""What every autoregressive model over discrete levels shares: the categorical likelihood of
per-sub-pixel logits and exact ancestral sampling in raster-then-channel order.

Logits have shape (B, K, C, H, W). log P(x) = sum_i log softmax(logits)_i[x_i], exact by the
product rule P(x) = prod_i P(x_i | x_<i).
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import GenzooError
from ...functional import float32
from ..helpers import Callback, report_step


@float32
def categorical_log_prob(logits: Tensor, x: Tensor) -> Tensor:
    """sum over sub-pixels of log softmax(logits)[x]: (B, K, C, H, W), (B, C, H, W) -> (B,)."""
    return -F.cross_entropy(logits, x, reduction="none").flatten(1).sum(1)


def sample_categorical(logits: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """One draw per row of (N, K) logits from softmax(logits / T), by inverting the CDF of a uniform.

    The uniform comes from `generator`, one per row, so any two samplers that compute the same
    logits draw the same levels.
    """
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    cdf = probs.cumsum(-1)
    u = torch.rand(logits.shape[0], 1, generator=generator, dtype=torch.float64, device=logits.device)
    u = u * cdf[:, -1:]
    return torch.searchsorted(cdf, u).clamp_max(logits.shape[-1] - 1).squeeze(-1)


def check_group_widths(hidden_channels: int, output_hidden: int, channels: int) -> None:
    """Features are split into one contiguous group per image channel (channel_groups), as evenly as
    the widths allow, so each width needs at least one feature per channel."""
    if min(hidden_channels, output_hidden) < channels:
        raise GenzooError(f"hidden_channels and output_hidden must be at least the {channels} image channels "
                          f"(one group of features per channel), got {hidden_channels} and {output_hidden}.")


def check_given(given: Tensor | None, n: int, shape: tuple[int, int, int], levels: int) -> Tensor | None:
    """Validate a completion template: (n, C, H, W) levels, -1 where unknown."""
    if given is None:
        return None
    if not isinstance(given, Tensor) or given.ndim != 4 or tuple(given.shape[1:]) != shape or given.shape[0] != n:
        got = tuple(given.shape) if isinstance(given, Tensor) else type(given).__name__
        raise GenzooError(f"given must have shape ({n}, {shape[0]}, {shape[1]}, {shape[2]}) with -1 where unknown, got {got}.")
    if given.dtype.is_floating_point:
        raise GenzooError("given must hold integer levels (-1 where unknown).")
    if given.numel() and (int(given.min()) < -1 or int(given.max()) > levels - 1):
        raise GenzooError(f"given must hold levels in [0, {levels - 1}] or -1 for unknown pixels.")
    return given.long()


class Stepper(Protocol):
    """Computes the logits of one pixel at a time for `ancestral_sample`."""

    fills_caches: bool  # True: column() must run at every pixel, given or not, to keep its caches whole

    def start(self, x: Tensor) -> None: ...            # before the first step; x is updated in place
    def begin_row(self, i: int) -> None: ...           # before the first pixel of row i
    def column(self, i: int, j: int) -> Tensor: ...    # logits (n, K, C) at (i, j) given x so far
    def set_level(self, i: int, j: int, c: int, level: Tensor) -> None: ...


class FullPassStepper:
    """The plain sampler: one whole forward pass per sub-pixel. `logits_fn(x, row)` returns logits
    (n, K, C, rows, W) valid at least for rows 0..row."""

    fills_caches = False

    def __init__(self, logits_fn: Callable[[Tensor, int], Tensor]) -> None:
        self.logits_fn = logits_fn
        self.x: Tensor | None = None

    def start(self, x: Tensor) -> None:
        self.x = x

    def begin_row(self, i: int) -> None:
        pass

    def column(self, i: int, j: int) -> Tensor:
        assert self.x is not None
        return self.logits_fn(self.x, i)[:, :, :, i, j]

    def set_level(self, i: int, j: int, c: int, level: Tensor) -> None:
        pass


@torch.no_grad()
def ancestral_sample(stepper: Stepper | Callable[[Tensor, int], Tensor], n: int, shape: tuple[int, int, int],
                     temperature: float, generator: torch.Generator | None, given: Tensor | None,
                     device: torch.device, callback: Callback | None = None) -> Tensor:
    """Exact sampling x_1 ~ P(x_1), x_2 ~ P(x_2 | x_1), ... in raster order, channels within a pixel.

    `stepper` computes the logits (a Stepper, or a function `logits_fn(x, row)` run as a
    FullPassStepper). Known pixels of `given` (>= 0) are kept; a sub-pixel step where every image
    of the batch is given draws nothing, any other draws one uniform per image, so every stepper
    that computes the same logits draws the same samples from the same generator. `callback`, when
    given, sees the canvas after every pixel (`report_step`).
    """
    if not hasattr(stepper, "column"):
        stepper = FullPassStepper(stepper)
    C, H, W = shape
    x = torch.zeros(n, C, H, W, dtype=torch.long, device=device)
    known = None
    if given is not None:
        given = given.to(device)
        known = given >= 0
        x = torch.where(known, given, x)
    stepper.start(x)
    for i in range(H):
        stepper.begin_row(i)
        for j in range(W):
            for c in range(C):
                skip = known is not None and bool(known[:, c, i, j].all())
                if skip and not (stepper.fills_caches and c == C - 1):
                    continue
                logits = stepper.column(i, j)  # a caching stepper runs at the last channel even when given
                if skip:
                    continue
                draw = sample_categorical(logits[:, :, c], temperature, generator)
                if known is not None:
                    draw = torch.where(known[:, c, i, j], x[:, c, i, j], draw)
                x[:, c, i, j] = draw
                stepper.set_level(i, j, c, draw)
            report_step(callback, i * W + j + 1, H * W, x=x)
    return x

