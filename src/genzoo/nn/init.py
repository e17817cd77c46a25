"""Data-dependent initialization of convolutions (Salimans & Kingma 2016, "Weight Normalization",
section 3): run one batch through the network and, in the order the convolutions execute, rescale
each one's weights and set its bias so that its output has zero mean and standard deviation 1 (or
a smaller set value) per channel on that batch. Later layers see the already normalized outputs of
earlier ones, so one pass initializes the whole network. Only the initial values change; the
layers stay plain convolutions. The shifted convolutions of nn/causal.py are measured without the
zero row or column their shift brings in.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

# An output channel whose spread on the batch is below this is left unscaled (e.g. a constant
# channel on a one-pixel image): dividing by it would blow its weights up.
MIN_STD = 1e-3


def shifted_out(conv: nn.Module, out: Tensor) -> Tensor:
    """`out` without the zero row (shift_down) or column (shift_right) the convolution's shift adds."""
    if getattr(conv, "shift_down", False):
        out = out[:, :, 1:]
    if getattr(conv, "shift_right", False):
        out = out[..., 1:]
    return out


@torch.no_grad()
def data_dependent_init(module: nn.Module, run: Callable[[], Any], small: Iterable[nn.Module] = (),
                        small_scale: float = 0.1) -> None:
    """Call `run()` (one forward pass of `module` on a batch) with every nn.Conv2d and
    nn.ConvTranspose2d inside `module` normalized on its first call as described above: standard
    deviation 1, or `small_scale` for the modules in `small` (e.g. the last convolution of a
    residual branch, so every block starts close to the identity)."""
    small_ids = {id(m) for m in small}
    handles: dict[int, torch.utils.hooks.RemovableHandle] = {}

    def hook(conv: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
        handles.pop(id(conv)).remove()
        out = shifted_out(conv, out)
        dims = [d for d in range(out.ndim) if d != 1]
        mean = out.mean(dims)
        std = out.std(dims) if out.numel() // out.shape[1] > 1 else torch.zeros_like(mean)
        target = small_scale if id(conv) in small_ids else 1.0
        gain = torch.where(std > MIN_STD, target / std.clamp_min(MIN_STD), torch.ones_like(std))
        out_dim = 1 if isinstance(conv, nn.ConvTranspose2d) else 0
        shape = [1] * conv.weight.ndim
        shape[out_dim] = -1
        conv.weight.mul_(gain.view(shape))
        if conv.bias is not None:
            conv.bias.sub_(mean).mul_(gain)
        return conv(*inputs)  # recomputed, so padding and shifts stay exact

    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            handles[id(m)] = m.register_forward_hook(hook)
    try:
        run()
    finally:
        for h in handles.values():
            h.remove()
