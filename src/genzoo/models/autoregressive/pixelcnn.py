"""PixelCNN: masked convolutions, a K-way softmax per sub-pixel, an exact likelihood.

P(x) = prod_i P(x_i | x_<i), the sub-pixels x_i in raster order and, within a pixel, R then G
then B. Masks of type A (first layer) and B (later layers) carry that order; residual blocks of
1x1 -> 3x3 -> 1x1 masked convolutions. van den Oord et al. 2016, "Pixel Recurrent Neural
Networks", sections 3.4-3.5. log_likelihood is exact, in nats; loss is its negative mean per
dimension.

With num_classes = N > 0 the model is class-conditional, P(x | y): a learned vector of the class is
added to every position after the first layer and before the output layers (the conditional PixelCNN's
h + V^T y, van den Oord et al. 2016b, eq. 4, at two layers), so loss and log_likelihood take labels.

Stacked masked convolutions leave a blind spot above and to the right of each pixel (van den
Oord et al. 2016b, fixed by the gated PixelCNN's two stacks). The default first kernel (15 x 15)
spans every row above on images up to 8 pixels wide, so on the 8x8 digits there is none.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data.spec import DataSpec
from ...data.transforms import to_centered
from ...errors import GenzooError
from ...functional import widen
from ...nn.masked import MaskedConv2d
from ..base import LogLikelihood
from ..helpers import Callback, check_positive, check_range, check_temperature, eval_mode
from .cached import PixelCNNStepper, cached_ancestral_sample
from .common import ancestral_sample, categorical_log_prob, check_given, check_group_widths
from .inpaint import AutoregressiveModel


@dataclass(frozen=True)
class PixelCNNConfig:
    """Features are split into one contiguous group per image channel (R, G, B), as evenly as the
    widths allow; hidden_channels and output_hidden must be at least the number of channels."""

    hidden_channels: int = 96  # feature maps of every masked layer
    num_blocks: int = 6  # residual blocks of masked 1x1 -> kxk -> 1x1 convolutions (type B)
    first_kernel_size: int = 15  # kernel of the first, type A masked convolution (odd)
    kernel_size: int = 3  # kernel of the blocks' masked convolutions (odd)
    output_hidden: int = 128  # width of the 1x1 output layers before the K-way softmax
    dropout: float = 0.3  # dropout probability inside each residual block
    added_fields: ClassVar[tuple[str, ...]] = ("num_classes",)  # runs saved before it load with its default
    num_classes: int = 0  # 0 for an unconditional model, else the number of class labels it is conditioned on

    def __post_init__(self) -> None:
        for name in ("hidden_channels", "num_blocks", "first_kernel_size", "kernel_size", "output_hidden"):
            check_positive(getattr(self, name), name)
        for name in ("first_kernel_size", "kernel_size"):
            if getattr(self, name) % 2 == 0:
                raise GenzooError(f"{name} must be odd, got {getattr(self, name)}.")
        check_range(self.dropout, "dropout", 0.0, 0.99)
        check_positive(self.num_classes, "num_classes", allow_zero=True)


class ResidualBlock(nn.Module):
    """x + 1x1(relu(kxk_B(relu(1x1(relu(x)))))), every conv masked type B."""

    def __init__(self, channels: int, kernel_size: int, groups: int, dropout: float) -> None:
        super().__init__()
        half = max(groups, (channels // 2) // groups * groups)
        self.reduce = MaskedConv2d("B", channels, half, 1, groups)
        self.conv = MaskedConv2d("B", half, half, kernel_size, groups)
        self.expand = MaskedConv2d("B", half, channels, 1, groups)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.reduce(F.relu(x))
        h = self.conv(F.relu(h))
        h = self.expand(self.dropout(F.relu(h)))
        return x + h


class PixelCNN(AutoregressiveModel):
    """Autoregressive model of discrete images with masked convolutions."""

    name = "pixelcnn"
    Config = PixelCNNConfig
    # Digits overfit after about 1000 steps: dropout, weight decay and validation selection.
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 1200, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.05,
                                                "eval_every": 100}

    def __init__(self, spec: DataSpec, config: PixelCNNConfig) -> None:
        super().__init__(spec, config)
        C, K = spec.channels, spec.levels
        check_group_widths(config.hidden_channels, config.output_hidden, C)
        # Input: the C data channels in groups 0..C-1, plus a constant channel (group -1) that
        # marks the image inside the zero padding.
        in_groups = torch.cat([torch.arange(C), torch.tensor([-1])])
        self.input = MaskedConv2d("A", C + 1, config.hidden_channels, config.first_kernel_size, C, in_groups)
        self.blocks = nn.ModuleList(
            ResidualBlock(config.hidden_channels, config.kernel_size, C, config.dropout) for _ in range(config.num_blocks)
        )
        self.head = MaskedConv2d("B", config.hidden_channels, config.output_hidden, 1, C)
        self.out = MaskedConv2d("B", config.output_hidden, C * K, 1, C)
        classes = config.num_classes
        self.class_in = nn.Embedding(classes, config.hidden_channels) if classes else None
        self.class_head = nn.Embedding(classes, config.output_hidden) if classes else None
        for embed in (self.class_in, self.class_head):
            if embed is not None:
                nn.init.zeros_(embed.weight)  # the conditional model starts as the unconditional one

    def class_biases(self, labels: Tensor | None) -> tuple[Tensor | int, Tensor | int]:
        """The class vectors (n, hidden_channels) and (n, output_hidden) added after the first layer and
        the head; 0 for an unconditional model."""
        if labels is None or self.class_in is None or self.class_head is None:
            return 0, 0
        return self.class_in(labels), self.class_head(labels)

    def features(self, x: Tensor) -> Tensor:
        """Levels (int or float) (B, C, H, W) -> network input (B, C+1, H, W) in [-1, 1] plus ones."""
        dtype = self.input.weight.dtype
        v = to_centered(x, self.spec.levels, dtype)
        return torch.cat([v, torch.ones_like(v[:, :1])], dim=1)

    def logits(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Per-sub-pixel class scores (B, K, C, H, W); entry i depends only on sub-pixels before i
        (and on the labels (B,) of a class-conditional model)."""
        if not x.dtype.is_floating_point:
            x = self.check_input(x)
        elif x.ndim != 4 or tuple(x.shape[1:]) != self.spec.shape:
            raise GenzooError(f"x must have shape (B, {self.spec.channels}, {self.spec.height}, {self.spec.width}), "
                              f"got {tuple(x.shape)}.")
        return self._logits(x, self.check_labels(labels, x.shape[0]))

    def _logits(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """logits() without input checks, for any height (sampling feeds the first rows only)."""
        bias_in, bias_head = self.class_biases(labels)
        h = self.input(self.features(x)) + as_map(bias_in)
        for block in self.blocks:
            h = block(h)
        h = self.out(F.relu(self.head(F.relu(h)) + as_map(bias_head)))
        B, _, H, W = h.shape
        C, K = self.spec.channels, self.spec.levels
        return h.view(B, C, K, H, W).transpose(1, 2)  # (B, K, C, H, W)

    def log_likelihood(self, x: Tensor, labels: Tensor | None = None) -> LogLikelihood:
        """Exact log P(x) (or log P(x | labels)) in nats, (B,)."""
        return LogLikelihood(categorical_log_prob(self.logits(x, labels), x), "exact")

    def loss(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Negative log-likelihood in nats per dimension (mean cross-entropy over sub-pixels)."""
        return F.cross_entropy(widen(self.logits(x, labels)), x)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0,
               cache: bool = True, given: Tensor | None = None, label: int | None = None,
               labels: Tensor | None = None, callback: Callback | None = None) -> Tensor:
        """Exact ancestral sampling from softmax(logits / temperature), sub-pixel by sub-pixel.

        `given` (n, C, H, W) holds known levels and -1 where unknown: known pixels are kept, the
        rest drawn in raster order given every pixel before them. A class-conditional model draws
        class `label`, or `labels` (n,), or the classes 0, 1, ... in turn. With `cache`, each step computes
        only the new pixel's column of activations, reading earlier ones from per-layer caches
        (Ramachandran et al. 2017); the samples are the same as without.
        """
        temperature = check_temperature(temperature)
        given = check_given(given, n, self.spec.shape, self.spec.levels)
        labels = self.classes_to_draw(n, label, labels)
        with eval_mode(self):
            if cache:
                return cached_ancestral_sample(PixelCNNStepper(self, labels), n, self.spec.shape, temperature, generator,
                                               given, self.device, callback)
            return ancestral_sample(lambda x, row: self._logits(x, labels), n, self.spec.shape, temperature, generator,
                                    given, self.device, callback)


def as_map(bias: Tensor | int) -> Tensor | int:
    """A per-image vector (n, F) as a constant feature map (n, F, 1, 1); 0 stays 0."""
    return bias if isinstance(bias, int) else bias[:, :, None, None]
