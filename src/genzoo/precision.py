"""Mixed precision for training: `--precision fp32 | bf16 | fp16 | auto`.

bf16 and fp16 run the forward pass and the loss under torch.autocast; the weights, the optimizer and
the EMA stay in float32, and the numerically delicate parts inside the models (log-likelihood sums,
discretized likelihoods, the diffusion bound's terms, VQ distances, flows' log-determinants) run in
float32 through genzoo.functional.float32. fp16 scales the loss with a torch.amp.GradScaler, which
skips a step whose gradient overflowed and lowers the scale. "auto" is bf16 on a CUDA device that
supports it and fp32 elsewhere; the default, fp32, keeps every figure of a float32 run.
"""
from __future__ import annotations

import contextlib
from typing import Any, Literal

import torch
from torch import Tensor

from .errors import GenzooError

Name = Literal["fp32", "bf16", "fp16", "auto"]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve(name: str, device: torch.device) -> str:
    """The precision `name` stands for on `device` ("auto": bf16 where CUDA supports it, else fp32)."""
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "fp16" and device.type == "cpu":
        raise GenzooError("fp16 mixed precision needs a GPU; use --precision bf16 on the CPU.")
    return name


class Precision:
    """The autocast region and the loss scaling of one training run."""

    def __init__(self, name: str, device: torch.device) -> None:
        self.name = resolve(name, device)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if self.name == "fp16" else None

    @property
    def scaling(self) -> bool:
        return self.scaler is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.name])

    def backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        """Divide the gradients by the loss scale (before clipping them)."""
        if self.scaler:
            self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
