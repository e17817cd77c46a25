"""The optimizer side of training: AdamW with decoupled weight decay on matrices only, the learning
rate schedule (linear warm-up, then cosine decay), and the EMA of the weights. `cfg` is a
genzoo.training.TrainConfig.

The EMA updates the whole parameter list at once (`torch._foreach_lerp_`, bit-identical to the
per-tensor loop). AdamW uses torch's fused kernel wherever torch has one (CPU and CUDA): one pass
over all parameters instead of a dozen small operations per tensor, 4x faster on Glow's 374 tensors
on one CPU thread. It equals the per-tensor update in float64; in float32 it rounds differently
(about one ulp a step).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def lr_at(step: int, cfg: Any) -> float:
    """Linear warm-up to lr over warmup_steps, then cosine decay to lr * min_lr_ratio at `steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(params: list[nn.Parameter], cfg: Any) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and kernels only, not on biases and scales."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), fused=_fused_supported(params) or None)


def _fused_supported(params: list[nn.Parameter]) -> bool:
    """Whether torch has a fused AdamW kernel for these parameters (floating point, one supported device)."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices
    devices = {p.device for p in params}
    return (len(devices) == 1 and all(p.is_floating_point() for p in params)
            and next(iter(devices)).type in _get_fused_kernels_supported_devices())


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """theta_ema <- theta_ema + (1 - decay) (theta - theta_ema) for every parameter; buffers copied."""
    p_ema, p = list(ema.parameters()), [q.detach() for q in model.parameters()]
    if p_ema:
        torch._foreach_lerp_(p_ema, p, 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
