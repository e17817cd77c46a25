"""Evaluation shared by every family: bits per dimension (with its kind), task metrics, and the
one path that evaluates a trained model for `genzoo train`, `genzoo eval` and `genzoo compare`.

Bits/dim are computed here and nowhere else: -nats / (C*H*W * ln 2), averaged over images.
"""
from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from .data.spec import Dataset
from .errors import GenzooError
from .functional import psnr  # noqa: F401  (re-exported: genzoo.evaluate.psnr)
from .models.base import GenerativeModel, Kind, LogLikelihood


class BitsPerDim(NamedTuple):
    """Mean -log2 P(x) / (C*H*W) over images, and whether it comes from an exact likelihood or a bound."""

    value: float
    kind: Kind


def to_bits_per_dim(nats: Tensor, dims: int) -> float:
    """-nats / (dims * ln 2) averaged over images: log-likelihoods (B,) in nats to bits per dimension."""
    return float(-nats.double().mean() / (dims * math.log(2)))


@torch.no_grad()
def log_likelihood_batched(model: GenerativeModel, x: Tensor, batch_size: int = 256, labels: Tensor | None = None,
                           objective: Literal["log_likelihood", "validation"] = "log_likelihood",
                           **options: Any) -> LogLikelihood:
    """model.log_likelihood (or model.validation_nats) over `x` in batches; nats (N,) float64 on the CPU.
    `labels` go to class-conditional models (num_classes > 0)."""
    if not model.has_likelihood:
        raise GenzooError(f"model {model.name!r} has no likelihood.")
    fn = model.log_likelihood if objective == "log_likelihood" else model.validation_nats
    if model.num_classes > 0 and labels is None:
        raise GenzooError(f"model {model.name!r} is conditioned on classes; the data must have labels.")
    device = model.device
    parts, kind = [], None
    for i in range(0, len(x), batch_size):
        if model.num_classes > 0:
            options["labels"] = labels[i:i + batch_size].to(device)
        ll = fn(x[i:i + batch_size].to(device), **options)
        parts.append(ll.nats.detach().double().cpu())
        kind = ll.kind
    return LogLikelihood(torch.cat(parts), kind or "exact")


def bits_per_dim(model: GenerativeModel, x: Tensor, batch_size: int = 256, labels: Tensor | None = None,
                 **options: Any) -> BitsPerDim:
    """Bits per dimension, -nats / (C*H*W * ln 2) averaged over images, with the likelihood's kind."""
    ll = log_likelihood_batched(model, x, batch_size, labels, **options)
    return BitsPerDim(to_bits_per_dim(ll.nats, x[0].numel()), ll.kind)


@torch.no_grad()
def mean_loss(model: GenerativeModel, data: Dataset, batch_size: int = 256) -> float:
    """model.loss averaged over the images of `data` (batches weighted by their size), in `loss_unit`."""
    total, count = 0.0, 0
    for i in range(0, len(data.x), batch_size):
        xb = data.x[i:i + batch_size].to(model.device)
        extra = {"labels": data.labels[i:i + batch_size].to(model.device)} if model.num_classes > 0 else {}
        total += float(model.loss(xb, **extra)) * len(xb)
        count += len(xb)
    return total / max(count, 1)


def evaluate(model: GenerativeModel, data: Dataset, batch_size: int = 256, seed: int = 0,
             likelihood_options: dict[str, Any] | None = None,
             metric_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The evaluation of a trained model on `data`: bits/dim with its kind (models with a likelihood)
    and the model's task metrics, seeded so that Monte-Carlo estimates repeat."""
    if data.spec != model.spec:
        raise GenzooError(f"dataset {data.name!r} has spec {data.spec} but the model was trained for {model.spec}.")
    likelihood_options = likelihood_options or {}
    report: dict[str, Any] = {}
    torch.manual_seed(seed)
    if model.has_likelihood:
        bpd = bits_per_dim(model, data.x, batch_size, labels=data.labels, **likelihood_options)
        report.update({"bits_per_dim": bpd.value, "kind": bpd.kind, **likelihood_options})
    g = torch.Generator(device=model.device).manual_seed(seed)
    with torch.no_grad():
        report.update(model.task_metrics(data, g, **(metric_options or {})))
    return report


def independent_pixel_bpd(train_x: Tensor, test_x: Tensor, levels: int, alpha: float = 1.0) -> float:
    """Bits/dim of the per-pixel independent categorical model fitted to `train_x` (add-alpha counts).

    The baseline every structured model must beat: P(x) = prod_i p_i(x_i), no dependence between pixels.
    """
    n, dims = train_x.shape[0], train_x[0].numel()
    counts = torch.zeros(dims, levels, dtype=torch.float64)
    counts.scatter_add_(1, train_x.reshape(n, dims).T.long(), torch.ones(dims, n, dtype=torch.float64))
    log_p = torch.log((counts + alpha) / (n + alpha * levels))
    ll = log_p.gather(1, test_x.reshape(len(test_x), dims).T.long()).sum(0)
    return to_bits_per_dim(ll, dims)
