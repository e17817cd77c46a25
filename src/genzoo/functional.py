"""Shared math: equations used by more than one family or by evaluation, each once, beside its source.

A bottom module: it imports only torch, so models, evaluation and benchmarks may all use it.
Conventions: log-densities in nats; images as levels k in {0, ..., K-1}.
"""
from __future__ import annotations

import torch
from torch import Tensor


def psnr(x_hat: Tensor, x: Tensor, levels: int) -> Tensor:
    """Peak signal-to-noise ratio per image in dB, with the peak at K-1 levels: 10 log10((K-1)^2 / MSE)."""
    err = (x_hat.double() - x.double()).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10 * torch.log10((levels - 1) ** 2 / err)
