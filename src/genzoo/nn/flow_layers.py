"""Invertible layers for normalizing flows, each with forward, inverse and its log-determinant.

Convention (one for every layer here): `forward` maps data -> latent, x -> y, and returns
(y, log_det) with log_det = log abs det(dy/dx), shape (B,); `inverse` maps y -> x exactly (up to
rounding) and computes no log-determinant. Layers act on images (B, C, H, W); a squeeze changes
the shape but never the number of values. Change of variables: log p(x) = log p(y) + log_det.

    ActNorm                y = (x + b) * exp(log_scale), per channel; data-dependent init
    InvConv1x1             y = W x at every pixel, W a free C x C matrix
    InvConv1x1LU           W = P L (U + diag(sign_s * exp(log_s))), log_det = H W sum(log_s)
    Squeeze                (B, C, H, W) -> (B, 4C, H/2, W/2), log_det = 0
    AffineCoupling         y_id = x_id, y_tr = x_tr * exp(s(x_id)) + t(x_id), checkerboard or channel mask
    GaussianizeSplit       learned conditional prior of a factored-out half as an affine layer
    GaussianizeTop         learned unconditional prior of the top latent as an affine layer
    Split                  factor out channels (multi-scale), no log_det

Dinh et al. 2017, "Density estimation using Real NVP"; Kingma & Dhariwal 2018, "Glow".
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import GenzooError
from .pointwise import Conv1x1, conv1x1, conv2d


class FlowLayer(nn.Module):
    """An invertible map: forward(x) -> (y, log abs det(dy/dx) of shape (B,)), inverse(y) -> x."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ActNorm(FlowLayer):
    """y = (x + b) * exp(log_scale) per channel; log_det = H W sum_c log_scale_c.

    Data-dependent initialisation (Kingma & Dhariwal 2018, section 3.1): on the first batch it
    sees in the forward direction, b and log_scale are set so that y has zero mean and unit
    variance per channel. The `initialized` buffer records it, so a saved model reloads as trained.
    Under torch.compile the layer must already be initialised.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set b = -mean and log_scale = -log std over (B, H, W) of x, per channel."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        self.bias.copy_(-mean)
        if x.numel() // x.shape[1] > 1:  # one value per channel has no spread to normalise
            std = (x - mean).pow(2).mean(dim=(0, 2, 3), keepdim=True).sqrt()
            self.log_scale.copy_(-std.clamp_min(1e-3).log())
        self.initialized.fill_(1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # under torch.compile the test would break the graph at every actnorm: there the layer must
        # already be initialised (FlowModel.prepare initialises every actnorm before training)
        if not torch.compiler.is_compiling() and not bool(self.initialized):
            self.initialize(x.detach())
        y = (x + self.bias) * self.log_scale.exp()
        log_det = (x.shape[2] * x.shape[3]) * self.log_scale.sum()
        return y, log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


def _random_rotation(channels: int) -> Tensor:
    q, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))
    return q.float()


class InvConv1x1(FlowLayer):
    """y = W x at every pixel with W a free invertible C x C matrix; log_det = H W log abs det W.

    Initialised to a random rotation. Kingma & Dhariwal 2018, section 3.2.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(_random_rotation(channels))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        C = x.shape[1]
        y = conv1x1(x, self.weight.view(C, C, 1, 1))
        log_det = (x.shape[2] * x.shape[3]) * torch.linalg.slogdet(self.weight).logabsdet
        return y, log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        C = y.shape[1]
        return conv1x1(y, torch.linalg.inv(self.weight).view(C, C, 1, 1))


