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
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import __version__, configs, distributed, precision
from .data.spec import Dataset
from .errors import GenzooError, Interrupted
from .models.base import GenerativeModel
from .models.helpers import check_choices
from .nn.pointwise import to_channels_last
from .registry import check_seed
from .rundir import RunDirectory
from .training_loop import Loop, Stop

# Old names of training options, read from the records of earlier runs.
RENAMED_OPTIONS = {"num_samples": "grid_size"}


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; a model's `train_defaults` replace these defaults.

    grid_size is the number of images in each sample grid written during and after training.
    max_seconds > 0 ends each stage early, after a last validation, once the stage has run for
    max_seconds / (number of stages) wall-clock seconds (an equal-time budget); 0 means no limit.
    precision is fp32, bf16, fp16 or auto (genzoo.precision). channels_last stores the convolution
    weights (and so the activations) in NHWC order; compile runs the loss through torch.compile.
    Both change how the step is computed, not what is saved: the weights are written in the
    standard layout, and load without either.
    """

    steps: int = 2000  # optimizer steps (per stage, for models trained in stages)
    batch_size: int = 64  # images per step, the global batch under torchrun
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_steps: int = 100  # steps of linear warm-up before the cosine decay
    min_lr_ratio: float = 0.05  # the learning rate at the end, as a fraction of lr
    grad_clip: float = 1.0  # largest gradient norm (0: no clipping)
    ema_decay: float = 0.999  # decay of the exponential moving average of the weights that are evaluated and saved
    eval_every: int = 250  # steps between validations, each of which saves the resumable state
    sample_every: int = 1000  # steps between sample grids written to samples/ (0: none)
    grid_size: int = 64  # images in each sample grid (0: none)
    seed: int = 0  # decides the initial weights, the data order, dropout and sampling
    device: str = "auto"  # auto (CUDA where available), cpu, cuda, cuda:N or mps
    val_batch_size: int = 256  # images per batch of validation and evaluation
    max_seconds: float = 0.0  # > 0: end each stage after its share of these wall-clock seconds (0: no limit)
    # fp32; bf16 or fp16 under autocast (fp16 with loss scaling, on a GPU); auto: bf16 where CUDA has it
    precision: precision.Name = "fp32"
    channels_last: bool = False  # store convolution kernels larger than 1x1 in NHWC order (same results, maybe faster)
    compile: bool = False  # run the loss through torch.compile (same results; pays only on long runs)

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_choices(self)
        for name in ("steps", "batch_size", "eval_every", "val_batch_size"):
            if int(getattr(self, name)) < 1:
                raise GenzooError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("warmup_steps", "sample_every", "grid_size"):
            if int(getattr(self, name)) < 0:
                raise GenzooError(f"{name} must be at least 0, got {getattr(self, name)!r}.")
        if not self.max_seconds >= 0:
            raise GenzooError(f"max_seconds must be at least 0, got {self.max_seconds!r}.")
        if not self.lr > 0:
            raise GenzooError(f"lr must be positive, got {self.lr!r}.")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise GenzooError("weight_decay and grad_clip must be at least 0.")
        if not 0 <= self.ema_decay < 1:
            raise GenzooError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise GenzooError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}.")


def train_defaults_for(cls: type[GenerativeModel]) -> dict[str, Any]:
    """Every TrainConfig field's default for model class `cls`: TrainConfig's, then the model's own."""
    return {**{f.name: f.default for f in dataclasses.fields(TrainConfig)}, **cls.train_defaults}


def train_config_for(model: GenerativeModel | type[GenerativeModel], **overrides: Any) -> TrainConfig:
    """TrainConfig from the defaults, then the model's `train_defaults`, then `overrides` (None: unset)."""
    overrides = {RENAMED_OPTIONS.get(k, k): v for k, v in overrides.items()}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise GenzooError(f"unknown training option {unknown[0]!r}; the options are: {', '.join(sorted(known))}.")
    values = {**model.train_defaults, **{k: v for k, v in overrides.items() if v is not None}}
    cfg = configs.build(TrainConfig, values, "the training options", max_int=None)  # steps and seeds may be large
    resolve_device(cfg.device)
    return cfg


@dataclass
class TrainResult:
    """What a training call reached: the best validation score (`metric`: "val_bpd" in bits/dim with
    its `kind`, or "val_loss" in the model's `loss_unit`), its step, the optimizer steps this call
    took (`steps`, fewer than configured when max_seconds ends it), the throughput, and the run
    directory (`out`)."""

    best_value: float = math.inf
    best_step: int = -1
    metric: str = "val_bpd"
    kind: str = ""
    steps: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    total_steps: int = 0  # the run's global steps, every stage's together
    already_finished: bool = False  # a resume found the run finished and trained nothing
    out: Path | None = None  # the run directory


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise GenzooError(f"unknown device {name!r}.") from e
    if device.type not in ("cpu", "cuda", "mps"):
        raise GenzooError(f"genzoo trains on cpu, cuda or mps, not on {name!r}.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise GenzooError(f"device {name!r} was asked for but MPS is not available here.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenzooError(f"device {name!r} was asked for but CUDA is not available here.")
    return device


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
