"""`genzoo train`: the command line of genzoo.training.train.

The same command line is safe to repeat, as torchrun restarts and scheduler requeues repeat it:
with `--resume` it starts the run when `--out` holds no saved state, continues it exactly from its
saved state, and exits 0 at once when the run has finished (completing its final evaluation if
that was cut short). Flags given beside `--resume` must equal what the run records; a flag that
differs is refused in one sentence naming it and both values. A finished run trains on as a new
run started from its weights (`--init-from RUN`).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

from . import checkpoint, data, distributed, registry
from .errors import GenzooError
from .flags import Flags, Parser, dataclass_flags, flag
from .models.base import GenerativeModel
from .rundir import RunDirectory
from .training import (
    TrainConfig,
    data_record,
    finished_message,
    refuse_existing,
    resolve_device,
    train,
    train_config_for,
    train_defaults_for,
)

# flags a resumed run may change: where it runs and how it reports, not what it computes
FREE_ON_RESUME = ("device",)


def train_parser(cls: type[GenerativeModel] | None) -> tuple[Parser, Flags | None, Flags | None]:
    name = cls.name if cls else "MODEL"
    description = (cls.__doc__ or "").strip() if cls else (
        f"Train a model. MODEL is one of: {', '.join(registry.list_models())}. "
        "'genzoo train MODEL --help' shows its config fields and training options with its defaults.")
    parser = Parser(prog=f"genzoo train {name}", description=description)
    parser.add_argument("model", nargs="?", help="the model to train (default: the --config or --init-from run's)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="train the run a JSON file records: a run's config.json, or {model, config, data, root, "
                             "train}; flags given beside it override its fields")
    parser.add_argument("--init-from", default=None, metavar="RUN",
                        help="start from the best weights of the run (or saved model) RUN, its model and config "
                             "(flags override fields that keep the weights' shapes): to train a finished run on")
    parser.add_argument("--data", default=None, help="dataset name (default digits, or the --config/--init-from run's)")
    parser.add_argument("--root", default=None, help="directory of the dataset's files")
    parser.add_argument("--out", default=None, help="run directory (default runs/MODEL-DATA)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its saved state; start it when there is none; exit 0 "
                             "when it has finished. Flags given with it must equal the run's")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    if cls is None:
        return parser, None, None
    model_flags = dataclass_flags(parser, cls.Config, f"{name} config", "cfg")
    train_flags = dataclass_flags(parser, TrainConfig, f"training ({name}'s defaults)", "tc", train_defaults_for(cls))
    return parser, model_flags, train_flags


def read_run_file(path: str) -> dict[str, Any]:
    """A run to repeat, from a run's config.json or a JSON file with the same fields:
    {"model", "config", "data", "root", "train"} (a run's file keeps data, root and training options
    under "run")."""
    raw = checkpoint.read_json(path, "run file")
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), str):
        raise GenzooError(f"{path!r} must be a JSON object with at least a \"model\" name.")
    run = raw.get("run", {}) if isinstance(raw.get("run", {}), dict) else {}
    out = {"model": raw["model"], "config": raw.get("config", {}), "data": raw.get("data", run.get("data")),
           "root": raw.get("root", run.get("root")), "train": raw.get("train", run.get("train_config", {}))}
    for key, kind in (("config", dict), ("train", dict), ("data", (str, type(None))), ("root", (str, type(None)))):
        if not isinstance(out[key], kind):
            raise GenzooError(f"{key!r} in {path!r} has the wrong type: {type(out[key]).__name__}.")
    return out


def _init_source(directory: str) -> dict[str, Any]:
    """What --init-from takes from a run or saved model: as a run file, plus its weights' path."""
    meta = checkpoint.read_config(directory)
    run = meta.get("run", {}) if isinstance(meta.get("run", {}), dict) else {}
    weights = Path(directory) / checkpoint.WEIGHTS_FILE
    return {"model": meta["model"], "config": meta.get("config", {}), "data": run.get("data"), "root": run.get("root"),
            "train": {}, "weights": weights}


def _resolved(root: str | None) -> str | None:
    return str(Path(root).resolve()) if root else None


def _differences(recorded: Any, given: Any, keys: Sequence[str]) -> list[tuple[str, Any, Any]]:
    return [(k, getattr(recorded, k), getattr(given, k)) for k in keys if getattr(recorded, k) != getattr(given, k)]


