"""Inpainting with an exact likelihood: the completion of the unknown sub-pixels of x given the known
ones, for every autoregressive model (PixelCNN, Gated PixelCNN, PixelCNN++).

Where every unknown sub-pixel comes after every known one in the sampling order (raster, then
channel within a pixel), P(unknown | known) factorizes by the product rule into the very
conditionals the model samples from: ancestral sampling with the known pixels given is exact.

For any other mask (a hole in the middle, the top half, random pixels) the model's raster
conditionals ignore the known pixels that come later, so ancestral sampling is not the
conditional. Gibbs sampling is: each sweep visits every unknown sub-pixel i and draws it from its
full conditional P(x_i | x_-i) = P(x) / sum_k P(x with x_i = k), computed exactly from K
likelihood evaluations. Its stationary distribution is the model's exact conditional
P(unknown | known); the sweeps start from the ancestral completion.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import GenzooError
from ..base import LikelihoodModel, LogLikelihood, SampleStats
from ..helpers import check_temperature
from .common import sample_categorical


def raster_suffix(known: Tensor) -> bool:
    """True when, in every image, every unknown sub-pixel comes after every known one in the sampling
    order: rows, then columns, then channels within a pixel."""
    order = known.permute(0, 2, 3, 1).flatten(1)  # (B, H * W * C) in sampling order
    after_an_unknown = (~order).long().cumsum(1) > 0
    return not bool((after_an_unknown & order).any())


@torch.no_grad()
def gibbs_sweeps(log_prob: Callable[[Tensor], Tensor], x: Tensor, known: Tensor, levels: int, sweeps: int,
                 temperature: float, generator: torch.Generator | None,
                 callback: Callable[[dict[str, Any]], None] | None = None) -> tuple[Tensor, int]:
    """`sweeps` Gibbs sweeps over the unknown sub-pixels of x (B, C, H, W), each drawn from
    softmax(log P(x with x_i = k) / temperature) over k; known sub-pixels are never changed.
    `log_prob` maps images (N, C, H, W) to log P (N,). Returns x and the number of network passes."""
    B, C, H, W = x.shape
    x = x.clone()
    candidates = torch.arange(levels, device=x.device)
    sites = [(c, i, j) for i in range(H) for j in range(W) for c in range(C) if not bool(known[:, c, i, j].all())]
    passes = 0
    for sweep in range(sweeps):
        for c, i, j in sites:
            batch = x.unsqueeze(1).repeat(1, levels, 1, 1, 1)  # (B, K, C, H, W): x with x_i = 0, 1, ..., K-1
            batch[:, :, c, i, j] = candidates
            lp = log_prob(batch.flatten(0, 1)).view(B, levels)
            passes += 1
            draw = sample_categorical(lp, temperature, generator)
            x[:, c, i, j] = torch.where(known[:, c, i, j], x[:, c, i, j], draw)
        if callback is not None:
            callback({"step": sweep + 1, "steps": sweeps, "x": x.clone()})
    return x, passes


def inpaint(model: Any, x: Tensor, known: Tensor, generator: torch.Generator | None, labels: Tensor | None,
            temperature: float, sweeps: int, callback: Callable[[dict[str, Any]], None] | None = None) -> Tensor:
    """The completion of x (checked levels) where `known` is False, by an autoregressive `model`:
    exact ancestral sampling for a raster-suffix mask, else Gibbs sweeps started from it. Known
    sub-pixels come back exactly as given. Records the method and its network passes."""
    given = torch.where(known, x, torch.full_like(x, -1))
    extra = {"labels": labels} if model.num_classes > 0 else {}
    start = model.sample(len(x), generator=generator, temperature=temperature, given=given, **extra)
    drawn = int((~known).sum(dim=(1, 2, 3)).max())
    if raster_suffix(known) or drawn == 0:
        model._sample_stats = SampleStats("exact conditional", drawn)
        if callback is not None:
            callback({"step": 1, "steps": 1, "x": start.clone()})
        return torch.where(known, x, start)

    def log_prob(images: Tensor) -> Tensor:
        rep = {k: v.repeat_interleave(len(images) // len(x)) for k, v in extra.items()}
        return model.log_likelihood(images, **rep).nats

    out, passes = gibbs_sweeps(log_prob, start, known, model.spec.levels, sweeps, temperature, generator, callback)
    model._sample_stats = SampleStats(f"gibbs ({sweeps} sweeps)", passes)
    return torch.where(known, x, out)


class AutoregressiveModel(LikelihoodModel):
    """What every autoregressive model offers beyond the contract: inpainting with its exact likelihood.
    A subclass samples with `sample(n, generator, temperature=, given=[, labels=])` and scores with
    `log_likelihood(x[, labels])`."""

    def inpaint(self, x: Tensor, known: Tensor, generator: torch.Generator | None = None,
                labels: Tensor | None = None, temperature: float = 1.0, sweeps: int = 20) -> Tensor:
        """x completed where `known` is False: exactly by ancestral sampling when every unknown
        sub-pixel follows every known one in raster order, else by `sweeps` Gibbs sweeps whose full
        conditionals come from the exact likelihood."""
        if isinstance(sweeps, bool) or not isinstance(sweeps, int) or not 1 <= sweeps <= 10_000:
            raise GenzooError(f"sweeps must be an integer from 1 to 10,000, got {sweeps!r}.")
        return inpaint(self, x, self.check_known(known, x), generator, labels, check_temperature(temperature), sweeps)

    @torch.no_grad()
    def log_likelihood_given(self, x: Tensor, known: Tensor, labels: Tensor | None = None) -> LogLikelihood:
        """Exact log P(unknown sub-pixels of x | known ones) in nats (B,), for a mask where every
        unknown sub-pixel follows every known one in raster order: the sum of the model's
        conditionals at the unknown sub-pixels (the likelihood of a completion no other family gives)."""
        x = self.check_input(x)
        known = self.check_known(known, x)
        if not raster_suffix(known):
            raise GenzooError("the exact conditional likelihood needs every unknown sub-pixel after every known one "
                              "in raster order (a mask such as bottom or the right of the last rows).")
        logits = self.logits(x, labels) if self.num_classes > 0 else self.logits(x)
        per_site = -F.cross_entropy(logits.double(), x, reduction="none")  # (B, C, H, W)
        return LogLikelihood((per_site * ~known).flatten(1).sum(1), "exact")
