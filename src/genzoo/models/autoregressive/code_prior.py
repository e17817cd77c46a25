"""Autoregressive priors over grids of discrete codes, such as the codes of a VQ-VAE.

A grid of codes k (B, h, w) with values in {0, ..., num_codes-1} is a 1 x h x w image with
num_codes levels, so an autoregressive image model is a prior over it:

    p(k) = prod_i p(k_i | k_<i)                      raster order, exact log-likelihood in nats

`PriorConfig` names the family (PixelCNN or Gated PixelCNN) and its sizes; `build_code_prior`
builds that model for a code grid. `ConditionalPixelCNN` is p(k | c), a PixelCNN over codes k
given a second grid of codes c that every position may see in full (the bottom prior of
VQ-VAE-2, conditioned on the top codes; Razavi et al. 2019, section 3.2).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.spec import DataSpec
from ...errors import GenzooError
from ...nn.masked import MaskedConv2d
from ...nn.pointwise import Conv1x1
from ..base import GenerativeModel
from .common import ancestral_sample, categorical_log_prob
from .gated_pixelcnn import GatedPixelCNN
from .pixelcnn import PixelCNN, ResidualBlock

FAMILIES: dict[str, type[GenerativeModel]] = {"pixelcnn": PixelCNN, "gated-pixelcnn": GatedPixelCNN}
_TYPES = {"int": int, "float": float, "str": str}


@dataclass(frozen=True)
class PriorConfig:
    """An autoregressive prior over a grid of codes: its family and sizes (its classes come from the model).

    family: "pixelcnn" or "gated-pixelcnn". Each family takes the fields its own config has and
    ignores the rest: num_blocks is the PixelCNN's number of residual blocks, num_layers the
    Gated PixelCNN's number of gated layers. The defaults are sized for a grid of a few dozen codes,
    far smaller than an image.
    """

    family: str = "pixelcnn"
    hidden_channels: int = 64
    num_blocks: int = 4
    num_layers: int = 6
    first_kernel_size: int = 5
    kernel_size: int = 3
    output_hidden: int = 64
    dropout: float = 0.3

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), _TYPES[str(f.type)]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
            elif not isinstance(value, kind) or isinstance(value, bool):
                raise GenzooError(f"prior field {f.name} must be of type {kind.__name__}, got {value!r}.")
        if self.family not in FAMILIES:
            raise GenzooError(f"prior family must be an autoregressive model over discrete levels, one of "
                              f"{', '.join(FAMILIES)}; got {self.family!r}.")
        self.family_config()  # the family's own checks: positive sizes, odd kernels, dropout range

    @classmethod
    def parse(cls, value: PriorConfig | dict[str, Any] | str) -> PriorConfig:
        """A PriorConfig from itself, from a dict of its fields (as config.json holds it), or from
        that dict as a JSON string (as the command line gives it: '{"hidden_channels": 32}').
        Fields left out keep their defaults."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value) if len(value) < 10_000 else None
            except (ValueError, RecursionError):  # not JSON, a huge integer, or nested without end
                raise GenzooError(f"prior must be a JSON object of prior fields, such as "
                                  f"'{{\"hidden_channels\": 32}}', got {value!r}.") from None
        if not isinstance(value, dict):
            raise GenzooError(f"prior must be a PriorConfig or a dict of its fields, got {type(value).__name__}.")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise GenzooError(f"prior has no field {unknown[0]!r}; its fields are: {', '.join(names)}.")
        return cls(**value)

    def family_config(self) -> Any:
        """The config dataclass of the prior's family, with the fields of this config it has."""
        config_cls = FAMILIES[self.family].Config
        own = {f.name for f in dataclasses.fields(self)}
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(config_cls) if f.name in own}
        try:
            return config_cls(**fields)
        except GenzooError as e:
            raise GenzooError(f"prior {e}") from None


def build_code_prior(config: PriorConfig, grid: tuple[int, int], num_codes: int, num_classes: int = 0) -> GenerativeModel:
    """The prior of `config` over code grids of shape `grid`, as 1 x h x w images with num_codes levels,
    conditioned on `num_classes` classes (0: unconditional)."""
    family = dataclasses.replace(config.family_config(), num_classes=num_classes)
    return FAMILIES[config.family](DataSpec(1, *grid, num_codes), family)


class ConditionalPixelCNN(nn.Module):
    """p(k | c) = prod_i p(k_i | k_<i, c): codes k (B, h, w) in raster order, given codes c (B, h', w').

    Masked convolutions (type A first, then PixelCNN residual blocks of type B) over the embedded
    codes k carry the raster order. The conditioning codes c are embedded, resized to (h, w) with
    nearest neighbours and passed through two unmasked 3x3 convolutions; the result is added after
    the first layer and, through a 1x1 projection, after every block. c is given, so every position
    may see all of it without breaking the order over k.
    """

    def __init__(self, num_codes: int, cond_codes: int, grid: tuple[int, int], hidden: int, num_blocks: int,
                 dropout: float) -> None:
        super().__init__()
        self.num_codes, self.grid = num_codes, grid
        self.embed = nn.Embedding(num_codes, hidden)
        self.input = MaskedConv2d("A", hidden, hidden, 5)
        self.cond_embed = nn.Embedding(cond_codes, hidden)
        self.cond_net = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, hidden, 3, padding=1))
        self.blocks = nn.ModuleList(ResidualBlock(hidden, 3, 1, dropout) for _ in range(num_blocks))
        self.cond_proj = nn.ModuleList(Conv1x1(hidden, hidden) for _ in range(num_blocks))
        self.head = MaskedConv2d("B", hidden, hidden, 1)
        self.out = MaskedConv2d("B", hidden, num_codes, 1)

    def logits(self, k: Tensor, c: Tensor) -> Tensor:
        """Scores (B, num_codes, h, w); entry i depends on k only through k_<i."""
        cond = self.cond_embed(c).permute(0, 3, 1, 2)
        cond = self.cond_net(F.interpolate(cond, size=k.shape[-2:], mode="nearest"))
        h = self.input(self.embed(k).permute(0, 3, 1, 2)) + cond
        for block, proj in zip(self.blocks, self.cond_proj):
            h = block(h) + proj(cond)
        return self.out(F.relu(self.head(F.relu(h))))

    def log_prob(self, k: Tensor, c: Tensor) -> Tensor:
        """log p(k | c) in nats, (B,)."""
        return categorical_log_prob(self.logits(k, c), k)

    @torch.no_grad()
    def sample(self, c: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
        """k ~ p(k | c) ancestrally, (B, h, w)."""
        def logits_fn(x: Tensor, row: int) -> Tensor:
            return self.logits(x[:, 0], c).unsqueeze(2)  # (B, K, 1, h, w)

        return ancestral_sample(logits_fn, c.shape[0], (1, *self.grid), temperature, generator, None, c.device)[:, 0]
