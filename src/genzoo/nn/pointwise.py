"""1x1 convolutions computed as matrix products on the CPU.

A 1x1 convolution is a matrix product at every pixel: y[b, :, p] = W x[b, :, p] + bias. On one CPU
thread torch's convolution kernel runs these at a fraction of its speed on 3x3 kernels (22 to 52
GFLOP/s forward and backward on the digits models' shapes), while the same product as a batched
matrix multiply runs 1.3 to 2.6x faster: `baddbmm` over the batch, or for 4 pixels or fewer one
`linear` over every pixel. Same weights, same layout (NCHW), the same numbers up to float rounding
(equal in float64). Inputs in channels_last order (NHWC in memory) are one `linear` over all pixels,
with the output in channels_last order too. CUDA tensors keep torch's convolution.

Every 1x1 convolution in genzoo is one. In a whole training step (one thread, digits, alternating
rounds; benchmarks/speed.py, `pointwise_speedup`) PixelCNN gains 7 to 11%, Gated PixelCNN 1 to
13%, Glow 8 to 14%, RealNVP 1 to 2%; the U-Net and PixelCNN++ stay within 1%, the batch-summed
weight gradient cancelling the faster product.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.conv2d(x, weight, bias) for a (O, I, 1, 1) weight, stride 1, no padding."""
    if x.device.type != "cpu" or x.ndim != 4:
        return F.conv2d(x, weight, bias)
    B, I, H, W = x.shape
    O = weight.shape[0]
    w = weight.reshape(O, I)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # NHWC in memory: one product over all B H W pixels, the output NHWC as well
        return F.linear(x.permute(0, 2, 3, 1), w, bias).permute(0, 3, 1, 2)
    x = x.contiguous()  # a slice of channels, say
    if H * W <= 4:  # few pixels: one product over all of them
        y = F.linear(x.view(B, I, H * W).transpose(1, 2), w, bias)
        return y.transpose(1, 2).reshape(B, O, H, W)
    wb = w.unsqueeze(0).expand(B, O, I)
    xb = x.view(B, I, H * W)
    y = torch.bmm(wb, xb) if bias is None else torch.baddbmm(bias.view(1, O, 1), wb, xb)
    return y.view(B, O, H, W)


class Conv1x1(nn.Conv2d):
    """nn.Conv2d(in_channels, out_channels, 1) (the same parameters and initialisation) computed by `conv1x1`."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return conv1x1(x, self.weight, self.bias)


def conv2d(in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> nn.Conv2d:
    """nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding), as a Conv1x1 when it is one."""
    if kernel_size == 1 and padding == 0:
        return Conv1x1(in_channels, out_channels)
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)


@torch.no_grad()
def to_channels_last(model: nn.Module) -> None:
    """Convolution kernels larger than 1x1 (and 4-D buffers, such as their masks) in channels_last
    order, and so the activations they make. Tensors whose two last sizes are 1 are the same in
    either order but for the strides of those sizes, which their gradients do not keep: they stay as
    they are, as DistributedDataParallel's gradient buckets expect."""
    for t in (*model.parameters(), *model.buffers()):
        if t.ndim == 4 and t.shape[2] * t.shape[3] > 1:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