def _check_same_run(args: argparse.Namespace, model: GenerativeModel, run: dict[str, Any], overrides: dict[str, Any],
                    train_overrides: dict[str, Any], source: dict[str, Any]) -> TrainConfig:
    """The training config of a run resumed by `args`: every flag given must equal what the run records
    (the identical command line is accepted); one sentence naming a flag that differs and both values."""
    given_config = registry.make_config(model.name, {**checkpoint.config_to_dict(model.config),
                                                      **source.get("config", {}), **overrides})
    diffs = _differences(model.config, given_config, [f.name for f in dataclasses.fields(model.config)])
    recorded_train = run.get("train_config", {})
    old = train_config_for(model, **recorded_train)
    new = train_config_for(model, **{**recorded_train, **source.get("train", {}), **train_overrides})
    diffs += _differences(old, new, [f.name for f in dataclasses.fields(TrainConfig) if f.name not in FREE_ON_RESUME])
    for key, given, recorded in (("data", args.given_data, run.get("data")),
                                 ("root", _resolved(args.root or source.get("root")), run.get("root")),
                                 ("init_from", _resolved(args.init_from), (run.get("init_from") or {}).get("run"))):
        if given is not None and given != recorded:
            diffs.append((key, recorded, given))
    if diffs:
        key, recorded_value, given_value = diffs[0]
        raise GenzooError(f"{flag(key)} is {given_value!r} here but {recorded_value!r} in the run in {args.out!r}; a "
                          f"resumed run keeps its settings: give the run's value or leave the flag out, or start a "
                          f"new run with another --out.")
    return train_config_for(model, **{**recorded_train, **{k: v for k, v in train_overrides.items() if k in FREE_ON_RESUME}})


def _setup(args: argparse.Namespace, name: str, overrides: dict[str, Any], train_overrides: dict[str, Any],
           source: dict[str, Any]) -> tuple[GenerativeModel, TrainConfig, dict[str, Any], tuple[data.Dataset, ...]]:
    """The model, training config, run record and (train, val, test) data, every one of them checked
    before the run directory is written."""
    out = RunDirectory(args.out)
    saved = out.read_state()
    if saved is not None and not args.resume:
        refuse_existing(out.path, saved, name)
    if saved is not None:
        model, state = out.load_model()
        if model.name != name:
            raise GenzooError(f"the run in {args.out!r} trains {model.name!r}, not {name!r}.")
        record = state["config"].get("run", {})
        cfg = _check_same_run(args, model, record, overrides, train_overrides, source)
        args.data, args.root = record.get("data") or args.data, record.get("root")
    else:
        cfg = train_config_for(registry.model_class(name), **{**source.get("train", {}), **train_overrides})
    splits = tuple(data.load(args.data, split, args.root) for split in ("train", "val", "test"))
    if saved is not None:
        if model.spec != splits[0].spec:
            raise GenzooError(f"the data in {args.data!r} no longer match the run's spec.")
        return model, cfg, record, splits
    model = registry.create(name, splits[0].spec, seed=cfg.seed, **{**source.get("config", {}), **overrides})
    record = data_record(splits[0], _resolved(args.root))
    if "weights" in source:
        checkpoint.load_state(model, source["weights"])
        digest = hashlib.sha256(source["weights"].read_bytes()).hexdigest()
        record["init_from"] = {"run": _resolved(args.init_from), "sha256": digest}
    return model, cfg, record, splits


