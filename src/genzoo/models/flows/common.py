"""What RealNVP and Glow share: preprocessing, the multi-scale encode/decode, the dequantized
likelihood bound, sampling with temperature, and the toy-data figures.

Spaces and conventions:
    x    discrete levels (B, C, H, W) in {0, ..., K-1}
    v    dequantized, v = (x + U(0, 1)) / K in [0, 1)^D, D = C*H*W
    u    model space (what `encode` takes): "logit": u = logit(alpha + (1 - 2 alpha) v),
         "centered": u = v - 1/2; any real tensor is a valid u
    z    every latent of every scale, flattened to (B, D), standard normal under the model

log_det is log abs det(dz/du) in the data -> latent direction, (B,); every layer adds its own
(genzoo.nn.flow_layers). The learned priors of Glow's multi-scale splits are written as affine
layers that standardise the factored-out half given the kept half, so z is N(0, I) and
log p(u) = log N(z; 0, I) + log_det (change of variables).

Layout of z: the latents factored out at the first split, flattened in (C, H, W) order, then
those of the second split, ..., then the top latent of the last scale.

Likelihood of discrete data (Theis et al. 2016; Dinh et al. 2017 section 4.1):
    log P(x) >= E_U[log p(v)] - D log K,   log p(v) = log p(u) + log abs det(du/dv)
The density p(v) puts mass only on [0, 1]^D (with the logit map, mass 1 - (mass beyond
logit(alpha)) there), so the bound holds; `log_likelihood` has kind "lower_bound". With
`num_samples` S > 1 it is the tighter importance-weighted bound log mean_s p(v_s) - D log K.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Iterator, Literal

import torch
from torch import Tensor, nn

from ...data.spec import Dataset, DataSpec
from ...data.transforms import dequantize, from_unit, to_unit
from ...errors import GenzooError
from ...functional import float32, standard_normal_log_prob
from ...nn.flow_layers import Split
from ..base import Figure, LikelihoodModel, LogLikelihood
from ..helpers import check_choices, check_temperature, eval_mode

Preprocess = Literal["logit", "centered"]  # logit(alpha + (1 - 2 alpha) v), or v - 1/2
ScaleFn = Literal["tanh", "sigmoid"]


def count_halvings(height: int, width: int) -> int:
    """How many times a squeeze can halve an H x W image (both sides even each time)."""
    n = 0
    while height % 2 == 0 and width % 2 == 0 and height >= 2 and width >= 2:
        height, width, n = height // 2, width // 2, n + 1
    return n


def check_preprocess(config: Any, alpha: float) -> None:
    """The choices of a flow's config (preprocess, scale_fn, ...), alpha in (0, 1/2), num_classes >= 0."""
    check_choices(config)
    if isinstance(config.num_classes, bool) or config.num_classes < 0:
        raise GenzooError(f"num_classes must be at least 0, got {config.num_classes!r}.")
    if not 0 < alpha < 0.5:
        raise GenzooError(f"alpha must be between 0 and 0.5 (exclusive), got {alpha!r}.")


