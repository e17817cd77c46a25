"""The training loop's stage and step: what `genzoo.training.train` runs for each stage of a model.

A stage runs AdamW with linear warm-up then cosine decay, gradient clipping and EMA weights; every
`eval_every` steps it validates the EMA weights (bits/dim from `validation_nats` for models with a
likelihood, else the mean loss), keeps the best, and saves the resumable state (genzoo.rundir).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import distributed, precision
from .data.spec import Dataset
from .errors import GenzooError
from .evaluate import validate
from .models.base import GenerativeModel
from .optim import lr_at, make_optimizer, update_ema
from .rundir import RunDirectory, optimizer_from_flat, rng_state, set_rng_state
from .train_config import TrainConfig, TrainResult


class Stop(Exception):
    """Raised at `stop_after` global steps: the call ends as a killed run would."""


@dataclass
class Loop:
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
    global_step: int = 0  # global steps completed, for the message of an interrupted run
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
                    raise Stop(global_step)
                lr = lr_at(step, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                loss_value = self.step(opt, params, global_step)
                self.global_step = global_step + 1
                update_ema(ema, model, min(cfg.ema_decay, (1 + step) / (10 + step)))
                row: dict[str, Any] = {"global_step": global_step + 1, "stage": stage, "step": step + 1,
                                       "loss": loss_value, "lr": lr, "seconds": time.time() - self.t_start}
                done = step + 1
                out_of_time = time.time() - t_stage >= time_limit
                if time_limit < math.inf:
                    out_of_time = distributed.any_rank(out_of_time)
                last = done == cfg.steps or out_of_time
                if done % cfg.eval_every == 0 or last:
                    bar.set_postfix_str("validating", refresh=True)  # a long step says what it does
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

                    bar.set_postfix_str(f"drawing a grid of {cfg.grid_size} samples", refresh=True)

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


