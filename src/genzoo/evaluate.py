"""Evaluation shared by every family: bits per dimension (with its kind and standard error), task
metrics, and the one path that evaluates a trained model for `genzoo train`, `genzoo eval` and
`genzoo compare`.

Bits/dim are computed here and nowhere else: -nats / (C*H*W * ln 2), averaged over images.
Their standard error is over images, sd(per-image bits/dim) / sqrt(N): the uncertainty of the
test-set mean as an estimate of the mean over the data distribution. A Monte-Carlo likelihood
(IWAE, Hutchinson traces, strided diffusion bounds, dequantization draws) gives each image one
random draw, so that error already contains the estimator's noise; `evaluate` also reports the
estimator's own share (`estimator_se`) from a second, independent draw on a subset of images.
"""
from __future__ import annotations

import math
import time
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from . import distributed
from .data.spec import Dataset
from .errors import GenzooError
from .functional import psnr  # noqa: F401  (re-exported: genzoo.evaluate.psnr)
from .models.base import GenerativeModel, Kind, LogLikelihood


class BitsPerDim(NamedTuple):
    """Mean -log2 P(x) / (C*H*W) over images, whether it comes from an exact likelihood or a bound,
    and its standard error over images (see the module docstring)."""

    value: float
    kind: Kind
    se: float = math.nan


def to_bits_per_dim(nats: Tensor, dims: int) -> float:
    """-nats / (dims * ln 2) averaged over images: log-likelihoods (B,) in nats to bits per dimension."""
    return float(-nats.double().mean() / (dims * math.log(2)))


def bits_per_dim_se(nats: Tensor, dims: int) -> float:
    """Standard error over images of to_bits_per_dim: sd(-nats / (dims ln 2)) / sqrt(N) (nan for N < 2)."""
    if nats.numel() < 2:
        return math.nan
    return float((nats.double() / (dims * math.log(2))).std() / math.sqrt(nats.numel()))


@torch.no_grad()
def log_likelihood_batched(model: GenerativeModel, x: Tensor, batch_size: int = 256, labels: Tensor | None = None,
                           objective: Literal["log_likelihood", "validation"] = "log_likelihood",
                           progress: bool = False, **options: Any) -> LogLikelihood:
    """model.log_likelihood (or model.validation_nats) over `x` in batches; nats (N,) float64 on the CPU.
    `labels` go to class-conditional models (num_classes > 0); `progress` shows a bar over batches."""
    if not isinstance(model, GenerativeModel):
        raise GenzooError(f"model must be a genzoo model (genzoo.create or genzoo.load), got {type(model).__name__}.")
    if not model.has_likelihood:
        raise GenzooError(f"model {model.name!r} has no likelihood.")
    x = model.spec.check(x, "x")  # the one check of images (numpy arrays and any integer dtype are converted)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise GenzooError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if labels is not None and (not isinstance(labels, Tensor) or labels.shape != (len(x),)):
        raise GenzooError(f"labels must be a tensor of {len(x)} class indices, one per image.")
    fn = model.log_likelihood if objective == "log_likelihood" else model.validation_nats
    if model.num_classes > 0 and labels is None:
        raise GenzooError(f"model {model.name!r} is conditioned on classes; the data must have labels.")
    device = model.device
    parts, kind = [], None
    from tqdm.auto import tqdm

    starts = range(0, len(x), batch_size)
    for i in tqdm(starts, desc=f"{model.name} {objective.replace('_', '-')}", unit="batch", disable=not progress,
                  dynamic_ncols=True):
        if model.num_classes > 0:
            options["labels"] = labels[i:i + batch_size].to(device)
        ll = fn(x[i:i + batch_size].to(device), **options)
        parts.append(ll.nats.detach().double().cpu())
        kind = ll.kind
    return LogLikelihood(torch.cat(parts), kind or "exact")


def bits_per_dim(model: GenerativeModel, x: Tensor, batch_size: int = 256, labels: Tensor | None = None,
                 **options: Any) -> BitsPerDim:
    """Bits per dimension, -nats / (C*H*W * ln 2) averaged over images, with the likelihood's kind and
    its standard error over images."""
    ll = log_likelihood_batched(model, x, batch_size, labels, **options)
    return BitsPerDim(to_bits_per_dim(ll.nats, model.spec.dims), ll.kind, bits_per_dim_se(ll.nats, model.spec.dims))


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


