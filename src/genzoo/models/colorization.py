"""Colorization as per-pixel classification: lightness in, a distribution over colour bins out.

Zhang, Isola and Efros 2016, "Colorful Image Colorization". The image is taken to CIE Lab
(sRGB, D65 white); the network sees only the lightness L and predicts, for every pixel
independently, a categorical distribution over Q bins of the (a, b) plane -- one classification
per pixel, trained with cross-entropy, in contrast to an autoregressive model, where each pixel's
distribution is conditioned on the pixels before it.

Conventions:
- RGB level k of K is the sRGB value k / (K-1) in [0, 1]; colorized images are rounded back to levels.
- Lab: L in [0, 100], a and b in about [-110, 110]. sRGB is decoded to linear RGB
  (c <= 0.04045: c / 12.92, else ((c + 0.055) / 1.055)^2.4), taken to XYZ with the sRGB matrix,
  divided by the white XYZ of RGB = (1, 1, 1) (D65: 0.95047, 1, 1.08883), and
      L = 116 f(Y) - 16,  a = 500 (f(X) - f(Y)),  b = 200 (f(Y) - f(Z)),
      f(t) = t^(1/3) for t > (6/29)^3, else t / (3 (6/29)^2) + 4/29.
- Bins: the square grid of `bin_size` (default 10) in (a, b) with centres at multiples of
  `bin_size` in [-110, 110], kept where the centre is in the sRGB gamut for some lightness
  (checked at L = 0.5, 1.5, ..., 99.5); each kept bin records a lightness at which its centre is
  in gamut (the middle of those). bin_size 10 keeps 224 bins (Zhang et al. keep 313 with a looser
  rule: any colour of the bin seen in ImageNet). A colour's bin is the nearest kept centre.
- Class rebalancing (optional, `rebalance`): the loss of a pixel whose true bin is q is weighted
  by w_q proportional to ((1 - lambda) p~_q + lambda / Q)^-1, normalised so that sum_q p~_q w_q = 1,
  p~ the bin frequencies of the training set smoothed by a Gaussian of width `rebalance_sigma` in
  (a, b) (eq. 4, lambda = 0.5, sigma = 5). The weights are fitted in `begin_stage` (or with
  `fit_rebalancing`) and kept in a buffer.
- Decoding: the annealed mean, ab = sum_q softmax(logits / T)_q c_q with T = 0.38 (eq. 5), then
  the lightness of the input and the predicted (a, b) back to RGB. Where that colour is out of
  gamut, the chroma is reduced (ab scaled towards grey, which is in gamut at every L) until it is
  in gamut, so the lightness is kept exactly before rounding to levels.

The loss is the (weighted) cross-entropy in nats per pixel. There is no likelihood of the image.
`sample` needs the images to colorize (`given`); `colorize(x)` is the task method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.spec import Dataset, DataSpec
from ..errors import GenzooError
from ..functional import psnr
from ..nn.pointwise import Conv1x1
from .base import Figure, GenerativeModel, ImageRows
from .helpers import check_positive, check_range, check_temperature, eval_mode

# -- sRGB (D65) <-> CIE Lab ----------------------------------------------------------------------
RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
              (0.2126729, 0.7151522, 0.0721750),
              (0.0193339, 0.1191920, 0.9503041))
DELTA = 6.0 / 29.0
AB_EXTENT = 110.0


def _matrix(x: Tensor, inverse: bool = False) -> Tensor:
    m = torch.tensor(RGB_TO_XYZ, dtype=torch.float64)
    if inverse:
        m = torch.linalg.inv(m)
    return m.to(dtype=x.dtype, device=x.device)


def _apply(m: Tensor, x: Tensor) -> Tensor:
    """Matrix (3, 3) times the channel vector of x (B, 3, ...)."""
    return torch.einsum("ij,bj...->bi...", m, x)


def _white(x: Tensor) -> Tensor:
    """XYZ of RGB = (1, 1, 1), shaped to broadcast against (B, 3, ...)."""
    return _matrix(x).sum(1).view(1, 3, *[1] * (x.ndim - 2))


def srgb_to_linear(c: Tensor) -> Tensor:
    return torch.where(c <= 0.04045, c / 12.92, ((c.clamp_min(0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: Tensor) -> Tensor:
    # The joint 0.04045 / 12.92 (the standard rounds it to 0.0031308) makes this the exact inverse.
    joint = 0.04045 / 12.92
    return torch.where(c <= joint, 12.92 * c, 1.055 * c.clamp_min(joint) ** (1 / 2.4) - 0.055)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1], (B, 3, ...) -> Lab (B, 3, ...): L in [0, 100], a, b about [-110, 110]."""
    xyz = _apply(_matrix(rgb), srgb_to_linear(rgb)) / _white(rgb)
    f = torch.where(xyz > DELTA ** 3, xyz.clamp_min(DELTA ** 3) ** (1 / 3), xyz / (3 * DELTA ** 2) + 4 / 29)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], 1)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Lab (B, 3, ...) -> sRGB (B, 3, ...), not clipped: out-of-gamut colours leave [0, 1]."""
    L, a, b = lab.unbind(1)
    fy = (L + 16) / 116
    f = torch.stack([fy + a / 500, fy, fy - b / 200], 1)
    xyz = torch.where(f > DELTA, f ** 3, 3 * DELTA ** 2 * (f - 4 / 29)) * _white(lab)
    return linear_to_srgb(_apply(_matrix(lab, inverse=True), xyz))


def in_gamut(rgb: Tensor, tol: float = 1e-6) -> Tensor:
    """(B, ...) bool: every channel of (B, 3, ...) within [0, 1] up to `tol`."""
    return ((rgb >= -tol) & (rgb <= 1 + tol)).all(1)


def lab_to_rgb_in_gamut(L: Tensor, ab: Tensor, iterations: int = 30) -> Tensor:
    """sRGB (B, 3, ...) in [0, 1] of lightness L (B, ...) and chroma s * ab (B, 2, ...), with the
    largest s in [0, 1] (bisection) for which the colour is in gamut; s = 0 is grey, always in gamut."""
    def rgb_at(s: Tensor) -> Tensor:
        return lab_to_rgb(torch.cat([L.unsqueeze(1), s.unsqueeze(1) * ab], 1))

    # No tolerance: the result needs no clipping beyond rounding noise, so its lightness is L.
    full = in_gamut(rgb_at(torch.ones_like(L)), tol=0.0)
    lo, hi = torch.zeros_like(L), torch.ones_like(L)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        ok = in_gamut(rgb_at(mid), tol=0.0)
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
    return rgb_at(torch.where(full, torch.ones_like(L), lo)).clamp(0, 1)


def ab_bins(bin_size: float) -> tuple[Tensor, Tensor]:
    """In-gamut bins: centres (Q, 2) in (a, b), float64, and for each a lightness (Q,) at which the
    centre is in gamut (the middle of the in-gamut lightnesses L = 0.5, 1.5, ..., 99.5)."""
    n = int(AB_EXTENT // bin_size)
    axis = torch.arange(-n, n + 1, dtype=torch.float64) * bin_size
    a, b = torch.meshgrid(axis, axis, indexing="ij")
    a, b = a.flatten(), b.flatten()                                       # (G,)
    L = torch.arange(100, dtype=torch.float64) + 0.5                      # (100,)
    lab = torch.stack([L[None].expand(len(a), -1), a[:, None].expand(-1, 100), b[:, None].expand(-1, 100)], 1)
    ok = in_gamut(lab_to_rgb(lab), tol=0.0)                               # (G, 100)
    keep = ok.any(1)
    lightness = torch.stack([L[row].median() for row in ok[keep]])
    return torch.stack([a[keep], b[keep]], 1), lightness


# -- the model -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColorizationConfig:
    """bin_size: width of the (a, b) bins; rebalance: class rebalancing with mix `rebalance_mix`
    (lambda) and smoothing `rebalance_sigma` (Zhang et al. 2016: 0.5 and 5)."""

    hidden_channels: int = 32  # feature maps of the per-pixel classifier
    num_blocks: int = 2  # residual blocks of the classifier
    bin_size: float = 10.0  # width of the (a, b) colour bins
    rebalance: bool = False  # class rebalancing: weight rare colours up (Zhang et al. 2016)
    rebalance_mix: float = 0.5  # lambda, the mix of the empirical and uniform bin distributions
    rebalance_sigma: float = 5.0  # smoothing of the empirical bin distribution

    def __post_init__(self) -> None:
        check_positive(self.hidden_channels, "hidden_channels")
        check_positive(self.num_blocks, "num_blocks")
        check_range(self.bin_size, "bin_size", 2.0, 55.0)
        check_range(self.rebalance_mix, "rebalance_mix", 0.0, 1.0)
        check_positive(self.rebalance_sigma, "rebalance_sigma")


class Block(nn.Module):
    """x + 3x3(relu(3x3(relu(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class Colorization(GenerativeModel):
    """Per-pixel classifier of (a, b) colour bins from lightness, with annealed-mean decoding."""

    name = "colorization"
    Config = ColorizationConfig
    conditional: ClassVar[bool] = True
    loss_unit: ClassVar[str] = "nats per pixel (cross-entropy of the colour bin)"
    # No unconditional samples to draw during or after training: the figures come from `figures`.
    train_defaults: ClassVar[dict[str, Any]] = {"steps": 1500, "batch_size": 64, "lr": 2e-3, "weight_decay": 1e-4,
                                                "sample_every": 0, "grid_size": 0}

    def __init__(self, spec: DataSpec, config: ColorizationConfig) -> None:
        super().__init__(spec, config)
        if spec.channels != 3:
            raise GenzooError(f"colorization needs colour images (3 channels), got {spec.channels} channel(s).")
        centres, lightness = ab_bins(config.bin_size)
        Q, ch = len(centres), config.hidden_channels
        # Derived from the config alone, so not saved.
        self.register_buffer("bin_centres", centres.float(), persistent=False)
        self.register_buffer("bin_lightness", lightness.float(), persistent=False)
        self.register_buffer("bin_weights", torch.ones(Q))
        self.register_buffer("rebalance_fitted", torch.tensor(False))
        self.input = nn.Conv2d(1, ch, 3, padding=1)
        self.full = nn.Sequential(*[Block(ch) for _ in range(config.num_blocks)])
        self.down = nn.Conv2d(ch, 2 * ch, 3, stride=2, padding=1)
        self.coarse = nn.Sequential(*[Block(2 * ch) for _ in range(config.num_blocks)])
        self.context = nn.Linear(2 * ch, 2 * ch)        # image-wide context, added everywhere
        self.up = nn.Conv2d(2 * ch, ch, 3, padding=1)
        self.merge = nn.Sequential(*[Block(ch) for _ in range(config.num_blocks)])
        self.out = Conv1x1(ch, Q)

    @property
    def num_bins(self) -> int:
        return self.bin_centres.shape[0]

    # -- colour space ---------------------------------------------------------------------------
    def to_lab(self, x: Tensor) -> Tensor:
        """RGB levels (B, 3, H, W) -> Lab (B, 3, H, W) in the network's dtype."""
        rgb = x.to(self.input.weight.dtype) / (self.spec.levels - 1)
        return rgb_to_lab(rgb)

    def to_bins(self, ab: Tensor) -> Tensor:
        """Nearest kept bin (B, H, W) int64 of (a, b) values (B, 2, H, W)."""
        c = self.bin_centres.to(ab.dtype)
        flat = ab.permute(0, 2, 3, 1).reshape(-1, 2)
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ c.T + c.pow(2).sum(1)[None]
        return d.argmin(1).view(ab.shape[0], *ab.shape[2:])

    # -- network ----------------------------------------------------------------------------------
    def logits(self, x: Tensor) -> Tensor:
        """Bin scores (B, Q, H, W) from the lightness of RGB levels x (B, 3, H, W); each pixel is one classification."""
        x = self.check_input(x)
        return self._logits(self.to_lab(x)[:, :1])

    def _logits(self, L: Tensor) -> Tensor:
        h = self.full(self.input(L / 50 - 1))
        g = self.coarse(self.down(F.relu(h)))
        g = g + self.context(g.mean((2, 3)))[:, :, None, None]
        h = h + self.up(F.relu(F.interpolate(g, size=h.shape[-2:], mode="nearest")))
        return self.out(F.relu(self.merge(h)))

    def loss(self, x: Tensor) -> Tensor:
        """Cross-entropy of the true bins, nats per pixel, weighted by the rebalancing weights if on."""
        lab = self.to_lab(x)
        target = self.to_bins(lab[:, 1:])
        ce = F.cross_entropy(self._logits(lab[:, :1]), target, reduction="none")
        if self.config.rebalance:
            if not bool(self.rebalance_fitted):
                raise GenzooError("class rebalancing needs the training set's bin frequencies: call "
                                  "fit_rebalancing(train.x) first (the trainer does so in prepare).")
            ce = ce * self.bin_weights[target].to(ce.dtype)
        return ce.mean()

    # -- class rebalancing ----------------------------------------------------------------------------
    def prepare(self, train_data: Dataset) -> None:
        """Fit the rebalancing weights to the training set's bin frequencies (when rebalancing)."""
        if self.config.rebalance:
            self.fit_rebalancing(train_data.x)

    @torch.no_grad()
    def bin_frequencies(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Fraction of the pixels of RGB levels x (N, 3, H, W) in each bin, (Q,) float64."""
        x = self.check_input(x)
        counts = torch.zeros(self.num_bins, dtype=torch.float64)
        for i in range(0, len(x), batch_size):
            bins = self.to_bins(self.to_lab(x[i:i + batch_size].to(self.device))[:, 1:])
            counts += torch.bincount(bins.flatten().cpu(), minlength=self.num_bins).double()
        return counts / counts.sum()

    @torch.no_grad()
    def fit_rebalancing(self, x: Tensor) -> Tensor:
        """Set and return w_q = ((1 - lambda) p~_q + lambda / Q)^-1, normalised to sum_q p~_q w_q = 1."""
        p = self.bin_frequencies(x)
        c = self.bin_centres.double().cpu()
        kernel = torch.exp(-torch.cdist(c, c).pow(2) / (2 * self.config.rebalance_sigma ** 2))
        p_smooth = kernel @ p
        p_smooth = p_smooth / p_smooth.sum()
        lam, Q = self.config.rebalance_mix, self.num_bins
        w = 1.0 / ((1 - lam) * p_smooth + lam / Q)
        w = w / (p_smooth * w).sum()
        self.bin_weights.copy_(w.to(self.bin_weights))
        self.rebalance_fitted.fill_(True)
        return w

    # -- decoding ---------------------------------------------------------------------------------------
    def predict_ab(self, x: Tensor, temperature: float = 0.38) -> Tensor:
        """Annealed mean (a, b) (B, 2, H, W): sum_q softmax(logits / T)_q c_q (Zhang et al. 2016, eq. 5)."""
        T = check_temperature(temperature)
        probs = torch.softmax(self.logits(x) / T, dim=1)
        return torch.einsum("bqhw,qc->bchw", probs, self.bin_centres.to(probs.dtype))

    @torch.no_grad()
    def colorize(self, x: Tensor, temperature: float = 0.38) -> Tensor:
        """RGB levels (B, 3, H, W) of the lightness of x and the predicted colours (chroma reduced
        where out of gamut, so the lightness is kept up to rounding to levels)."""
        with eval_mode(self):
            L = self.to_lab(x)[:, 0]
            rgb = lab_to_rgb_in_gamut(L, self.predict_ab(x, temperature))
            return (rgb * (self.spec.levels - 1)).round().long()

    @torch.no_grad()
    def grey(self, x: Tensor) -> Tensor:
        """RGB levels of the lightness of x alone (a = b = 0): what the network sees."""
        x = self.check_input(x)
        L = self.to_lab(x)[:, 0]
        rgb = lab_to_rgb_in_gamut(L, torch.zeros_like(L).unsqueeze(1).expand(-1, 2, -1, -1))
        return (rgb * (self.spec.levels - 1)).round().long()

    def sample(self, n: int, generator: torch.Generator | None = None, given: Tensor | None = None,
               temperature: float = 0.38) -> Tensor:
        """Colorize `given` (n, 3, H, W) RGB levels (only their lightness is used).

        Colorization is conditional: it has no distribution over images to draw from unconditionally.
        """
        if given is None:
            raise GenzooError("colorization is conditional: call colorize(x), or pass the images to colorize as given.")
        given = self.check_input(given, "given")
        if len(given) != n:
            raise GenzooError(f"given must hold {n} images, got {len(given)}.")
        return self.colorize(given.to(self.device), temperature)

    # -- metrics and figures ------------------------------------------------------------------------------
    @torch.no_grad()
    def task_metrics(self, data: Dataset, generator: torch.Generator | None = None, temperature: float = 0.38,
                     batch_size: int = 256) -> dict[str, float]:
        """Per-pixel accuracy of the most probable bin, PSNR (dB, peak K-1) of the colorized images
        against the true ones, and for reference the PSNR of the grey images (a = b = 0) and the
        accuracy of always answering the most frequent bin of `data`."""
        with eval_mode(self):
            correct, total, colour, grey = 0, 0, [], []
            counts = torch.zeros(self.num_bins, dtype=torch.float64)
            for i in range(0, len(data.x), batch_size):
                x = data.x[i:i + batch_size].to(self.device)
                target = self.to_bins(self.to_lab(x)[:, 1:])
                correct += int((self.logits(x).argmax(1) == target).sum())
                total += target.numel()
                counts += torch.bincount(target.flatten().cpu(), minlength=self.num_bins).double()
                colour.append(psnr(self.colorize(x, temperature), x, self.spec.levels).cpu())
                grey.append(psnr(self.grey(x), x, self.spec.levels).cpu())
        return {"accuracy": correct / total, "psnr": float(torch.cat(colour).mean()),
                "psnr_grey": float(torch.cat(grey).mean()), "accuracy_most_frequent_bin": float(counts.max() / total)}

    def figures(self, data: Dataset, generator: torch.Generator | None = None,
                n: int = 16, temperature: float = 0.38) -> dict[str, Figure]:
        """colorization: rows of grey inputs, colorized images and the true images, n random images of `data`."""
        device = generator.device if generator is not None else None
        idx = torch.randperm(len(data.x), generator=generator, device=device)[:n].cpu()
        x = data.x[idx].to(self.device)
        rows = [self.grey(x).cpu(), self.colorize(x, temperature).cpu(), x.cpu()]
        return {"colorization": ImageRows(tuple(rows), ("grey input", "colorized", "true colour"))}