class FlowModel(LikelihoodModel):
    """A multi-scale flow: a sequence of FlowLayers with Splits that factor latents out.

    Subclasses build `self.layers` (an nn.ModuleList of FlowLayer and Split) in __init__ and call
    `self._finish_build(top_shape)` with the shape of the last scale's latent.
    """

    train_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: DataSpec, config: Any) -> None:
        super().__init__(spec, config)
        if spec.dims < 2:
            raise GenzooError(f"a flow needs at least 2 dimensions, got a {spec.channels}x{spec.height}x{spec.width} spec.")
        self.layers = nn.ModuleList()
        self.top_shape: tuple[int, int, int] = spec.shape

    def _finish_build(self, top_shape: tuple[int, int, int]) -> None:
        self.top_shape = top_shape
        sizes = [math.prod(m.out_shape) for m in self.layers if isinstance(m, Split)] + [math.prod(top_shape)]
        assert sum(sizes) == self.spec.dims, f"latents hold {sum(sizes)} values, the data {self.spec.dims}"
        self._z_sizes = sizes
        if self.num_classes:  # the class-conditional base N(mu_y, diag sigma_y^2) of the Glow paper, N(0, I) at first
            self.class_mean = nn.Parameter(torch.zeros(self.num_classes, self.spec.dims))
            self.class_log_std = nn.Parameter(torch.zeros(self.num_classes, self.spec.dims))

    def base_log_prob(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """log p(z), (B,): N(0, I), or given `labels` the class's N(mu_y, diag exp(2 log_sigma_y))."""
        if labels is None:
            return standard_normal_log_prob(z)
        mu, log_std = self.class_mean[labels].to(z.dtype), self.class_log_std[labels].to(z.dtype)
        return standard_normal_log_prob((z - mu) * torch.exp(-log_std)) - log_std.sum(1)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.parameters())).dtype

    def named_flow_layers(self) -> Iterator[tuple[str, nn.Module]]:
        for i, layer in enumerate(self.layers):
            yield f"layers.{i} ({type(layer).__name__})", layer

    # -- preprocessing: v in [0, 1) <-> u -----------------------------------------------------
    def preprocess(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """v in [0, 1]^D -> (u, log abs det(du/dv) of shape (B,))."""
        if self.config.preprocess == "centered":
            return v - 0.5, v.new_zeros(v.shape[0])
        a = self.config.alpha
        y = a + (1 - 2 * a) * v
        u = torch.log(y) - torch.log1p(-y)
        log_det = (math.log(1 - 2 * a) - torch.log(y) - torch.log1p(-y)).flatten(1).sum(1)
        return u, log_det

    def postprocess(self, u: Tensor) -> Tensor:
        """Inverse of `preprocess`: u -> v (clamped to [0, 1])."""
        if self.config.preprocess == "centered":
            return (u + 0.5).clamp(0, 1)
        a = self.config.alpha
        return ((torch.sigmoid(u) - a) / (1 - 2 * a)).clamp(0, 1)

    # -- the flow -----------------------------------------------------------------------------
    def _check_u(self, u: Tensor) -> None:
        if not isinstance(u, Tensor) or u.ndim != 4 or tuple(u.shape[1:]) != self.spec.shape or not u.dtype.is_floating_point:
            got = tuple(u.shape) if isinstance(u, Tensor) else type(u).__name__
            C, H, W = self.spec.shape
            raise GenzooError(f"u must be a real tensor of shape (B, {C}, {H}, {W}), got {got}.")

    def encode(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """u (B, C, H, W) -> (z (B, C*H*W), log_det (B,)) with log_det = log abs det(dz/du)."""
        self._check_u(u)
        return self._encode(u, check=False)

    def _encode(self, u: Tensor, check: bool) -> tuple[Tensor, Tensor]:
        h, log_det, zs = u, u.new_zeros(u.shape[0]), []
        for name, layer in self.named_flow_layers():
            if isinstance(layer, Split):
                h, out = layer(h)
                zs.append(out.flatten(1))
                continue
            h, ld = layer(h)
            if check:
                _check_finite(name, h, ld)
            log_det = log_det + ld
        zs.append(h.flatten(1))
        return torch.cat(zs, dim=1), log_det

    def decode(self, z: Tensor) -> Tensor:
        """z (B, C*H*W) -> u (B, C, H, W), the exact inverse of `encode`."""
        if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[1] != self.spec.dims:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise GenzooError(f"z must have shape (B, {self.spec.dims}), got {got}.")
        pieces = list(z.split(self._z_sizes, dim=1))
        h = pieces.pop().reshape(z.shape[0], *self.top_shape)
        for layer in reversed(self.layers):
            if isinstance(layer, Split):
                h = layer.inverse(h, pieces.pop().reshape(z.shape[0], *layer.out_shape))
            else:
                h = layer.inverse(h)
        return h

    # -- likelihood ---------------------------------------------------------------------------
    @float32
    def _log_density_v(self, v: Tensor, check: bool = False, labels: Tensor | None = None) -> Tensor:
        """log p(v) for v in [0, 1]^D, (B,): log p(z) + log abs det(dz/du) + log abs det(du/dv), p the base
        (given `labels`, the class's). Float32 under mixed precision: the couplings' log-determinants
        are sums over every dimension."""
        u, ld_pre = self.preprocess(v)
        z, log_det = self._encode(u, check)
        return self.base_log_prob(z, labels) + log_det + ld_pre

    def log_likelihood(self, x: Tensor, num_samples: int = 1, generator: torch.Generator | None = None,
                       labels: Tensor | None = None) -> LogLikelihood:
        """Lower bound on log P(x) in nats, (B,): log mean_s p(v_s) - D log K, v_s = (x + U_s) / K."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise GenzooError(f"num_samples must be a positive integer, got {num_samples!r}.")
        B, D, K = x.shape[0], self.spec.dims, self.spec.levels
        labels = self.check_labels(labels, B)
        xs = x.repeat(num_samples, 1, 1, 1)
        v = dequantize(xs, K, generator, dtype=self.dtype)
        log_p = self._log_density_v(v, labels=None if labels is None else labels.repeat(num_samples)).view(num_samples, B)
        nats = torch.logsumexp(log_p, dim=0) - math.log(num_samples) - D * math.log(K)
        return LogLikelihood(nats, "lower_bound")

    def loss(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Negative dequantized bound in nats per dimension, -(log p(v) - D log K) / D, batch mean.

        A non-finite loss raises a GenzooError naming the first layer whose output or log-det is not
        finite (found by running the batch again with a check after every layer, so that a finite
        step pays for one check, not one per layer).
        """
        D, K = self.spec.dims, self.spec.levels
        v = dequantize(x, K, dtype=self.dtype)
        labels = self.check_labels(labels, len(x))
        log_p = self._log_density_v(v, labels=labels)
        loss = -(log_p.mean() - D * math.log(K)) / D
        if not torch.isfinite(loss):
            with torch.no_grad():
                self._log_density_v(v, check=True, labels=labels)
            raise GenzooError("the flow's log-density is not finite although every layer's log-det is; "
                              "the latent z overflowed the prior, try a lower learning rate.")
        return loss

    # -- data-dependent initialisation --------------------------------------------------------
    def prepare(self, train_data: Dataset) -> None:
        """Initialise every actnorm on one large batch of training data (up to 512 images).

        Layers already initialised (a resumed or reloaded model) are left as they are.
        """
        x = train_data.x
        if len(x) == 0:
            return
        with torch.no_grad():
            v = dequantize(x[:512].to(self.device), self.spec.levels, dtype=self.dtype)
            self._encode(self.preprocess(v)[0], check=False)

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0,
               label: int | None = None, labels: Tensor | None = None) -> Tensor:
        """x = floor(K v), v = postprocess(decode(T * eps)), eps ~ N(0, I): temperature T scales every
        latent's standard deviation (Glow, section 5). A class-conditional model draws z = mu_y +
        sigma_y T eps for class `label`, or `labels` (n,), or the classes in turn."""
        temperature = check_temperature(temperature, scales_latent=True)
        labels = self.classes_to_draw(n, label, labels)
        z = torch.randn(n, self.spec.dims, generator=generator, dtype=self.dtype, device=self.device) * temperature
        if labels is not None:
            z = self.class_mean[labels] + torch.exp(self.class_log_std[labels]) * z
        return from_unit(self.postprocess(self.decode(z)), self.spec.levels)

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, steps: int = 8) -> Tensor:
        """Decode z = (1 - t) f(x_a) + t f(x_b) at `steps` evenly spaced t in [0, 1], f the flow at the
        images' bin centres: (B, steps, C, H, W) levels, for pairs x_a, x_b (B, C, H, W)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise GenzooError(f"steps must be an integer of at least 2, got {steps!r}.")
        x_a, x_b = self.check_input(x_a, "x_a"), self.check_input(x_b, "x_b")
        if x_a.shape != x_b.shape:
            raise GenzooError(f"x_a and x_b must have the same shape, got {tuple(x_a.shape)} and {tuple(x_b.shape)}.")
        with eval_mode(self):
            z_a, z_b = (self.encode(self.preprocess(to_unit(x, self.spec.levels).to(self.dtype))[0])[0] for x in (x_a, x_b))
            t = torch.linspace(0, 1, steps, dtype=z_a.dtype, device=z_a.device).view(1, steps, 1)
            z = ((1 - t) * z_a[:, None] + t * z_b[:, None]).flatten(0, 1)
            levels = from_unit(self.postprocess(self.decode(z)), self.spec.levels)
        return levels.view(x_a.shape[0], steps, *self.spec.shape)

    # -- evaluation hooks ---------------------------------------------------------------------
    @torch.no_grad()
    def task_metrics(self, data: Dataset, generator: torch.Generator | None = None,
                     check_inverse: bool = False) -> dict[str, float]:
        """With check_inverse: max |decode(encode(u)) - u| over the data, u from dequantized x."""
        if not check_inverse:
            return {}
        worst = 0.0
        for i in range(0, len(data.x), 256):
            x = data.x[i:i + 256].to(self.device)
            u, _ = self.preprocess(dequantize(x, self.spec.levels, generator, dtype=self.dtype))
            z, _ = self.encode(u)
            worst = max(worst, float((self.decode(z) - u).abs().max()))
        return {"inverse_max_abs_error": worst}

    @torch.no_grad()
    def figures(self, data: Dataset, generator: torch.Generator | None = None, n: int = 2000,
                resolution: int = 200) -> dict[str, Figure]:
        """On 2-D toy data (2x1x1 images): density, n samples beside a heat map of the learned density."""
        if self.spec.shape != (2, 1, 1):
            return {}
        from .toy_figure import density_map

        return {"density": density_map(self, data, n, resolution, generator)}

    def log_density_unit(self, v: Tensor) -> Tensor:
        """log p(v) of points v in [0, 1]^D given as (B, C, H, W), (B,): the density the bound uses."""
        return self._log_density_v(v.to(self.dtype))


def _check_finite(name: str, h: Tensor, log_det: Tensor) -> None:
    if not bool(torch.isfinite(log_det).all()):
        raise GenzooError(f"layer {name} produced a non-finite log-determinant; try a lower learning rate.")
    if not bool(torch.isfinite(h).all()):
        raise GenzooError(f"layer {name} produced a non-finite output; try a lower learning rate.")