def cmd_train(argv: Sequence[str]) -> int:
    pre = Parser(add_help=False)
    pre.add_argument("--config", default=None)
    pre.add_argument("--init-from", default=None)
    known = pre.parse_known_args(argv)[0]
    if known.config and known.init_from:
        raise GenzooError("give --config or --init-from, not both.")
    source = read_run_file(known.config) if known.config else _init_source(known.init_from) if known.init_from else {}
    given = argv[0] if argv and not argv[0].startswith("-") else None  # MODEL comes first
    name = given or source.get("model")
    if name is None:
        if any(a in ("-h", "--help") for a in argv):
            train_parser(None)[0].print_help()
            return 0
        raise GenzooError(f"genzoo train needs a model name; choose one of {', '.join(registry.list_models())}.")
    if source and name != source["model"]:
        raise GenzooError(f"the {'--config file' if known.config else '--init-from run'} trains {source['model']!r}, "
                          f"not {name!r}.")
    parser, model_flags, train_flags = train_parser(registry.model_class(name))
    args = parser.parse_args(argv)
    given_data = args.data
    args.data = args.data or source.get("data") or "digits"
    if args.root is None and args.data == source.get("data"):
        args.root = source.get("root")
    args.out = args.out or f"runs/{name}-{args.data}"
    args.given_data = given_data or source.get("data")  # a resumed run checks what was given against its own
    model, cfg, record, (train_data, val_data, test_data) = _setup(
        args, name, model_flags.values(args), train_flags.values(args), source)
    out = Path(args.out)
    main = distributed.env_rank() == 0  # under torchrun, rank 0 alone reports and writes
    if main and not (RunDirectory(out).read_state() or {}).get("finished"):
        print(f"training {name} on {args.data} ({len(train_data)} train / {len(val_data)} val images, "
              f"{sum(p.numel() for p in model.parameters()):,} parameters, seed {cfg.seed}) -> {out}", file=sys.stderr)
    try:
        result = train(model, train_data, val_data, cfg, out=out, progress=not args.no_progress,
                       resume=args.resume, record=record)
    finally:
        distributed.shutdown()
    if not main:
        return 0
    if result.already_finished:
        print(finished_message(out, result.total_steps, name) + ".", file=sys.stderr)
        if (out / "summary.json").is_file():
            summary = checkpoint.read_json(out / "summary.json", "run summary")
            if isinstance(summary, dict) and isinstance(summary.get("final_line"), str):
                print(summary["final_line"])
            return 0
    final_report(out, name, args.data, cfg, result, train_data, test_data, progress=not args.no_progress)
    return 0


def final_report(out: Path, name: str, data_name: str, cfg: TrainConfig, result: Any, train_data: data.Dataset,
                 test_data: data.Dataset, progress: bool) -> None:
    """The end of a run: its figure on the test split in one plain sentence, the sample grid, and
    summary.json (written last, so that a run cut short here completes it when repeated)."""
    from .evaluate import describe_bits_per_dim, evaluate
    from .viz import save_grid

    best = checkpoint.load(out).to(resolve_device(cfg.device))
    summary: dict[str, Any] = {"model": name, "data": data_name, "out": str(out), "seed": cfg.seed,
                               "best_step": result.best_step, result.metric or "best": result.best_value}
    # the figure is the validation objective on the test split: an estimate with its error;
    # `genzoo eval` computes the full likelihood
    report = evaluate(best, test_data, cfg.val_batch_size, seed=cfg.seed, objective="validation", progress=progress)
    if "bits_per_dim" in report:
        summary.update({"test_bpd": report["bits_per_dim"], "test_bpd_se": report["bits_per_dim_se"],
                        "kind": report["kind"], "estimate": report["estimate"]})
        line = f"test bits/dim: {describe_bits_per_dim(report)}."
    else:
        metrics = [f"{k} {v:.4f}" for k, v in report.items() if isinstance(v, float)]
        line = (f"test metrics: {', '.join(metrics)} ({name} has no likelihood)." if metrics else
                f"test: {name} has no likelihood and no task metrics; its validation loss was {result.best_value:.4f}.")
    summary["test_metrics"] = {k: v for k, v in report.items()
                               if k not in ("bits_per_dim", "bits_per_dim_se", "kind", "estimate")}
    print(line)
    summary["final_line"] = line
    if cfg.grid_size and not best.conditional:
        print(f"drawing a grid of {cfg.grid_size} samples ...", file=sys.stderr)
        g = torch.Generator(device=best.device).manual_seed(cfg.seed)
        save_grid(best.sample(cfg.grid_size, generator=g, **best.quick_sample_options), best.spec, out / "samples.png",
                  reference=train_data.x)
        summary["samples"] = str(out / "samples.png")
        drawn = ", ".join(f"{k}={v}" for k, v in best.quick_sample_options.items()) or "the default sampler"
        print(f"samples: {out / 'samples.png'} ({drawn}; genzoo sample draws with any sampler)")
    checkpoint.atomic_write_json(out / "summary.json", summary)

