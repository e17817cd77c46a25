"""One training loop for every model: it knows the contract, never a model's name.

AdamW with linear warm-up then cosine decay, gradient clipping, EMA weights, validation
bits/dim (or validation loss for models without a likelihood) every `eval_every` steps with the
best EMA weights kept, metrics as JSON lines, PNG sample grids, and exact resume: the optimizer,
EMA, step, stage and every RNG state are saved, so a resumed run continues exactly where it stopped.

Run directory (`out_dir`):
    config.json, model.safetensors   the best EMA weights so far (loadable by genzoo.load),
                                     config.json also records the run (data, root, split, train config)
    last/                            the latest state: model, EMA, optimizer (safetensors) + state.json
    metrics.jsonl                    one JSON object per logged step
    samples/step_NNNNNN.png          sample grids from the EMA weights
Multi-stage models (`model.stages`) run each stage for `steps` steps with a fresh optimizer over
`model.stage_parameters(stage)`, after `model.begin_stage(stage, train_data)`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import checkpoint
from .data.spec import Dataset
from .errors import GenzooError
from .evaluate import accepts, bits_per_dim, has_likelihood
from .models.base import LogLikelihood

STATE_DIR = "last"


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters; a model's `train_defaults` replace these defaults."""

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
    num_samples: int = 64
    seed: int = 0
    device: str = "auto"
    val_batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "val_batch_size"):
            if int(getattr(self, name)) < 1:
                raise GenzooError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("warmup_steps", "sample_every", "num_samples"):
            if int(getattr(self, name)) < 0:
                raise GenzooError(f"{name} must be at least 0, got {getattr(self, name)!r}.")
        if not self.lr > 0:
            raise GenzooError(f"lr must be positive, got {self.lr!r}.")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise GenzooError("weight_decay and grad_clip must be at least 0.")
        if not 0 <= self.ema_decay < 1:
            raise GenzooError(f"ema_decay must be in [0, 1), got {self.ema_decay!r}.")
        if not 0 <= self.min_lr_ratio <= 1:
            raise GenzooError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}.")


def train_config_for(model: nn.Module, **overrides: Any) -> TrainConfig:
    """TrainConfig from the defaults, then the model's `train_defaults`, then `overrides`."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise GenzooError(f"unknown training option {unknown[0]!r}; the options are: {', '.join(sorted(known))}.")
    values = {**getattr(model, "train_defaults", {}), **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(**values)


@dataclass
class TrainResult:
    best_value: float = math.inf          # best validation bits/dim (or loss, see `metric`)
    best_step: int = -1
    metric: str = "val_bpd"
    kind: str = ""
    steps: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_val_bpd(self) -> float:
        return self.best_value


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise GenzooError(f"unknown device {name!r}.") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GenzooError(f"device {name!r} was asked for but CUDA is not available here.")
    return device


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to lr over warmup_steps, then cosine decay to lr * min_lr_ratio at `steps`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and kernels only, not on biases and scales."""
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.999))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def validate(model: nn.Module, data: Dataset, batch_size: int, device: torch.device) -> tuple[str, float, str]:
    """("val_bpd", bits/dim, kind) for models with a likelihood, else ("val_loss", mean loss, "")."""
    x = data.x
    hook = getattr(model, "validation_nats", None)
    if callable(hook):
        parts, kind = [], "lower_bound"
        for i in range(0, len(x), batch_size):
            ll: LogLikelihood = hook(x[i:i + batch_size].to(device))
            parts.append(ll.nats.double().cpu())
            kind = ll.kind
        return "val_bpd", float(-torch.cat(parts).mean() / (x[0].numel() * math.log(2))), kind
    if has_likelihood(model):
        bpd = bits_per_dim(model, x.to(device), batch_size, labels=data.labels)
        return "val_bpd", bpd.value, bpd.kind
    total, count = 0.0, 0
    with_labels = data.labels is not None and accepts(model.loss, "labels")
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].to(device)
        extra = {"labels": data.labels[i:i + batch_size].to(device)} if with_labels else {}
        total += float(model.loss(xb, **extra)) * len(xb)
        count += len(xb)
    return "val_loss", total / count, ""


