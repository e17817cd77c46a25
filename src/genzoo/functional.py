"""Shared math: equations used by more than one family or by evaluation, each once, beside its source.

A bottom module: it imports only torch and the level map of `genzoo.data.transforms`, so models,
evaluation and benchmarks may all use it.
Conventions: log-densities in nats; images as levels k in {0, ..., K-1}, centred at
v_k = 2k/(K-1) - 1 in [-1, 1] where a model works in continuous space.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.transforms import to_centered

F_ = TypeVar("F_", bound=Callable[..., Any])
HALF = (torch.float16, torch.bfloat16)


def widen(x: Tensor) -> Tensor:
    """`x` in float32 when it is in half precision (bf16, fp16); any other dtype unchanged."""
    return x.float() if x.dtype in HALF else x


def float32(fn: F_) -> F_:
    """`fn` with autocast off and its half-precision tensor arguments in float32: the numerically
    delicate parts of a model (log-likelihood sums, log-determinants, distances) under mixed precision.
    Float64 arguments stay float64."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        args = tuple(widen(a) if isinstance(a, Tensor) else a for a in args)
        kwargs = {k: widen(v) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)), None)
        with torch.autocast(first.device.type if first is not None else "cpu", enabled=False):
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]


def psnr(x_hat: Tensor, x: Tensor, levels: int) -> Tensor:
    """Peak signal-to-noise ratio per image in dB, with the peak at K-1 levels: 10 log10((K-1)^2 / MSE)."""
    err = (x_hat.double() - x.double()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10((levels - 1) ** 2 / err)


@float32
def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) = -(|z|^2 + D log(2 pi)) / 2, summed over every dimension but the first.

    (B, ...) -> (B,), with D the number of values per row.
    """
    return -0.5 * (z.flatten(1).pow(2).sum(1) + z[0].numel() * math.log(2 * math.pi))


@float32
def discretized_logistic_log_prob(k: Tensor, mean: Tensor, log_scale: Tensor, levels: int) -> Tensor:
    """log P(k) of levels k under Logistic(mean, s = exp(log_scale)) discretized on [-1, 1], elementwise.

    Level k has centre v = 2k/(K-1) - 1 and bin [v - d, v + d], d = 1/(K-1); level 0 takes
    (-inf, v + d] and level K-1 takes [v - d, inf), so the K probabilities sum to one:

        P(k) = sigma((v + d - mean) / s) - sigma((v - d - mean) / s)     0 < k < K-1
        P(0) = sigma((v + d - mean) / s),   P(K-1) = 1 - sigma((v - d - mean) / s)

    Salimans et al. 2017, "PixelCNN++", eq. 2. `k`, `mean` and `log_scale` broadcast; `mean` is in
    [-1, 1] space. Computed stably in both tails: with a = (v + d - mean)/s, b = (v - d - mean)/s
    and a - b = 2d/s, log(sigma(a) - sigma(b)) = log sigma(a) + log sigma(-b) + log(1 - exp(-(a - b))).
    """
    d = 1.0 / (levels - 1)
    v = to_centered(k, levels, dtype=mean.dtype)
    inv_s = torch.exp(-log_scale)
    a = (v + d - mean) * inv_s
    b = (v - d - mean) * inv_s
    low, high = k == 0, k == levels - 1
    zero = torch.zeros((), dtype=mean.dtype, device=mean.device)
    width = torch.log(-torch.expm1(-2.0 * d * inv_s))
    return (torch.where(high, zero, F.logsigmoid(a)) + torch.where(low, zero, F.logsigmoid(-b))
            + torch.where(low | high, zero, width))
