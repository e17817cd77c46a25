"""Evaluation shared by every family: bits per dimension (with its kind) and task metrics."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .errors import GenzooError
from .functional import psnr  # noqa: F401  (re-exported)
from .models.base import Kind, LogLikelihood


class BitsPerDim(NamedTuple):
    """Mean -log2 P(x) / (C*H*W) over images, and whether it comes from an exact likelihood or a bound."""

    value: float
    kind: Kind


def has_likelihood(model: torch.nn.Module) -> bool:
    return callable(getattr(model, "log_likelihood", None))


def accepts(fn: Any, name: str) -> bool:
    """Whether callable `fn` takes a keyword argument `name` (e.g. class-conditional models and `labels`)."""
    import inspect

    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def log_likelihood_batched(model: torch.nn.Module, x: Tensor, batch_size: int = 256, labels: Tensor | None = None,
                           **options: Any) -> LogLikelihood:
    """model.log_likelihood over `x` in batches; nats (N,) on the CPU. `labels` go to conditional models."""
    if not has_likelihood(model):
        raise GenzooError(f"model {getattr(model, 'name', type(model).__name__)!r} has no likelihood.")
    device = next(iter(model.parameters()), torch.empty(0)).device
    parts, kind = [], None
    for i in range(0, len(x), batch_size):
        if labels is not None and accepts(model.log_likelihood, "labels"):
            options["labels"] = labels[i:i + batch_size].to(device)
        ll = model.log_likelihood(x[i:i + batch_size].to(device), **options)
        parts.append(ll.nats.detach().double().cpu())
        kind = ll.kind
    return LogLikelihood(torch.cat(parts), kind or "exact")


def bits_per_dim(model: torch.nn.Module, x: Tensor, batch_size: int = 256, labels: Tensor | None = None,
                 **options: Any) -> BitsPerDim:
    """Bits per dimension, -nats / (C*H*W * ln 2) averaged over images, with the likelihood's kind."""
    ll = log_likelihood_batched(model, x, batch_size, labels, **options)
    dims = x[0].numel()
    return BitsPerDim(float(-ll.nats.mean() / (dims * math.log(2))), ll.kind)


def independent_pixel_bpd(train_x: Tensor, test_x: Tensor, levels: int, alpha: float = 1.0) -> float:
    """Bits/dim of the per-pixel independent categorical model fitted to `train_x` (add-alpha counts).

    The baseline every structured model must beat: P(x) = prod_i p_i(x_i), no dependence between pixels.
    """
    n, dims = train_x.shape[0], train_x[0].numel()
    counts = torch.zeros(dims, levels, dtype=torch.float64)
    counts.scatter_add_(1, train_x.reshape(n, dims).T.long(), torch.ones(dims, n, dtype=torch.float64))
    log_p = torch.log((counts + alpha) / (n + alpha * levels))
    ll = log_p.gather(1, test_x.reshape(len(test_x), dims).T.long()).sum(0)
    return float(-ll.mean() / (dims * math.log(2)))
