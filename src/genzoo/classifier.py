"""The feature network behind genzoo's sample-quality metrics: a small CNN that genzoo trains itself
on a dataset's labelled training split, once, and keeps on disk with its test accuracy.

Features are the 128 activations before the last linear layer. They play the role that Inception
features play in FID and KID, but they come from this network on this dataset: distances computed
on them are comparable only within genzoo, on the same dataset, never with published FIDs.

The cache lives in $GENZOO_CACHE/classifiers/ (default ~/.cache/genzoo/classifiers/), one folder
per dataset, content hash of its training images and training steps: classifier.safetensors (the
weights, nothing pickled) and classifier.json (the architecture, the recipe and the test accuracy).
$GENZOO_CLASSIFIER_STEPS replaces the recipe's steps (the test suite trains short classifiers).
"""
from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from . import data as datasets
from .checkpoint import atomic_write_json, load_tensors, read_json, refuse_links, save_tensors
from .data.spec import Dataset, DataSpec
from .errors import GenzooError

FEATURES = 128
RECIPE = {"steps": 1500, "batch_size": 128, "lr": 2e-3, "seed": 0}


def recipe() -> dict[str, Any]:
    """RECIPE, with the steps from $GENZOO_CLASSIFIER_STEPS when set."""
    steps = os.environ.get("GENZOO_CLASSIFIER_STEPS")
    if steps is not None and not (steps.isdigit() and int(steps) > 0):
        raise GenzooError(f"GENZOO_CLASSIFIER_STEPS must be a positive integer, got {steps!r}.")
    return {**RECIPE, "steps": int(steps)} if steps else dict(RECIPE)


def cache_dir() -> Path:
    """$GENZOO_CACHE, or ~/.cache/genzoo: where classifiers are kept."""
    return Path(os.environ.get("GENZOO_CACHE") or Path.home() / ".cache" / "genzoo")


class FeatureNet(nn.Module):
    """conv3x3(32) -> conv3x3(64, stride 2) -> conv3x3(128, stride 2) -> mean over space -> linear(128)
    -> ReLU = the features; a linear layer over them gives the class logits. Input: levels scaled
    to [-1, 1]."""

    def __init__(self, spec: DataSpec, num_classes: int) -> None:
        super().__init__()
        self.spec = spec
        self.body = nn.Sequential(
            nn.Conv2d(spec.channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU())
        self.project = nn.Linear(128, FEATURES)
        self.head = nn.Linear(FEATURES, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Levels (B, C, H, W) -> features (B, FEATURES)."""
        u = x.float() * (2.0 / (self.spec.levels - 1)) - 1.0
        return F.relu(self.project(self.body(u).mean(dim=(2, 3))))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def _data_key(train: Dataset) -> str:
    digest = hashlib.sha1(train.x.numpy().tobytes())
    if train.labels is not None:
        digest.update(train.labels.numpy().tobytes())
    return f"{train.name or 'data'}-{digest.hexdigest()[:12]}"


@torch.no_grad()
def accuracy(net: FeatureNet, ds: Dataset, batch_size: int = 512) -> float:
    """Fraction of `ds` whose most probable class is its label."""
    net.eval()
    right = sum(int((net(ds.x[i:i + batch_size]).argmax(1) == ds.labels[i:i + batch_size]).sum())
                for i in range(0, len(ds), batch_size))
    return right / max(len(ds), 1)


@torch.enable_grad()
def train_classifier(train: Dataset, test: Dataset, progress: bool = False) -> tuple[FeatureNet, dict[str, Any]]:
    """A FeatureNet trained with Adam on the labelled `train` split (RECIPE); its record holds the
    accuracy on `test`."""
    from tqdm.auto import tqdm

    rc = recipe()
    if train.labels is None:
        raise GenzooError(f"dataset {train.name!r} has no labels, so genzoo cannot train the classifier whose "
                          f"features the sample-quality metrics use.")
    classes = int(train.labels.max()) + 1
    with torch.random.fork_rng(devices=[]):  # its own seed, leaving the caller's random state as it was
        torch.manual_seed(rc["seed"])
        net = FeatureNet(train.spec, classes)
    opt = torch.optim.Adam(net.parameters(), lr=rc["lr"])
    g = torch.Generator().manual_seed(rc["seed"])
    t0 = time.time()
    net.train()
    for step in tqdm(range(rc["steps"]), desc=f"classifier for {train.name}", disable=not progress,
                     dynamic_ncols=True):
        idx = torch.randint(0, len(train), (rc["batch_size"],), generator=g)
        for group in opt.param_groups:  # cosine decay: a stable end point without a validation split
            group["lr"] = rc["lr"] * 0.5 * (1 + math.cos(math.pi * step / rc["steps"]))
        loss = F.cross_entropy(net(train.x[idx]), train.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    record = {"data": train.name, "spec": train.spec.to_dict(), "classes": classes, "features": FEATURES,
              "recipe": rc, "train_images": len(train), "test_accuracy": accuracy(net, test),
              "test_images": len(test), "train_seconds": time.time() - t0, "torch": torch.__version__}
    return net, record


def load_classifier(name: str, root: str | None = None, progress: bool = False) -> tuple[FeatureNet, dict[str, Any]]:
    """The classifier of dataset `name` and its record, from the cache, or trained once and cached."""
    train = datasets.load(name, "train", root)
    folder = cache_dir() / "classifiers" / f"{_data_key(train)}-s{recipe()['steps']}"
    refuse_links(folder.parent, [folder.name])
    refuse_links(folder, ("classifier.json", "classifier.safetensors"))
    if (folder / "classifier.json").is_file():
        record = read_json(folder / "classifier.json", "classifier record")
        net = FeatureNet(train.spec, int(record["classes"]))
        net.load_state_dict(load_tensors(folder / "classifier.safetensors"))
        return net.eval(), {**record, "path": str(folder)}
    net, record = train_classifier(train, datasets.load(name, "test", root), progress)
    save_tensors(folder / "classifier.safetensors", {k: v.contiguous() for k, v in net.state_dict().items()})
    atomic_write_json(folder / "classifier.json", record)
    return net, {**record, "path": str(folder)}
