"""Fast (cached) ancestral sampling for PixelCNN and Gated PixelCNN.

Naive sampling runs the whole network once per sub-pixel: O(D) forward passes over D pixels.
With masked convolutions the activations at pixel (i, j) depend only on pixels before it, so once
every channel of (i, j) is drawn they never change again. The cached sampler keeps every layer's
activation map and, at each step, computes only the new pixel's column of activations through
all layers, reading its neighbours (above and to the left) from the caches. For the Gated
PixelCNN the vertical stack is computed one row at a time, once the row is complete.
Ramachandran et al. 2017, "Fast Generation for Convolutional Autoregressive Models".

Within a pixel, channel group g depends only on channels < g of that pixel, so the column
computed for its last channel is final and is what the caches keep. The draws are those of
the plain sampler (one uniform per row of the batch per sub-pixel step, none where every
pixel of the step is given), so cached and naive samples are the same for the same generator.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ...data.transforms import to_centered
from ...nn.causal import gate
from .common import ancestral_sample

# The sampling loop is common.ancestral_sample; these steppers make each of its steps one column.
cached_ancestral_sample = ancestral_sample


class PixelCNNStepper:
    """Column-at-a-time PixelCNN: per layer, the upper half (rows i-p..i) of its kxk window."""

    fills_caches = True

    def __init__(self, model, labels: Tensor | None = None) -> None:
        self.model = model
        self.C, self.K = model.spec.channels, model.spec.levels
        self.bias_in, self.bias_head = model.class_biases(labels)

        def upper(conv) -> tuple[Tensor, Tensor | None, int]:
            k = conv.kernel_size[0]
            return (conv.weight * conv.mask)[:, :, : k // 2 + 1].flatten(1), conv.bias, k

        def one(conv) -> tuple[Tensor, Tensor | None]:
            return (conv.weight * conv.mask).flatten(1), conv.bias

        self.w_in, self.b_in, self.k_in = upper(model.input)
        self.blocks = [(one(b.reduce), upper(b.conv), one(b.expand)) for b in model.blocks]
        self.head, self.out = one(model.head), one(model.out)

    def start(self, x: Tensor) -> None:
        n, _, H, W = x.shape
        p = self.k_in // 2
        self.n = n
        self.inp = F.pad(self.model.features(x), (p, p, p, 0))  # zero rows above, zero columns at the sides
        self.caches = []
        for _, (w, _, k), _ in self.blocks:
            q = k // 2
            self.caches.append(x.new_zeros(n, w.shape[1] // ((q + 1) * k), H + q, W + 2 * q, dtype=self.inp.dtype))

    def begin_row(self, i: int) -> None:
        pass

    def column(self, i: int, j: int) -> Tensor:
        n, k = self.n, self.k_in
        h = F.linear(self.inp[:, :, i: i + k // 2 + 1, j: j + k].reshape(n, -1), self.w_in, self.b_in) + self.bias_in
        for ((w1, b1), (wk, bk, kk), (w2, b2)), cache in zip(self.blocks, self.caches):
            q = kk // 2
            cache[:, :, i + q, j + q] = F.relu(F.linear(F.relu(h), w1, b1))
            a = F.linear(cache[:, :, i: i + q + 1, j: j + kk].reshape(n, -1), wk, bk)
            h = h + F.linear(F.relu(a), w2, b2)
        o = F.linear(F.relu(F.linear(F.relu(h), *self.head) + self.bias_head), *self.out)
        return o.view(n, self.C, self.K).transpose(1, 2)  # (n, K, C)

    def set_level(self, i: int, j: int, c: int, level: Tensor) -> None:
        p = self.k_in // 2
        self.inp[:, c, i + p, j + p] = to_centered(level, self.K, self.inp.dtype)


class GatedPixelCNNStepper:
    """Gated PixelCNN one row of the vertical stack and one column of the horizontal stack at a time."""

    fills_caches = True

    def __init__(self, model, labels: Tensor | None) -> None:
        self.model = model
        self.C, self.K = model.spec.channels, model.spec.levels
        self.layers = list(model.layers)
        self.h_weights = [(layer.h_conv.masked_weight().flatten(1), layer.h_conv.bias) for layer in self.layers]
        self.h_out = [None if layer.h_out is None else (layer.h_out.masked_weight().flatten(1), layer.h_out.bias)
                      for layer in self.layers]
        self.head = ((model.head.weight * model.head.mask).flatten(1), model.head.bias)
        self.out = ((model.out.weight * model.out.mask).flatten(1), model.out.bias)
        self.v_embed = [None if layer.v_embed is None else layer.v_embed(labels) for layer in self.layers]
        self.h_embed = [None if layer.h_embed is None else layer.h_embed(labels) for layer in self.layers]

    def start(self, x: Tensor) -> None:
        n, _, H, W = x.shape
        self.n, self.W = n, W
        p0 = self.layers[0].v_conv.p
        self.inp = F.pad(self.model.features(x), (p0, p0, p0, 0))
        dtype = self.inp.dtype
        hidden = self.model.config.hidden_channels
        # v_in[l], h_in[l]: the inputs of layer l >= 1, padded as its convolutions need.
        self.v_in: list[Tensor | None] = [None]
        self.h_in: list[Tensor | None] = [None]
        for layer in self.layers[1:]:
            p = layer.v_conv.p
            self.v_in.append(x.new_zeros(n, hidden, H + p, W + 2 * p, dtype=dtype))
            self.h_in.append(x.new_zeros(n, hidden, H, W + p, dtype=dtype))
        # links[l][:, :, i]: down_shift(link(v_pre)) of layer l at row i (row 0 stays zero).
        self.links = [x.new_zeros(n, 2 * hidden, H, W, dtype=dtype) for _ in self.layers]

    def begin_row(self, i: int) -> None:
        """Row i - 1 is complete: compute its vertical stack, whose link row i will read."""
        if i == 0:
            return
        r, W = i - 1, self.W
        for l, layer in enumerate(self.layers):
            p = layer.v_conv.p
            src = self.inp if l == 0 else self.v_in[l]
            v_pre = F.conv2d(src[:, :, r: r + p + 1], layer.v_conv.weight, layer.v_conv.bias)  # (n, 2h, 1, W)
            if self.v_embed[l] is not None:
                v_pre = v_pre + self.v_embed[l][:, :, None, None]
            self.links[l][:, :, i] = layer.link(v_pre)[:, :, 0]
            if l + 1 < len(self.layers):
                q = self.layers[l + 1].v_conv.p
                self.v_in[l + 1][:, :, r + q, q: q + W] = gate(v_pre)[:, :, 0]

    def column(self, i: int, j: int) -> Tensor:
        n = self.n
        h = None
        for l, layer in enumerate(self.layers):
            p = layer.h_conv.p
            if l == 0:
                q = layer.v_conv.p  # the input is padded by the first vertical kernel's half-width
                win = self.inp[:, :, i + q, j + q - p: j + q + 1]
            else:
                win = self.h_in[l][:, :, i, j: j + p + 1]
            h_pre = F.linear(win.reshape(n, -1), *self.h_weights[l]) + self.links[l][:, :, i, j]
            if self.h_embed[l] is not None:
                h_pre = h_pre + self.h_embed[l]
            g = gate(h_pre)
            h = g if self.h_out[l] is None else h + F.linear(g, *self.h_out[l])
            if l + 1 < len(self.layers):
                q = self.layers[l + 1].h_conv.p
                self.h_in[l + 1][:, :, i, j + q] = h
        o = F.linear(F.relu(F.linear(F.relu(h), *self.head)), *self.out)
        return o.view(n, self.C, self.K).transpose(1, 2)  # (n, K, C)

    def set_level(self, i: int, j: int, c: int, level: Tensor) -> None:
        q = self.layers[0].v_conv.p
        self.inp[:, c, i + q, j + q] = to_centered(level, self.K, self.inp.dtype)
