"""One training loop for every model: it knows the contract (models/base.py), never a model's name.
`genzoo.train(model, train_data, val_data, **options)` is this module's `train`; the loop's stage
and step are in genzoo.training_loop.

AdamW with linear warm-up then cosine decay, gradient clipping, EMA weights, a validation score
every `eval_every` steps (bits/dim from `validation_nats` for models with a likelihood, else the
mean loss) with the best EMA weights kept, metrics as JSON lines, PNG sample grids, and exact
resume: the optimizer, EMA, step, stage and every RNG state are saved (genzoo.rundir), so a
resumed run continues exactly where it stopped.

Before the first step the model prepares itself on the training data (`prepare`); multi-stage
models (`model.stages`) run each stage for `steps` steps with a fresh optimizer over
`model.stage_parameters(stage)`, after `model.begin_stage(stage, train_data)`.

Under torchrun the processes train one model by data parallelism (genzoo.distributed), rank 0
alone writing the run; `precision` runs the loss under autocast (genzoo.precision).
"""
from __future__ import annotations

import copy
import dataclasses
import platform
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__, distributed
from .data.spec import Dataset
from .errors import GenzooError, Interrupted
from .models.base import GenerativeModel
from .nn.pointwise import to_channels_last
from .rundir import RunDirectory
from .train_config import TrainConfig, TrainResult, resolve_device, train_config_for, train_defaults_for  # noqa: F401
from .training_loop import Loop, Stop


def data_record(train_data: Dataset, root: str | None = None) -> dict[str, Any]:
    """What a run records of its data, so that `genzoo eval` and `genzoo sample` find them again."""
    return {"data": train_data.name or None, "root": root, "split": train_data.split, "val_split": "val",
            "data_info": train_data.info, "spec": train_data.spec.to_dict()}


def train(model: GenerativeModel, train_data: Dataset, val_data: Dataset | None = None,
          config: TrainConfig | None = None, *, out: str | Path | None = None, resume: bool = False,
          progress: bool = True, record: dict[str, Any] | None = None, stop_after: int | None = None,
          **options: Any) -> TrainResult:
    """Train `model` on `train_data`, selecting the best EMA weights on `val_data` (default: the
    training data); the model ends with those weights. `genzoo train` runs exactly this.

    The training options are `config` (a TrainConfig) or its fields as keywords (`steps=500`,
    `lr=1e-3`, `seed=1`, ...), on top of the model's `train_defaults`. `out` is the run directory
    (None: nothing is written): the best weights (loadable by `genzoo.load`), metrics, sample grids
    and the resumable state, written atomically. With `resume=True` the same call is safe to repeat
    at every stage of a run's life, as schedulers repeat a command: it starts the run when `out`
    holds no state, continues it exactly from its saved state, and returns at once when it has
    finished (`result.already_finished`). `record` describes the run's data for config.json
    (default: `train_data`'s name and spec); `stop_after` ends the call after that many global
    steps, as a killed run would.
    """
    if not isinstance(model, GenerativeModel):
        raise GenzooError(f"train() needs a genzoo model (genzoo.create), got {type(model).__name__}.")
    for what, ds in (("train_data", train_data), ("val_data", val_data)):
        if not isinstance(ds, Dataset) and not (ds is None and what == "val_data"):
            raise GenzooError(f"{what} must be a genzoo.Dataset (genzoo.data.load), got {type(ds).__name__}.")
    if config is None:
        config = train_config_for(model, **options)
    elif options:
        raise GenzooError(f"give the training options either as config= or as keywords, not both "
                          f"(got config= and {', '.join(sorted(options))}).")
    if not isinstance(config, TrainConfig):
        raise GenzooError(f"config must be a genzoo TrainConfig, got {type(config).__name__}.")
    cfg = config
    if train_data.spec != model.spec:
        raise GenzooError(f"the data has spec {train_data.spec} but the model was built for {model.spec}.")
    if cfg.batch_size % distributed.env_world_size():
        raise GenzooError(f"the batch size {cfg.batch_size} is the global batch and must divide by the "
                          f"{distributed.env_world_size()} processes.")
    device = distributed.init_from_env(resolve_device(cfg.device))
    run = RunDirectory(out if distributed.is_main() else None)  # rank 0 alone writes the run
    run.lock()
    try:
        result = _train(model, train_data, val_data, cfg, (run, RunDirectory(out)), device,
                        progress and distributed.is_main(), resume,
                        data_record(train_data) if record is None else record, stop_after)
    finally:
        run.unlock()
    result.out = Path(out) if out is not None else None
    return result


