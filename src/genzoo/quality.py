"""Sample quality, offline: Frechet distance, kernel distance (KID) and precision/recall between
samples and reference images, on the features of genzoo's own classifier (genzoo.classifier), or on
the points themselves for 2-D toy data.

These are not Inception FIDs: the features come from a small CNN that genzoo trains on the
dataset, so the figures are comparable only within genzoo, on the same dataset and about the same
number of samples (the Frechet distance is biased upwards for small sample counts).

    genzoo.sample_quality(samples, reference, data="digits")
    -> {"fd", "kid", "kid_se", "precision", "recall", "samples", "reference", "features", ...}
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .errors import GenzooError

NOTE = ("Sample-quality metrics use the features of genzoo's own classifier trained on this dataset "
        "(the points themselves for 2-D data): they are not Inception FIDs and are comparable only within genzoo.")


def _sqrtm_psd(a: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix, by eigendecomposition."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def frechet_distance(f1: Tensor, f2: Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N1, D), (N2, D):

        d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).
    Dowson & Landau 1982; used on Inception features as FID by Heusel et al. 2017, eq. 6.
    (Tr (S1 S2)^1/2 is computed as Tr (S1^1/2 S2 S1^1/2)^1/2, which is symmetric.)
    """
    f1, f2 = f1.double(), f2.double()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = torch.atleast_2d(torch.cov(f1.T)), torch.atleast_2d(torch.cov(f2.T))
    r1 = _sqrtm_psd(s1)
    cross = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp_min(0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * cross)


def kernel_distance(f1: Tensor, f2: Tensor, subsets: int = 10, subset_size: int = 1000,
                    generator: torch.Generator | None = None) -> tuple[float, float]:
    """Unbiased MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets, and the
    standard error of that average: (KID, its standard error). Binkowski et al. 2018, eq. 4 and
    section 4 ("KID"). subset_size is capped at half the smaller set, so that the subsets differ and
    their spread says something (with subsets as large as the sets, every subset is the whole set)."""
    f1, f2 = f1.double(), f2.double()
    d = f1.shape[1]
    smaller = min(len(f1), len(f2))
    m = min(subset_size, smaller // 2) if smaller >= 4 else smaller
    if m < 2:
        raise GenzooError("the kernel distance needs at least 2 samples in each set.")
    values = []
    for _ in range(subsets):
        a = f1[torch.randperm(len(f1), generator=generator)[:m]]
        b = f2[torch.randperm(len(f2), generator=generator)[:m]]
        kaa, kbb, kab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
        off = m * (m - 1)
        values.append((kaa.sum() - kaa.trace()) / off + (kbb.sum() - kbb.trace()) / off - 2 * kab.mean())
    v = torch.stack(values)
    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return float(v.mean()), se


def _knn_radius(f: Tensor, k: int) -> Tensor:
    """Distance from each row of f to its k-th nearest other row."""
    dist = torch.cdist(f, f)
    return dist.kthvalue(k + 1, dim=1).values  # the 1st is the row itself, at 0


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall, Kynkaanniemi et al. 2019, eq. 1-3: a set's manifold is the union
    of balls around its points of radius the distance to the k-th nearest neighbour; precision is
    the fraction of `fake` inside the manifold of `real`, recall the fraction of `real` inside the
    manifold of `fake`."""
    real, fake = real.double(), fake.double()
    if min(len(real), len(fake)) <= k:
        raise GenzooError(f"precision and recall need more than k = {k} samples in each set.")
    r_real, r_fake = _knn_radius(real, k), _knn_radius(fake, k)
    d = torch.cdist(fake, real)  # (n_fake, n_real)
    precision = (d <= r_real[None, :]).any(1).double().mean()
    recall = (d.T <= r_fake[None, :]).any(1).double().mean()
    return float(precision), float(recall)


def metrics(fake: Tensor, real: Tensor, seed: int = 0, k: int = 3) -> dict[str, Any]:
    """Frechet distance, KID (with its standard error over subsets), precision and recall of two
    feature sets (n, D); counts included."""
    fake, real = fake.double(), real.double()
    kid, kid_se = kernel_distance(fake, real, generator=torch.Generator().manual_seed(seed))
    precision, recall = precision_recall(real, fake, k)
    return {"fd": frechet_distance(fake, real), "kid": kid, "kid_se": kid_se, "precision": precision,
            "recall": recall, "samples": len(fake), "reference": len(real), "k": k}


def is_points(spec: Any) -> bool:
    """2-D toy data (2 x 1 x 1 'images'): the metrics use the points themselves."""
    return spec.channels == 2 and spec.height == 1 and spec.width == 1


@torch.no_grad()
def features(x: Tensor, data: str, root: str | None = None, progress: bool = False) -> tuple[Tensor, dict[str, Any]]:
    """Features of levels `x` for dataset `data` and a description of them: the classifier's
    (trained once per dataset and cached), or the points as level coordinates for 2-D data."""
    from . import data as datasets
    from .classifier import load_classifier

    if tuple(x.shape[1:]) == (2, 1, 1) and is_points(datasets.load(data, "test", root).spec):
        return x.reshape(len(x), 2).double(), {"features": "points (2-D levels)"}
    net, record = load_classifier(data, root, progress)
    spec = net.spec
    if tuple(x.shape[1:]) != spec.shape:
        raise GenzooError(f"samples of shape {tuple(x.shape[1:])} do not match dataset {data!r} of shape {spec.shape}.")
    f = torch.cat([net.features(x[i:i + 512].cpu()) for i in range(0, len(x), 512)])
    return f.double(), {"features": f"genzoo classifier ({record['features']} features, test accuracy "
                                    f"{record['test_accuracy']:.4f})", "classifier_accuracy": record["test_accuracy"],
                        "classifier": record["path"]}


def sample_quality(samples: Tensor, reference: Tensor, data: str, root: str | None = None, seed: int = 0,
                   k: int = 3, progress: bool = False) -> dict[str, Any]:
    """Frechet distance `fd`, `kid` (and `kid_se`), `precision` and `recall` of `samples` against
    `reference`, both levels (N, C, H, W) of dataset `data`, on genzoo's classifier features (2-D
    data: the points). Lower fd and kid are better; precision and recall lie in [0, 1], higher is
    better. The dict also states the sample counts and the features used."""
    for what, t in (("samples", samples), ("reference", reference)):
        if t.ndim != 4 or t.dtype.is_floating_point:
            raise GenzooError(f"{what} must be integer levels of shape (N, C, H, W), got {t.dtype} of shape {tuple(t.shape)}.")
    fake, described = features(samples, data, root, progress)
    real, _ = features(reference, data, root, progress)
    return {**metrics(fake, real, seed, k), **described, "note": NOTE}