@torch.no_grad()
def validate(model: GenerativeModel, data: Dataset, batch_size: int) -> tuple[str, float, str]:
    """("val_bpd", bits/dim of `validation_nats`, kind) for models with a likelihood, else
    ("val_loss", the mean loss, ""). Under data parallelism each rank evaluates its shard and every
    rank gets the value of the whole set."""
    part = data.x[distributed.shard(len(data))]
    labels = None if data.labels is None else data.labels[distributed.shard(len(data))]
    if model.has_likelihood:
        ll = (log_likelihood_batched(model, part, batch_size, labels, objective="validation") if len(part)
              else None)
        parts = [p for p in distributed.gather(ll and (ll.nats, ll.kind)) if p is not None]
        return "val_bpd", to_bits_per_dim(torch.cat([n for n, _ in parts]), data.spec.dims), parts[0][1]
    loss = mean_loss(model, Dataset(part, data.spec, labels), batch_size) if len(part) else 0.0
    totals = distributed.gather((loss * len(part), len(part)))
    return "val_loss", sum(t for t, _ in totals) / max(1, sum(n for _, n in totals)), ""


ESTIMATES = {
    "log_likelihood": "the model's log-likelihood (or its bound) as log_likelihood computes it",
    "validation": "the model's validation objective (validation_nats), a cheaper estimate of its "
                  "log-likelihood or bound whose random draws are inside the standard error, not the bias of a "
                  "coarser computation (fewer ODE steps); `genzoo eval` computes the full figure",
}


def evaluate(model: GenerativeModel, data: Dataset, batch_size: int = 256, seed: int = 0,
             likelihood_options: dict[str, Any] | None = None,
             metric_options: dict[str, Any] | None = None,
             objective: Literal["log_likelihood", "validation"] = "log_likelihood",
             progress: bool = False, estimator_images: int = 100, per_image: bool = False) -> dict[str, Any]:
    """The evaluation of a trained model on `data`, seeded so that Monte-Carlo estimates repeat.

    Models with a likelihood: `bits_per_dim` with its `kind`, `bits_per_dim_se` (over images),
    `estimate` (what the figure is: ESTIMATES[objective]), `likelihood_seconds`, and, for a
    random estimate, `estimator_se`: the Monte-Carlo error of the mean, sqrt(var(d) / 2 / N), d the
    per-image difference between two independent draws on the first `estimator_images` images
    (0 when the figure does not depend on the seed). With `per_image`, also `per_image_bits`: the
    figure of each image (a tensor, for paired differences). Then the model's task metrics.
    """
    if data.spec != model.spec:
        raise GenzooError(f"dataset {data.name!r} has spec {data.spec} but the model was trained for {model.spec}.")
    likelihood_options = likelihood_options or {}
    if objective == "validation" and model.validation_is_likelihood:
        objective = "log_likelihood"  # the model's validation objective is its log-likelihood
    report: dict[str, Any] = {}
    torch.manual_seed(seed)
    if model.has_likelihood:
        dims = data.spec.dims
        t0 = time.perf_counter()
        ll = log_likelihood_batched(model, data.x, batch_size, data.labels, objective, progress, **likelihood_options)
        seconds = time.perf_counter() - t0
        report.update({"bits_per_dim": to_bits_per_dim(ll.nats, dims), "kind": ll.kind,
                       "bits_per_dim_se": bits_per_dim_se(ll.nats, dims), "estimate": ESTIMATES[objective],
                       "images": len(data.x), "likelihood_seconds": seconds, **likelihood_options})
        if per_image:
            report["per_image_bits"] = (-ll.nats.double() / (dims * math.log(2))).cpu()
        m = min(estimator_images, len(data.x))
        if ll.kind != "exact" and m >= 2 and objective == "log_likelihood":
            torch.manual_seed(seed + 1)
            labels = data.labels[:m] if data.labels is not None else None
            again = log_likelihood_batched(model, data.x[:m], batch_size, labels, objective, **likelihood_options)
            d = (again.nats - ll.nats[:m]) / (dims * math.log(2))
            report["estimator_se"] = float(d.var() / 2 / len(data.x)) ** 0.5
        if model.num_classes > 0 and data.labels is not None and objective == "log_likelihood":
            report.update(generative_classifier(model, data, batch_size, seed, **likelihood_options))
    g = torch.Generator(device=model.device).manual_seed(seed)
    with torch.no_grad():
        report.update(model.task_metrics(data, g, **(metric_options or {})))
    return report


