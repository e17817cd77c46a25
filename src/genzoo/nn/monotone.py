"""A network of one variable that rises strictly for any value of its parameters, with its derivative
in closed form: the shape of a learned noise schedule.

    h(t)  = a t + (1/n) sum_j c_j tanh(u_j / 2),              u_j = w_j (2t - 1) + d_j
    h'(t) = a   + (1/n) sum_j c_j w_j (1 - tanh(u_j / 2)^2)
with a, w_j, c_j > 0 (the softplus of free parameters), so that h' > 0 everywhere. This is the
monotone network of Kingma et al. 2021 ("Variational Diffusion Models", appendix H: a linear layer,
then n sigmoid units between two layers of positive weights; 2 (sigmoid(u) - 1/2) = tanh(u / 2)).
`shape` normalises it to s(t) = (h(t) - h(0)) / (h(1) - h(0)), rising from s(0) = 0 to s(1) = 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y > 0."""
    return y + math.log(-math.expm1(-y))


class MonotoneNet(nn.Module):
    """h(t) = a t + (1/n) sum_j c_j tanh((w_j (2t - 1) + d_j) / 2) and its derivative h'(t), with a,
    w_j, c_j > 0 (softplus of free parameters): strictly rising for any parameters; t of any shape,
    n = `hidden` units. At initialisation a = 1 and the units together add a gentle curve."""

    def __init__(self, hidden: int = 1024) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(inverse_softplus(1.0)))
        self.w = nn.Parameter(torch.randn(hidden))
        self.d = nn.Parameter(torch.randn(hidden))
        self.c = nn.Parameter(torch.randn(hidden))

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(h(t), h'(t)), each of t's shape."""
        a, w, c = F.softplus(self.a), F.softplus(self.w), F.softplus(self.c)
        u = (2 * t.unsqueeze(-1) - 1) * w + self.d
        th = torch.tanh(u / 2)
        n = self.w.numel()
        return a * t + (th * c).sum(-1) / n, a + (c * w * (1 - th * th)).sum(-1) / n

    def shape(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(s(t), s'(t)): h normalised to rise from 0 at t = 0 to 1 at t = 1."""
        h, dh = self(t)
        ends, _ = self(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        scale = ends[1] - ends[0]
        return (h - ends[0]) / scale, dh / scale
