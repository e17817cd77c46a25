"""Data-parallel training over the processes that PyTorch's launcher starts:

    torchrun --nproc_per_node=N [--nnodes=M ...] -m genzoo train MODEL ...

The process group comes from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK; MASTER_ADDR and
MASTER_PORT), with NCCL on CUDA and gloo on the CPU. Conventions the trainer keeps:

- `--batch-size` is the global batch. Every rank draws the same global batch indices (the data
  order generator is seeded by --seed on every rank) and takes its contiguous 1/N slice, so the
  union of the slices is the single-process batch. Each rank's loss is the mean over its slice and
  DistributedDataParallel averages the gradients, so the gradient is that of the global batch.
- Rank r's global torch RNG (dropout, noise) is seeded with seed + r: rank 0 draws what a single
  process draws. The resumable state records every rank's RNG state; a resume with the same world
  size continues exactly, and a rank with no recorded state is seeded with seed + r + step.
- Models that keep statistics of their training batches (VQ codebooks, code moments) gather the
  global batch with `gather_rows`.
- Rank 0 alone writes the run directory. Validation is sharded and gathered, so every rank sees
  the same value and makes the same best-weights decision; the weights of rank 0 are broadcast
  when a stage begins (after `prepare` and `begin_stage`) and when it ends.
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .errors import GenzooError


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when it does not)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise GenzooError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}.") from None


def env_rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def init_from_env(device: torch.device) -> torch.device:
    """Join torchrun's process group once (when WORLD_SIZE > 1); return this rank's device
    (cuda:LOCAL_RANK for a CUDA device)."""
    if env_world_size() == 1 and not active():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not active():
        if "MASTER_ADDR" not in os.environ:
            raise GenzooError("WORLD_SIZE is set but MASTER_ADDR is not; start distributed training with torchrun.")
        backend = "nccl" if device.type == "cuda" else "gloo"
        store = _attempt_store()
        if store is None:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=store, rank=env_rank(), world_size=env_world_size())
    return device


def _attempt_store() -> dist.Store | None:
    """Under torchrun's restarts (--max-restarts), the rendezvous store of this attempt alone.

    torchrun keeps one store across the attempts of a job; the process group's keys (each rank's
    address) written by an attempt that was killed stay there, and a restarted rank that reads one
    of them before it is overwritten waits on a dead address. Keys under a prefix per attempt
    (TORCHELASTIC_RESTART_COUNT) cannot be stale. None outside torchelastic: torch's own env://."""
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None:
        return None
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env_world_size(),
                          is_master=env_rank() == 0 and not agent_hosts, wait_for_workers=False)
    return dist.PrefixStore(f"genzoo/attempt{restart}", store)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def is_main() -> bool:
    return rank_and_world()[0] == 0


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int) -> slice:
    """This rank's contiguous part of n items: [r n / N, (r + 1) n / N)."""
    rank, world = rank_and_world()
    return slice(rank * n // world, (rank + 1) * n // world)


def gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if not active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_rows(t: Tensor) -> Tensor:
    """The rows of `t` (the same shape on every rank) from every rank, in rank order: what a model
    that keeps statistics of its training batches sees of the global batch."""
    if not active():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def mean(value: Tensor) -> Tensor:
    """The mean of a scalar over ranks (a copy)."""
    value = value.detach().clone()
    if active():
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def any_rank(flag: bool) -> bool:
    return any(gather(bool(flag)))


def broadcast_module(module: nn.Module) -> None:
    """Every rank takes rank 0's parameters and buffers."""
    if active():
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, 0)


class _Loss(nn.Module):
    """The model's `loss` as a forward, which DistributedDataParallel wraps."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **batch: Tensor) -> Tensor:
        return self.model.loss(**batch)


def wrap(model: nn.Module) -> nn.Module | None:
    """The model's loss in DistributedDataParallel (which averages gradients over ranks and starts from
    rank 0's weights), or None in a single process. The loss reaches every parameter of a one-stage
    model (the contract); a stage of a multi-stage model leaves the others' parameters without a
    gradient, hence find_unused_parameters there."""
    if not active():
        return None
    broadcast_module(model)
    device_ids = [model.device.index] if model.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(_Loss(model), device_ids=device_ids,
                                                   find_unused_parameters=len(model.stages) > 1)


def rng_states(rng: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """`rng` (rank 0's states) with every other rank's torch and CUDA states as "torch.rank{r}"."""
    mine = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    out = dict(rng)
    for r, states in enumerate(gather(mine)):
        if r > 0:
            out.update({f"{k}.rank{r}": v for k, v in states.items()})
    return out


def rank_rng(rng: dict[str, Tensor], seed: int, step: int) -> dict[str, Tensor]:
    """This rank's view of the recorded RNG states (rank 0's are the plain names); a rank the state
    does not record is seeded with seed + rank + step."""
    rank = rank_and_world()[0]
    if rank == 0:
        return rng
    if f"torch.rank{rank}" not in rng:
        torch.manual_seed(seed + rank + step)
        return {"data": rng["data"], "torch": torch.get_rng_state()}
    return {"data": rng["data"], **{k.split(".")[0]: v for k, v in rng.items() if k.endswith(f".rank{rank}")}}
