"""`genzoo compare` as curves: quality against training compute, across budgets and training seeds,
and the paired differences that say where one model is better than another.

Paired differences. Two models scored on the same test images give per-image bits/dim a_i and b_i;
their difference d_i = b_i - a_i has the standard error sd(d) / sqrt(N), far below the two
independent errors combined when a_i and b_i are correlated (a hard image is hard for both). Across
S training seeds the mean difference is the mean of the per-seed ones, and its error combines the
per-seed paired errors with the spread of the seeds:
    se^2 = (1 / S^2) sum_s se_s^2 + var_s(d_s) / S        (the second term only for S > 1).
A pair is marked "A better than B" only where the difference exceeds twice its error, else
"indistinguishable".
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from torch import Tensor

Row = dict[str, Any]


def paired_difference(a: Tensor, b: Tensor) -> tuple[float, float]:
    """Mean and standard error of b_i - a_i, per-image figures of two models on the same images."""
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired figures need the same images, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    d = b.double() - a.double()
    se = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else math.nan
    return float(d.mean()), se


def combined(differences: list[float], errors: list[float]) -> tuple[float, float, float | None]:
    """The mean over seeds of per-seed differences, its error (module docstring) and the seed spread
    (standard deviation over seeds; None for one seed)."""
    s = len(differences)
    mean = sum(differences) / s
    var = sum(e * e for e in errors) / s ** 2
    spread = None
    if s > 1:
        spread = math.sqrt(sum((d - mean) ** 2 for d in differences) / (s - 1))
        var += spread ** 2 / s
    return mean, math.sqrt(var), spread


def by_budget(rows: list[Row]) -> dict[Any, dict[str, list[Row]]]:
    """Rows with a figure grouped by budget, then by model."""
    out: dict[Any, dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("bits_per_dim") is not None and "error" not in r:
            out[r.get("budget")][r["model"]].append(r)
    return out


def rankings(rows: list[Row]) -> dict[str, list[str]]:
    """At each budget, the models from best to worst by their mean bits/dim over seeds."""
    return {str(budget): sorted(models, key=lambda m: sum(r["bits_per_dim"] for r in models[m]) / len(models[m]))
            for budget, models in by_budget(rows).items()}


def pairs(rows: list[Row], per_image: dict[int, Tensor]) -> list[Row]:
    """For each budget, each adjacent pair (a ranked ahead of b): the mean paired difference of bits/dim
    b - a over seeds with its error and seed spread, and the verdict. `per_image` maps id(row) to the
    row's per-image bits/dim on the test split; a pair whose rows lack them is left out."""
    out = []
    for budget, models in by_budget(rows).items():
        order = rankings([r for m in models.values() for r in m])[str(budget)]
        for a, b in zip(order, order[1:]):
            seeds = sorted({r.get("seed") for r in models[a]} & {r.get("seed") for r in models[b]}, key=str)
            diffs, errs = [], []
            for seed in seeds:
                ra = next(r for r in models[a] if r.get("seed") == seed)
                rb = next(r for r in models[b] if r.get("seed") == seed)
                if id(ra) in per_image and id(rb) in per_image:
                    d, se = paired_difference(per_image[id(ra)], per_image[id(rb)])
                    diffs.append(d)
                    errs.append(se)
            if not diffs:
                continue
            mean, se, spread = combined(diffs, errs)
            verdict = f"{a} better than {b}" if mean > 2 * se else "indistinguishable"
            out.append({"a": a, "b": b, "budget": budget, "seeds": len(diffs), "difference": mean,
                        "difference_se": se, "seed_spread": spread, "verdict": verdict})
    return out