def finished_message(path: Path | None, steps: int, model_name: str) -> str:
    """What to say of a run that has finished: what it did, and how to train it on."""
    return (f"the run in {str(path)!r} has finished all {steps} steps; to train it on, start a new run from its "
            f"weights: genzoo train {model_name} --init-from {path} --out NEW_DIR")


def refuse_existing(path: Path | None, state: dict[str, Any], model_name: str) -> None:
    """A fresh run into a directory that holds one: one sentence, with the way on that fits its state."""
    how = (f"it has finished all {state['global_step']} steps (to train it on, start a new run from its weights: "
           f"genzoo train {model_name} --init-from {path} --out NEW_DIR)" if state.get("finished")
           else "run the same command with --resume to continue it")
    raise GenzooError(f"{str(path)!r} already holds a run; {how}, or choose another --out.")


def _train(model: GenerativeModel, train_data: Dataset, val_data: Dataset | None, cfg: TrainConfig,
           runs: tuple[RunDirectory, RunDirectory], device: torch.device, progress: bool, resume: bool,
           record: dict[str, Any], stop_after: int | None) -> TrainResult:
    run, source = runs  # what this rank writes (nothing but on rank 0), what every rank reads
    saved = source.read_state()
    resume = resume and saved is not None  # resuming a run that never saved a state starts it
    if saved is not None and not resume:
        refuse_existing(source.path, saved, model.name)
    if resume and saved.get("finished"):
        return TrainResult(best_value=float(saved["best_value"]), best_step=int(saved["best_step"]),
                           metric=str(saved.get("metric", "")), already_finished=True,
                           total_steps=int(saved["global_step"]))
    if not resume:
        run.reset()  # what a run killed before its first saved state left behind
    model.to(device)
    if cfg.channels_last:
        to_channels_last(model)
    torch.manual_seed(cfg.seed + distributed.rank_and_world()[0])
    versions = {"genzoo": __version__, "torch": torch.__version__, "python": platform.python_version()}
    loop = Loop(model, cfg, run, device, train_data,
                val_data if val_data is not None and len(val_data) > 0 else train_data,
                {**record, "seed": cfg.seed, "versions": versions, "train_config": dataclasses.asdict(cfg),
                 "stages": list(model.stages)},
                progress, stop_after, torch.Generator().manual_seed(cfg.seed + 1))
    start_stage, resumed = 0, None
    if resume:
        run.clean()
        ema = copy.deepcopy(model)
        state, opt_tensors, rng = source.load_state(model, ema)
        start_stage = int(state["stage_index"])
        loop.best_value, loop.best_step = float(state["best_value"]), int(state["best_step"])
        loop.global_step = int(state["global_step"])
        resumed = (state, opt_tensors, rng, ema)
        run.truncate_log(start_stage * cfg.steps + int(state["step"]))

    result = TrainResult(total_steps=cfg.steps * len(model.stages))
    t_start = time.time()
    model.prepare(train_data)
    try:
        for stage_index in range(start_stage, len(model.stages)):
            loop.stage(stage_index, resumed, result)
            resumed = None
    except Stop:
        result.steps = loop.steps_done
        return result
    except KeyboardInterrupt:
        if run.path is not None:
            raise Interrupted(_interrupted_message(run, loop)) from None
        raise
    result.best_value, result.best_step = loop.best_value, loop.best_step
    result.steps = loop.steps_done
    result.seconds = time.time() - t_start
    result.images_per_second = loop.images / max(result.seconds, 1e-9)
    model.eval()
    return result


def _interrupted_message(run: RunDirectory, loop: Loop) -> str:
    """What an interrupted run has on disk: its last saved state, or nothing."""
    state = run.read_state()
    where = f"interrupted at step {loop.global_step}"
    if state is None:
        return (f"{where}, before its first evaluation (step {loop.cfg.eval_every}): nothing was saved; the same "
                f"command starts it again.")
    return (f"{where}; the run in {str(run.path)!r} is saved at step {state['global_step']}, its last evaluation: "
            f"run the same command with --resume to continue it from there.")