# -- state (de)serialisation: tensors to safetensors, the rest to JSON; nothing pickled ----------
def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_state(data_gen: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    rng = {"torch": torch.get_rng_state(), "data": data_gen.get_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def _set_rng_state(rng: dict[str, Tensor], data_gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    data_gen.set_state(rng["data"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


class RunDirectory:
    """Reads and writes a run directory; every write is atomic."""

    def __init__(self, path: Path | None) -> None:
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
        opt_tensors, opt_meta = _optimizer_to_flat(opt)
        checkpoint.save_tensors(d / "optimizer.safetensors", opt_tensors)
        checkpoint.save_tensors(d / "rng.safetensors", rng)
        # state.json last: it names a complete set of the files above.
        checkpoint.atomic_write_json(d / "state.json", {**state, "optimizer": opt_meta})

    def load_state(self, model: nn.Module, ema: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Tensor]]:
        d = self.state_dir
        state = checkpoint.read_json(d / "state.json", "run state")
        checkpoint.load_state(model, checkpoint.load_tensors(d / checkpoint.WEIGHTS_FILE), str(d / checkpoint.WEIGHTS_FILE))
        checkpoint.load_state(ema, checkpoint.load_tensors(d / "ema.safetensors"), str(d / "ema.safetensors"))
        return state, checkpoint.load_tensors(d / "optimizer.safetensors"), checkpoint.load_tensors(d / "rng.safetensors")

    def save_best(self, ema: nn.Module, record: dict[str, Any]) -> None:
        if self.path is not None:
            checkpoint.save(ema, self.path, extra={"run": record})

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


def _write_samples(model: nn.Module, path: Path, n: int, seed: int) -> None:
    from .viz import save_grid

    if getattr(model, "conditional", False) or n == 0:  # draws only given an input
        return
    g = torch.Generator(device=model.device if hasattr(model, "device") else "cpu").manual_seed(seed)
    x = model.sample(n, generator=g)
    save_grid(x, model.spec, path)


def train(model: nn.Module, train_data: Dataset, val_data: Dataset | None, config: TrainConfig,
          out_dir: str | Path | None = None, progress: bool = True, resume: bool = False,
          record: dict[str, Any] | None = None, stop_after: int | None = None) -> TrainResult:
    """Train `model` on `train_data`, selecting the best EMA weights on `val_data`.

    `record` describes the run (data, root, split, ...) and is stored in config.json.
    `stop_after` ends this call after that many global steps (as a killed run would), leaving a
    state that `resume=True` continues.
    """
    cfg = config
    if train_data.spec != model.spec:
        raise GenzooError(f"the data has spec {train_data.spec} but the model was built for {model.spec}.")
    run = RunDirectory(Path(out_dir) if out_dir is not None else None)
    if resume and not run.has_state():
        raise GenzooError(f"there is no run to resume in {str(out_dir)!r} (no {STATE_DIR}/state.json).")
    device = resolve_device(cfg.device)
    model.to(device)
    torch.manual_seed(cfg.seed)
    data_gen = torch.Generator().manual_seed(cfg.seed + 1)
    record = {**(record or {}), "train_config": dataclasses.asdict(cfg), "stages": list(model.stages)}
    x_train = train_data.x.to(device)
    # class-conditional models (a `labels` argument to loss) get the dataset's labels
    y_train = train_data.labels.to(device) if train_data.labels is not None and accepts(model.loss, "labels") else None
    if val_data is None or len(val_data) == 0:
        val_data = train_data
    stages = tuple(model.stages)
    result = TrainResult(steps=0)
    total_steps = cfg.steps * len(stages)
    start_stage, start_step = 0, 0
    best_value, best_step = math.inf, -1
    saved = None
    if resume:
        ema_tmp = copy.deepcopy(model)
        state, opt_tensors, rng = run.load_state(model, ema_tmp)
        if state.get("finished"):
            raise GenzooError(f"the run in {str(out_dir)!r} has already finished all {state['global_step']} steps.")
        start_stage, start_step = int(state["stage_index"]), int(state["step"])
        best_value, best_step = float(state["best_value"]), int(state["best_step"])
        saved = (state, opt_tensors, rng, ema_tmp)
        run.truncate_log(start_stage * cfg.steps + start_step)

    t_start = time.time()
    images = 0
    for stage_index in range(start_stage, len(stages)):
        stage = stages[stage_index]
        model.begin_stage(stage, train_data)
        params = [p for p in model.stage_parameters(stage) if p.requires_grad]
        opt = make_optimizer(params, cfg)
        ema = copy.deepcopy(model)
        first = 0
        if saved is not None:
            state, opt_tensors, rng, ema_loaded = saved
            ema.load_state_dict(ema_loaded.state_dict())
            _optimizer_from_flat(opt, opt_tensors, state["optimizer"])
            _set_rng_state(rng, data_gen, device)
            first = start_step
            saved = None
        elif stage_index > 0:
            best_value, best_step = math.inf, -1   # each stage selects its own best weights
        ema.eval()
        best_state: dict[str, Tensor] | None = None
        bar = tqdm(total=cfg.steps, initial=first, disable=not progress, dynamic_ncols=True,
                   desc=f"{model.name}" + (f" [{stage}]" if len(stages) > 1 else ""))
        metric, value, kind = "", math.nan, ""
        step = first
        try:
            for step in range(first, cfg.steps):
                global_step = stage_index * cfg.steps + step
                if stop_after is not None and global_step >= stop_after:
                    raise _Stop(step)
                lr = lr_at(step, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                idx = torch.randint(0, len(x_train), (cfg.batch_size,), generator=data_gen).to(device)
                model.train()
                try:
                    loss = model.loss(x_train[idx]) if y_train is None else model.loss(x_train[idx], labels=y_train[idx])
                except GenzooError as e:
                    raise GenzooError(f"training stopped at step {global_step + 1}: {e}") from e
                if not torch.isfinite(loss):
                    raise GenzooError(f"training stopped at step {global_step + 1}: the loss became {float(loss.detach())} "
                                      f"(not finite); try a lower --lr or a smaller --grad-clip.")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    if not torch.isfinite(gnorm):
                        raise GenzooError(f"training stopped at step {global_step + 1}: the gradient became non-finite; "
                                          f"try a lower --lr.")
                opt.step()
                decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                update_ema(ema, model, decay)
                images += cfg.batch_size
                loss_value = float(loss.detach())
                row: dict[str, Any] = {"global_step": global_step + 1, "stage": stage, "step": step + 1,
                                       "loss": loss_value, "lr": lr}
                done = step + 1
                if done % cfg.eval_every == 0 or done == cfg.steps:
                    metric, value, kind = validate(ema, val_data, cfg.val_batch_size, device)
                    row.update({metric: value, "kind": kind})
                    if value < best_value:
                        best_value, best_step = value, global_step + 1
                        best_state = {k: v.detach().clone() for k, v in ema.state_dict().items()}
                        run.save_best(ema, {**record, "best_step": best_step, "stage": stage, metric: value, "kind": kind})
                    row["best"] = best_value
                    run.log(row)
                    state = {"stage_index": stage_index, "stage": stage, "step": done, "global_step": global_step + 1,
                             "best_value": best_value, "best_step": best_step, "metric": metric,
                             "finished": stage_index == len(stages) - 1 and done == cfg.steps}
                    if done < cfg.steps:
                        run.save_state(model, ema, opt, state, _rng_state(data_gen, device), record)
                    else:
                        run.save_state(model, ema, opt, {**state, "stage_index": stage_index + 1, "step": 0},
                                       _rng_state(data_gen, device), record)
                elif done % 50 == 0:
                    run.log(row)
                if cfg.sample_every and run.path is not None and (done % cfg.sample_every == 0 or done == cfg.steps):
                    _write_samples(ema, run.path / "samples" / f"step_{global_step + 1:06d}.png", cfg.num_samples, cfg.seed)
                if done % 10 == 0 or done == cfg.steps:
                    post = {"loss": f"{loss_value:.4f}"}
                    if metric:
                        post[metric.replace("val_", "val ")] = f"{value:.4f}"
                    bar.set_postfix(post, refresh=False)
                bar.update(1)
        except _Stop:
            bar.close()
            result.steps = stage_index * cfg.steps + step
            return result
        except KeyboardInterrupt:
            bar.close()
            if run.path is not None:
                # progress since the last evaluation is dropped; the saved state is consistent
                raise GenzooError(f"interrupted; the run in {str(run.path)!r} is saved at its last evaluation, "
                                  f"continue it with --resume.") from None
            raise
        bar.close()
        # the next stage, and the caller, get this stage's best EMA weights
        if best_state is not None:
            model.load_state_dict(best_state)
        elif run.path is not None and (run.path / checkpoint.WEIGHTS_FILE).is_file() and best_step > 0:
            checkpoint.load_state(model, checkpoint.load_tensors(run.path / checkpoint.WEIGHTS_FILE), str(run.path))
        else:
            model.load_state_dict(ema.state_dict())
        result.history.append({"stage": stage, "best": best_value, "best_step": best_step, "metric": metric, "kind": kind})
        result.metric, result.kind = metric, kind
    result.best_value, result.best_step = best_value, best_step
    result.steps = total_steps
    result.seconds = time.time() - t_start
    result.images_per_second = images / max(result.seconds, 1e-9)
    model.eval()
    return result


class _Stop(Exception):
    pass