class InvConv1x1LU(FlowLayer):
    """W = P L (U + diag(sign_s * exp(log_s))), P a fixed permutation, L unit lower triangular,
    U strictly upper triangular; log_det = H W sum(log_s), O(C) instead of O(C^3).

    Kingma & Dhariwal 2018, section 3.2, "LU decomposition".
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        P, L, U = torch.linalg.lu(_random_rotation(channels).double())
        s = torch.diagonal(U)
        self.register_buffer("perm", P.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter((L * self.lower_mask.double()).float())
        self.upper = nn.Parameter(torch.triu(U, 1).float())
        self.log_s = nn.Parameter(s.abs().log().float())

    @property
    def weight(self) -> Tensor:
        L = self.lower * self.lower_mask + self.eye
        U = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.perm @ L @ U

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        C = x.shape[1]
        y = conv1x1(x, self.weight.view(C, C, 1, 1))
        log_det = (x.shape[2] * x.shape[3]) * self.log_s.sum()
        return y, log_det.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        C = y.shape[1]
        return conv1x1(y, torch.linalg.inv(self.weight).view(C, C, 1, 1))


def squeeze(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch becomes 4 channels (channel c -> 4c..4c+3)."""
    B, C, H, W = x.shape
    x = x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(B, 4 * C, H // 2, W // 2)


def unsqueeze(y: Tensor) -> Tensor:
    """Inverse of `squeeze`: (B, 4C, H, W) -> (B, C, 2H, 2W)."""
    B, C4, H, W = y.shape
    y = y.view(B, C4 // 4, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(B, C4 // 4, 2 * H, 2 * W)


class Squeeze(FlowLayer):
    """Space-to-depth, (B, C, H, W) -> (B, 4C, H/2, W/2); a permutation, so log_det = 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[2] % 2 or x.shape[3] % 2:
            raise GenzooError(f"squeeze needs an even height and width, got {x.shape[2]}x{x.shape[3]}.")
        return squeeze(x), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return unsqueeze(y)


class CouplingNet(nn.Module):
    """The s, t network of a coupling: conv -> residual blocks -> relu -> zero-initialised conv.

    The last convolution starts at zero, so a fresh coupling is the identity (Glow, section 3.3).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, num_blocks: int, kernel_size: int) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.input = conv2d(in_channels, hidden, kernel_size, padding=pad)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), conv2d(hidden, hidden, kernel_size, padding=pad),
                          nn.ReLU(), Conv1x1(hidden, hidden))
            for _ in range(num_blocks)
        )
        self.mid = Conv1x1(hidden, hidden)
        self.output = conv2d(hidden, out_channels, kernel_size, padding=pad)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.input(x)
        for block in self.blocks:
            h = h + block(h)
        h = F.relu(self.mid(F.relu(h)))
        return self.output(h)


def checkerboard(height: int, width: int, parity: int) -> Tensor:
    """(1, 1, H, W) mask, 1 where (i + j + parity) is even: the pixels a coupling leaves unchanged."""
    i = torch.arange(height).view(-1, 1)
    j = torch.arange(width).view(1, -1)
    return ((i + j + parity) % 2 == 0).float().view(1, 1, height, width)


