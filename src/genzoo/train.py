"""One training loop for every model: it knows the contract (models/base.py), never a model's name.

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
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import __version__, configs, distributed, precision
from .data.spec import Dataset
from .errors import GenzooError, Interrupted
from .evaluate import validate
from .models.base import GenerativeModel
from .nn.pointwise import to_channels_last
from .optim import lr_at, make_optimizer, update_ema
from .registry import check_seed
from .rundir import STATE_DIR, RunDirectory, optimizer_from_flat, rng_state, set_rng_state

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

    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    eval_every: int = 250
    sample_every: int = 1000
    grid_size: int = 64
    seed: int = 0
    device: str = "auto"
    val_batch_size: int = 256
    max_seconds: float = 0.0
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        check_seed(self.seed)
        precision.check(self.precision)
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
    took (`steps`, fewer than configured when max_seconds ends it) and the throughput."""

    best_value: float = math.inf
    best_step: int = -1
    metric: str = "val_bpd"
    kind: str = ""
    steps: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


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


class _Stop(Exception):
    pass


@dataclass
class _Loop:
    """The state one `train` call carries from stage to stage."""

    model: GenerativeModel
    cfg: TrainConfig
    run: RunDirectory
    device: torch.device
    train_data: Dataset
    val_data: Dataset
    record: dict[str, Any]
    progress: bool
    stop_after: int | None
    data_gen: torch.Generator
    net: Any = None  # the loss: in DistributedDataParallel under data parallelism, compiled with `compile`
    best_value: float = math.inf
    best_step: int = -1
    images: int = 0
    steps_done: int = 0
    t_start: float = field(default_factory=time.time)

    def batch(self) -> dict[str, Tensor]:
        """A random training batch (this rank's slice of it): the images, and the labels for
        class-conditional models."""
        idx = torch.randint(0, len(self.train_data.x), (self.cfg.batch_size,), generator=self.data_gen)
        idx = idx[distributed.shard(self.cfg.batch_size)]
        batch = {"x": self.x_train[idx].to(self.device).long()}
        if self.y_train is not None:
            batch["labels"] = self.y_train[idx].to(self.device)
        return batch

    def __post_init__(self) -> None:
        # the training images stay on the CPU, as uint8 where the levels fit, and go to the device a batch at a time
        x = self.train_data.x
        self.x_train = x.to(torch.uint8) if self.train_data.spec.levels <= 256 else x
        labels = self.train_data.labels
        if self.model.num_classes > 0 and labels is None:
            raise GenzooError(f"model {self.model.name!r} is conditioned on classes; the training data must have labels.")
        self.y_train = labels if self.model.num_classes > 0 else None
        self.amp = precision.Precision(self.cfg.precision, self.device)

    def step(self, opt: torch.optim.Optimizer, params: list[nn.Parameter], global_step: int) -> float:
        """One optimizer step on a fresh batch; one sentence when the loss or gradient is not finite."""
        self.model.train()
        batch = self.batch()
        try:
            with self.amp.autocast():
                loss = self.net(**batch)
        except GenzooError as e:
            raise GenzooError(f"training stopped at step {global_step + 1}: {e}") from e
        loss_value = distributed.mean(loss)  # every rank takes the same decision
        if not torch.isfinite(loss_value):
            raise GenzooError(f"training stopped at step {global_step + 1}: the loss became {float(loss_value)} "
                              f"(not finite); try a lower --lr or a smaller --grad-clip.")
        opt.zero_grad(set_to_none=True)
        self.amp.backward(loss)
        if self.cfg.grad_clip > 0:
            self.amp.unscale(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
            if not torch.isfinite(gnorm) and not self.amp.scaling:  # fp16's scaler skips such a step
                raise GenzooError(f"training stopped at step {global_step + 1}: the gradient became non-finite; "
                                  f"try a lower --lr.")
        self.amp.step(opt)
        self.images += self.cfg.batch_size
        self.steps_done += 1
        return float(loss_value)

    def stage(self, stage_index: int, resumed: tuple | None, result: TrainResult) -> None:
        """Train stage `stage_index` to its end (or to `stop_after`); the model ends with its best weights."""
        cfg, model, run = self.cfg, self.model, self.run
        stage = model.stages[stage_index]
        model.begin_stage(stage, self.train_data)
        self.net = distributed.wrap(model) or model.loss
        if cfg.compile:
            self.net = torch.compile(self.net)
        params = [p for p in model.stage_parameters(stage) if p.requires_grad]
        opt = make_optimizer(params, cfg)
        ema = copy.deepcopy(model)
        first = 0
        if resumed is not None:
            state, opt_tensors, rng, ema_loaded = resumed
            ema.load_state_dict(ema_loaded.state_dict())
            optimizer_from_flat(opt, opt_tensors, state["optimizer"])
            first = int(state["step"])
            self.amp.load_state_dict(state.get("scaler", {}))
            set_rng_state(distributed.rank_rng(rng, cfg.seed, first), self.data_gen, self.device)
        elif stage_index > 0:
            self.best_value, self.best_step = math.inf, -1   # each stage selects its own best weights
        ema.eval()
        best_state: dict[str, Tensor] | None = None
        multi = len(model.stages) > 1
        bar = tqdm(total=cfg.steps, initial=first, disable=not self.progress, dynamic_ncols=True,
                   desc=model.name + (f" [{stage}]" if multi else ""))
        metric, value, kind = "", math.nan, ""
        t_stage = time.time()
        time_limit = cfg.max_seconds / len(model.stages) if cfg.max_seconds > 0 else math.inf
        try:
            for step in range(first, cfg.steps):
                global_step = stage_index * cfg.steps + step
                if self.stop_after is not None and global_step >= self.stop_after:
                    raise _Stop(global_step)
                lr = lr_at(step, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                loss_value = self.step(opt, params, global_step)
                update_ema(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
                row: dict[str, Any] = {"global_step": global_step + 1, "stage": stage, "step": step + 1,
                                       "loss": loss_value, "lr": lr, "seconds": time.time() - self.t_start}
                done = step + 1
                out_of_time = time.time() - t_stage >= time_limit
                if time_limit < math.inf:
                    out_of_time = distributed.any_rank(out_of_time)
                last = done == cfg.steps or out_of_time
                if done % cfg.eval_every == 0 or last:
                    metric, value, kind = validate(ema, self.val_data, cfg.val_batch_size)
                    row.update({metric: value, "kind": kind})
                    if value < self.best_value:
                        self.best_value, self.best_step = value, global_step + 1
                        best_state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
                        run.save_best(ema, {**self.record, "best_step": self.best_step, "stage": stage,
                                            metric: value, "kind": kind})
                    row["best"] = self.best_value
                    run.log(row)
                    self.save_state(ema, opt, stage_index, stage, done, global_step, metric)
                elif done % 50 == 0:
                    run.log(row)
                if cfg.sample_every and (done % cfg.sample_every == 0 or last):
                    from .viz import write_samples

                    sampled = write_samples(ema, run.sample_path(global_step + 1), cfg.grid_size, cfg.seed,
                                            self.train_data.x)
                    if sampled:
                        run.log({"global_step": global_step + 1, "stage": stage, "step": done, **sampled})
                if done % 10 == 0 or last:
                    post = {"loss": f"{loss_value:.4f}"}
                    if metric:
                        post[metric.replace("val_", "val ")] = f"{value:.4f}"
                    bar.set_postfix(post, refresh=False)
                bar.update(1)
                if out_of_time:
                    break
        finally:
            bar.close()
        # the next stage, and the caller, get this stage's best EMA weights
        if best_state is not None:
            model.load_state_dict(best_state)
        elif not (self.best_step > 0 and run.load_best(model)):
            model.load_state_dict(ema.state_dict())
        distributed.broadcast_module(model)  # rank 0 alone read the best weights back from the run directory
        self.net = None
        result.history.append({"stage": stage, "best": self.best_value, "best_step": self.best_step,
                               "metric": metric, "kind": kind})
        result.metric, result.kind = metric, kind

    def save_state(self, ema: nn.Module, opt: torch.optim.Optimizer, stage_index: int, stage: str, done: int,
                   global_step: int, metric: str) -> None:
        """The resumable state after `done` steps of stage `stage_index` (the next stage's start at its end)."""
        last_stage = stage_index == len(self.model.stages) - 1
        state = {"stage_index": stage_index, "stage": stage, "step": done, "global_step": global_step + 1,
                 "best_value": self.best_value, "best_step": self.best_step, "metric": metric,
                 "finished": last_stage and done == self.cfg.steps, "scaler": self.amp.state_dict()}
        if done == self.cfg.steps:
            state.update({"stage_index": stage_index + 1, "step": 0})
        rng = distributed.rng_states(rng_state(self.data_gen, self.device), self.device)
        self.run.save_state(self.model, ema, opt, state, rng, self.record)


def train(model: GenerativeModel, train_data: Dataset, val_data: Dataset | None, config: TrainConfig,
          out_dir: Any = None, progress: bool = True, resume: bool = False,
          record: dict[str, Any] | None = None, stop_after: int | None = None) -> TrainResult:
    """Train `model` on `train_data`, selecting the best EMA weights on `val_data` (default: the training data).

    `record` describes the run (data, root, split, ...) and is stored in config.json.
    `stop_after` ends this call after that many global steps (as a killed run would), leaving a
    state that `resume=True` continues.
    """
    cfg = config
    if train_data.spec != model.spec:
        raise GenzooError(f"the data has spec {train_data.spec} but the model was built for {model.spec}.")
    if cfg.batch_size % distributed.env_world_size():
        raise GenzooError(f"the batch size {cfg.batch_size} is the global batch and must divide by the "
                          f"{distributed.env_world_size()} processes.")
    device = distributed.init_from_env(resolve_device(cfg.device))
    run = RunDirectory(out_dir if distributed.is_main() else None)  # rank 0 alone writes the run
    run.lock()
    try:
        return _train(model, train_data, val_data, cfg, (run, RunDirectory(out_dir)), device,
                      progress and distributed.is_main(), resume, record, stop_after)
    finally:
        run.unlock()


def _train(model: GenerativeModel, train_data: Dataset, val_data: Dataset | None, cfg: TrainConfig,
           runs: tuple[RunDirectory, RunDirectory], device: torch.device, progress: bool, resume: bool,
           record: dict[str, Any] | None, stop_after: int | None) -> TrainResult:
    run, source = runs  # what this rank writes (nothing but on rank 0), what every rank reads
    if resume and not source.has_state():
        raise GenzooError(f"there is no run to resume in {str(source.path)!r} (no {STATE_DIR}/state.json).")
    if not resume:
        if run.has_state():
            raise GenzooError(f"{str(run.path)!r} already holds a run; continue it with --resume or choose another --out.")
        run.reset()  # what a run killed before its first saved state left behind
    model.to(device)
    if cfg.channels_last:
        to_channels_last(model)
    torch.manual_seed(cfg.seed + distributed.rank_and_world()[0])
    versions = {"genzoo": __version__, "torch": torch.__version__, "python": platform.python_version()}
    loop = _Loop(model, cfg, run, device, train_data,
                 val_data if val_data is not None and len(val_data) > 0 else train_data,
                 {**(record or {}), "seed": cfg.seed, "versions": versions, "train_config": dataclasses.asdict(cfg),
                  "stages": list(model.stages)},
                 progress, stop_after, torch.Generator().manual_seed(cfg.seed + 1))
    start_stage, resumed = 0, None
    if resume:
        run.clean()
        ema = copy.deepcopy(model)
        state, opt_tensors, rng = source.load_state(model, ema)
        if state.get("finished"):
            raise GenzooError(f"the run in {str(run.path)!r} has already finished all {state['global_step']} steps.")
        start_stage = int(state["stage_index"])
        loop.best_value, loop.best_step = float(state["best_value"]), int(state["best_step"])
        resumed = (state, opt_tensors, rng, ema)
        run.truncate_log(start_stage * cfg.steps + int(state["step"]))

    result = TrainResult()
    t_start = time.time()
    model.prepare(train_data)
    try:
        for stage_index in range(start_stage, len(model.stages)):
            loop.stage(stage_index, resumed, result)
            resumed = None
    except _Stop:
        result.steps = loop.steps_done
        return result
    except KeyboardInterrupt:
        if run.path is not None:
            # progress since the last evaluation is dropped; the saved state is consistent
            raise Interrupted(f"interrupted; the run in {str(run.path)!r} is saved at its last evaluation, "
                              f"continue it with --resume.") from None
        raise
    result.best_value, result.best_step = loop.best_value, loop.best_step
    result.steps = loop.steps_done
    result.seconds = time.time() - t_start
    result.images_per_second = loop.images / max(result.seconds, 1e-9)
    model.eval()
    return result
