"""A training run's directory: the best weights, the resumable state, metrics and sample grids.

    config.json, model.safetensors   the best EMA weights so far (loadable by genzoo.load);
                                     config.json also records the run (data, root, split, train config)
    last/                            the latest state: model, EMA, optimizer, RNG (safetensors) + state.json
    metrics.jsonl                    one JSON object per logged step
    samples/step_NNNNNN.png          sample grids from the EMA weights

Every write is atomic (genzoo.checkpoint); nothing is pickled: tensors go to safetensors and the
rest of the state (optimizer hyper-parameters, step, best value) to JSON.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import checkpoint

STATE_DIR = "last"


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer's state dict as flat tensors ("param_index.key") and JSON for the rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """The inverse of optimizer_to_flat: load the flat state into `opt`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state(data_gen: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """Every RNG state a run draws from: torch's global one, the data order's, and CUDA's."""
    rng = {"torch": torch.get_rng_state(), "data": data_gen.get_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def set_rng_state(rng: dict[str, Tensor], data_gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    data_gen.set_state(rng["data"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


class RunDirectory:
    """Reads and writes a run directory; every write is atomic. A `None` path writes nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None

    @property
    def state_dir(self) -> Path:
        assert self.path is not None
        return self.path / STATE_DIR

    def has_state(self) -> bool:
        return self.path is not None and (self.state_dir / "state.json").is_file()

    def save_state(self, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any],
                   rng: dict[str, Tensor], record: dict[str, Any]) -> None:
        if self.path is None:
            return
        d = self.state_dir
        checkpoint.save(model, d, extra={"run": record})
        checkpoint.save_tensors(d / "ema.safetensors", ema.state_dict())
        opt_tensors, opt_meta = optimizer_to_flat(opt)
        checkpoint.save_tensors(d / "optimizer.safetensors", opt_tensors)
        checkpoint.save_tensors(d / "rng.safetensors", rng)
        # state.json last: it names a complete set of the files above.
        checkpoint.atomic_write_json(d / "state.json", {**state, "optimizer": opt_meta})

    def load_state(self, model: nn.Module, ema: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Tensor]]:
        """Load the latest weights into `model` and `ema`; return (state, optimizer tensors, RNG states)."""
        d = self.state_dir
        state = checkpoint.read_json(d / "state.json", "run state")
        checkpoint.load_state(model, checkpoint.load_tensors(d / checkpoint.WEIGHTS_FILE), str(d / checkpoint.WEIGHTS_FILE))
        checkpoint.load_state(ema, checkpoint.load_tensors(d / "ema.safetensors"), str(d / "ema.safetensors"))
        return state, checkpoint.load_tensors(d / "optimizer.safetensors"), checkpoint.load_tensors(d / "rng.safetensors")

    def save_best(self, ema: nn.Module, record: dict[str, Any]) -> None:
        if self.path is not None:
            checkpoint.save(ema, self.path, extra={"run": record})

    def load_best(self, model: nn.Module) -> bool:
        """Load the best weights saved in the directory into `model`; False when there are none."""
        if self.path is None or not (self.path / checkpoint.WEIGHTS_FILE).is_file():
            return False
        checkpoint.load_state(model, checkpoint.load_tensors(self.path / checkpoint.WEIGHTS_FILE), str(self.path))
        return True

    def sample_path(self, global_step: int) -> Path | None:
        return None if self.path is None else self.path / "samples" / f"step_{global_step:06d}.png"

    def log(self, row: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")

    def truncate_log(self, last_step: int) -> None:
        """On resume, drop metric lines written after the saved state (they will be written again)."""
        if self.path is None or not (self.path / "metrics.jsonl").is_file():
            return
        kept = []
        for line in (self.path / "metrics.jsonl").read_text().splitlines():
            try:
                if json.loads(line).get("global_step", 0) <= last_step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue
        checkpoint.atomic_write_bytes(self.path / "metrics.jsonl", ("\n".join(kept) + "\n" if kept else "").encode())