class AffineCoupling(FlowLayer):
    """y_id = x_id, y_tr = x_tr * exp(s(x_id)) + t(x_id); log_det = sum s(x_id).

    The Jacobian is triangular, so its log-determinant is the sum of the scales. Masks (Dinh et
    al. 2017, section 3.4): "checkerboard" keeps the pixels with (i + j + parity) even, "channel"
    keeps the first C//2 channels (parity 0) or the last C - C//2 (parity 1). "squeezed-checkerboard"
    keeps the same pixels as "checkerboard", but its network sees only them, at half resolution:
    each 2x2 patch holds two kept and two changed pixels, so squeeze and take those channels
    (2C in, 2C out); half the pixels in, no mask channel, a quarter of the positions. The scale is bounded
    for stability: "tanh" gives s = scale_c * tanh(raw) with a learned scale_c per channel
    (RealNVP), "sigmoid" gives s = log sigmoid(raw + 2) (Glow).
    """

    def __init__(self, channels: int, height: int, width: int,
                 mask: Literal["checkerboard", "channel", "squeezed-checkerboard"], parity: int, hidden: int,
                 num_blocks: int, scale_fn: Literal["tanh", "sigmoid"] = "tanh") -> None:
        super().__init__()
        if mask not in ("checkerboard", "channel", "squeezed-checkerboard"):
            raise GenzooError(f"coupling mask must be 'checkerboard', 'channel' or 'squeezed-checkerboard', got {mask!r}.")
        if mask == "squeezed-checkerboard" and (height % 2 or width % 2):
            raise GenzooError(f"a squeezed-checkerboard coupling needs an even height and width, got {height}x{width}.")
        if scale_fn not in ("tanh", "sigmoid"):
            raise GenzooError(f"scale_fn must be 'tanh' or 'sigmoid', got {scale_fn!r}.")
        if mask == "checkerboard" and height * width < 2:
            raise GenzooError("a checkerboard coupling needs at least 2 pixels.")
        if mask == "channel" and channels < 2:
            raise GenzooError("a channel coupling needs at least 2 channels.")
        self.mask_type = mask
        self.parity = int(parity) % 2
        self.scale_fn = scale_fn
        kernel_size = 1 if height == 1 and width == 1 else 3
        if mask == "checkerboard":
            self.register_buffer("mask", checkerboard(height, width, self.parity))
            cond, out = channels + 1, channels  # the mask itself is an input channel
        elif mask == "squeezed-checkerboard":
            cond, out = 2 * channels, 2 * channels
            kernel_size = 1 if height == 2 and width == 2 else 3
        else:
            first = channels // 2
            self.sizes = (first, channels - first)
            cond, out = (self.sizes[0], self.sizes[1]) if self.parity == 0 else (self.sizes[1], self.sizes[0])
        self.net = CouplingNet(cond, 2 * out, hidden, num_blocks, kernel_size)
        self.scale = nn.Parameter(torch.ones(1, out, 1, 1)) if scale_fn == "tanh" else None

    def _log_scale(self, raw: Tensor) -> Tensor:
        if self.scale_fn == "tanh":
            return self.scale * torch.tanh(raw)
        return F.logsigmoid(raw + 2.0)

    def _parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.mask_type == "squeezed-checkerboard":
            # squeeze puts pixel (2a + di, 2b + dj) at position 2 di + dj: 0, 3 have i + j even
            B, C, H, W = x.shape
            q = squeeze(x).view(B, C, 4, H // 2, W // 2)
            keep, change = ([0, 3], [1, 2]) if self.parity == 0 else ([1, 2], [0, 3])
            return q[:, :, keep].reshape(B, 2 * C, H // 2, W // 2), q[:, :, change].reshape(B, 2 * C, H // 2, W // 2)
        if self.parity == 0:
            return x[:, : self.sizes[0]], x[:, self.sizes[0]:]
        return x[:, self.sizes[0]:], x[:, : self.sizes[0]]

    def _join(self, x_id: Tensor, x_tr: Tensor) -> Tensor:
        if self.mask_type == "squeezed-checkerboard":
            B, C2, h, w = x_id.shape
            pair = (x_id, x_tr) if self.parity == 0 else (x_tr, x_id)  # positions (0, 3) and (1, 2)
            a, b = (v.view(B, C2 // 2, 2, h, w) for v in pair)
            q = torch.stack([a[:, :, 0], b[:, :, 0], b[:, :, 1], a[:, :, 1]], dim=2)  # (B, C, 4, h, w)
            return unsqueeze(q.view(B, 2 * C2, h, w))
        return torch.cat([x_id, x_tr] if self.parity == 0 else [x_tr, x_id], dim=1)

    def _shift_log_scale(self, x_id: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(x_id)
        raw, t = h[:, 0::2], h[:, 1::2]
        return t, self._log_scale(raw)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.mask_type == "checkerboard":
            m = self.mask
            t, s = self._shift_log_scale(torch.cat([x * m, m.expand(x.shape[0], 1, -1, -1)], dim=1))
            s, t = s * (1 - m), t * (1 - m)
            return x * s.exp() + t, s.sum(dim=(1, 2, 3))
        x_id, x_tr = self._parts(x)
        t, s = self._shift_log_scale(x_id)
        return self._join(x_id, x_tr * s.exp() + t), s.sum(dim=(1, 2, 3))

    def inverse(self, y: Tensor) -> Tensor:
        if self.mask_type == "checkerboard":
            m = self.mask
            t, s = self._shift_log_scale(torch.cat([y * m, m.expand(y.shape[0], 1, -1, -1)], dim=1))
            s, t = s * (1 - m), t * (1 - m)
            return (y - t) * torch.exp(-s)
        y_id, y_tr = self._parts(y)
        t, s = self._shift_log_scale(y_id)
        return self._join(y_id, (y_tr - t) * torch.exp(-s))


def _soft_clamp(v: Tensor, bound: float) -> Tensor:
    return bound * torch.tanh(v / bound)


class GaussianizeSplit(FlowLayer):
    """A learned split prior written as an affine layer: the last channels are standardised by a
    Gaussian whose mean and log-std depend on the kept first `keep` channels.

    p(x_out | x_keep) = N(mu(x_keep), exp(log_sigma(x_keep))^2), and y_out = (x_out - mu) * exp(-log_sigma)
    is N(0, I) under it; log_det = -sum log_sigma. So p(x_keep, x_out) = p(x_keep) N(y_out; 0, I)
    exp(log_det): the conditional density becomes a standard normal latent plus a log-determinant.
    Kingma & Dhariwal 2018, "learned prior" of the multi-scale split (Dinh et al. 2017, section 3.6).
    log_sigma is soft-clamped to (-5, 5) for stability.
    """

    def __init__(self, channels: int, keep: int, hidden: int, height: int, width: int) -> None:
        super().__init__()
        if not 0 < keep < channels:
            raise GenzooError(f"a split must keep between 1 and {channels - 1} channels, got {keep}.")
        self.keep = keep
        kernel_size = 1 if height == 1 and width == 1 else 3
        self.net = CouplingNet(keep, 2 * (channels - keep), hidden, 0, kernel_size)

    def _mu_log_sigma(self, x_keep: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(x_keep)
        return h[:, 0::2], _soft_clamp(h[:, 1::2], 5.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_keep, x_out = x[:, : self.keep], x[:, self.keep:]
        mu, log_sigma = self._mu_log_sigma(x_keep)
        y_out = (x_out - mu) * torch.exp(-log_sigma)
        return torch.cat([x_keep, y_out], dim=1), -log_sigma.sum(dim=(1, 2, 3))

    def inverse(self, y: Tensor) -> Tensor:
        y_keep, y_out = y[:, : self.keep], y[:, self.keep:]
        mu, log_sigma = self._mu_log_sigma(y_keep)
        return torch.cat([y_keep, y_out * log_sigma.exp() + mu], dim=1)


class GaussianizeTop(FlowLayer):
    """A learned diagonal Gaussian prior N(mu, exp(log_sigma)^2) over the top latent (C, H, W),
    written as y = (x - mu) * exp(-log_sigma), log_det = -sum log_sigma. Glow's `learn_top`."""

    def __init__(self, channels: int, height: int, width: int) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(1, channels, height, width))
        self.log_sigma = nn.Parameter(torch.zeros(1, channels, height, width))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = (x - self.mu) * torch.exp(-self.log_sigma)
        return y, (-self.log_sigma.sum()).expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * self.log_sigma.exp() + self.mu


class Split(nn.Module):
    """Multi-scale factoring out: (B, C, H, W) -> kept (B, keep, H, W) and out (B, C - keep, H, W).

    A plain slicing, so it adds nothing to log_det; `out` leaves the flow as latents of this scale
    (Dinh et al. 2017, section 3.6). `out_shape` is the (C - keep, H, W) of the factored-out part.
    """

    def __init__(self, channels: int, keep: int, height: int, width: int) -> None:
        super().__init__()
        if not 0 < keep < channels:
            raise GenzooError(f"a split must keep between 1 and {channels - 1} channels, got {keep}.")
        self.keep = keep
        self.out_shape = (channels - keep, height, width)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, : self.keep], x[:, self.keep:]

    def inverse(self, kept: Tensor, out: Tensor) -> Tensor:
        return torch.cat([kept, out], dim=1)