def class_log_posterior(model: GenerativeModel, x: Tensor, batch_size: int = 256, seed: int = 0,
                        **options: Any) -> tuple[Tensor, Tensor, Kind]:
    """The generative classifier of a class-conditional likelihood model, by Bayes' rule with a uniform
    prior p(y) = 1 / num_classes: log p(y | x) (N, num_classes) = log p(x | y) + log p(y) - log p(x),
    and the marginal log p(x) = logsumexp_y (log p(x | y) + log p(y)) (N,), in nats, with the kind of
    the likelihood. Each class's likelihood is computed with the same random numbers (seed), so a
    Monte-Carlo estimate compares the classes on equal draws. Where log p(x | y) is a lower bound, so
    is the marginal, and the classifier is that of the bounds."""
    if not model.has_likelihood or model.num_classes < 1:
        raise GenzooError(f"model {model.name!r} is not a class-conditional likelihood model (num_classes > 0).")
    x = model.spec.check(x, "x")
    columns, kind = [], "exact"
    for y in range(model.num_classes):
        torch.manual_seed(seed)
        ll = log_likelihood_batched(model, x, batch_size, torch.full((len(x),), y, dtype=torch.long), **options)
        columns.append(ll.nats)
        kind = ll.kind
    joint = torch.stack(columns, 1) - math.log(model.num_classes)
    marginal = torch.logsumexp(joint, 1)
    return joint - marginal[:, None], marginal, kind


def generative_classifier(model: GenerativeModel, data: Dataset, batch_size: int = 256, seed: int = 0,
                          **options: Any) -> dict[str, Any]:
    """`generative_accuracy` (argmax_y p(y | x) against the labels) and `marginal_bits_per_dim` (with its
    standard error over images) of p(x) = sum_y p(x | y) p(y), and `generative_kind` ("exact", or
    "lower_bound": the classifier of the bounds, and a bound on the marginal)."""
    posterior, marginal, kind = class_log_posterior(model, data.x, batch_size, seed, **options)
    accuracy = float((posterior.argmax(1) == data.labels.to(posterior.device)).double().mean())
    return {"generative_accuracy": accuracy, "marginal_bits_per_dim": to_bits_per_dim(marginal, data.spec.dims),
            "marginal_bits_per_dim_se": bits_per_dim_se(marginal, data.spec.dims), "generative_kind": kind}


def describe_bits_per_dim(report: dict[str, Any]) -> str:
    """The figure in one plain sentence's words: value, its error, its kind and what it estimates."""
    kind = "exact" if report["kind"] == "exact" else "a lower bound"
    if report["estimate"] != ESTIMATES["log_likelihood"]:
        kind += ", by the model's quicker validation estimate of it, which genzoo eval computes in full"
    mc = f", Monte-Carlo error {report['estimator_se']:.4f}" if "estimator_se" in report else ""
    return (f"{report['bits_per_dim']:.4f} +- {report['bits_per_dim_se']:.4f} ({kind}; standard error over "
            f"{report['images']} images{mc})")


def independent_pixel_bpd(train_x: Tensor, test_x: Tensor, levels: int, alpha: float = 1.0) -> BitsPerDim:
    """Bits/dim of `test_x` under the per-pixel independent categorical model fitted to `train_x`
    (add-alpha counts), exact, with its standard error over test images.

    The baseline every structured model must beat: P(x) = prod_i p_i(x_i), no dependence between pixels.
    """
    n, dims = train_x.shape[0], train_x[0].numel()
    counts = torch.zeros(dims, levels, dtype=torch.float64)
    counts.scatter_add_(1, train_x.reshape(n, dims).T.long(), torch.ones(dims, n, dtype=torch.float64))
    log_p = torch.log((counts + alpha) / (n + alpha * levels))
    ll = log_p.gather(1, test_x.reshape(len(test_x), dims).T.long()).sum(0)
    return BitsPerDim(to_bits_per_dim(ll, dims), "exact", bits_per_dim_se(ll, dims))
