"""The genzoo command line: list, train, sample, eval (and more as families add them).

    genzoo list
    genzoo train MODEL --data digits [--root DIR] [--steps N] [--out DIR] [--resume] [--config-field value ...]
    genzoo sample DIR [--n 64] [--out grid.png] [--temperature 0.9 ...]   # options go to model.sample
    genzoo eval DIR [--data NAME] [--root DIR] [--split test] [--num-samples 512 ...]
    genzoo compare [--data NAME] [--models a,b,...] [--steps N] [--runs DIR ...]
    genzoo diffuse [--data NAME] [--out DIR]

Config flags are built from each model's config dataclass and from TrainConfig. Anything a user
can get wrong ends in one sentence on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import typing
from pathlib import Path

try:
    from types import UnionType  # `int | None` annotations
except ImportError:  # Python < 3.10
    UnionType = None
from typing import Any, Callable, Sequence

import torch

from . import checkpoint, data, registry
from .errors import GenzooError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one sentence, no usage dump
        if message.startswith("unrecognized arguments:"):
            extra = message.split(":", 1)[1].strip()
            raise GenzooError(f"unknown option {extra}; '{self.prog} --help' lists the options.")
        raise GenzooError(message or "bad arguments")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def converter(annotation: Any, what: str) -> Callable[[str], Any]:
    """A str -> value function for a type annotation: int, float, bool, str, Literal, tuple[...]."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (UnionType is not None and origin is UnionType):
        inner = [a for a in args if a is not type(None)]
        base = converter(inner[0], what) if len(inner) == 1 else str

        def optional(text: str) -> Any:
            return None if text.lower() in ("none", "null") else base(text)
        return optional
    if origin is typing.Literal:
        def literal(text: str) -> Any:
            for choice in args:
                if str(choice) == text:
                    return choice
            raise ValueError(f"choose one of {', '.join(map(str, args))}")
        return literal
    if origin in (tuple, list):
        item = converter(args[0] if args else str, what)
        return lambda text: tuple(item(t) for t in text.split(",") if t.strip())
    if annotation is bool:
        return _parse_bool
    if annotation is int:
        def integer(text: str) -> int:
            try:
                return int(text)
            except ValueError:
                raise ValueError("expected an integer") from None
        return integer
    if annotation is float:
        def number(text: str) -> float:
            try:
                return float(text)
            except ValueError:
                raise ValueError("expected a number") from None
        return number
    return str


def _convert(conv: Callable[[str], Any], text: str, what: str) -> Any:
    try:
        return conv(text)
    except (ValueError, TypeError) as e:
        raise GenzooError(f"bad value {text!r} for {what}: {e}.") from None


def _dataclass_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> list[str]:
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    names = []
    for f in dataclasses.fields(cls):
        conv = converter(hints[f.name], _flag(f.name))
        group.add_argument(_flag(f.name), dest=f"cfg__{f.name}", type=str, default=None, metavar="VALUE",
                           help=f"default {f.default!r}" if f.default is not dataclasses.MISSING else None)
        names.append(f.name)
        setattr(parser, f"_conv_{f.name}", conv)
    return names


def _collect(args: argparse.Namespace, parser: argparse.ArgumentParser, names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        text = getattr(args, f"cfg__{name}", None)
        if text is not None:
            out[name] = _convert(getattr(parser, f"_conv_{name}"), text, _flag(name))
    return out


def parse_options(tokens: Sequence[str]) -> dict[str, str | bool]:
    """`--key value`, `--flag` (True) and `--no-flag` (False) into a dict with underscores."""
    out: dict[str, str | bool] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) < 3:
            raise GenzooError(f"unexpected argument {tok!r}; options look like --name value.")
        key = tok[2:]
        if "=" in key:
            key, value = key.split("=", 1)
            out[key.replace("-", "_")] = value
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            out[key.replace("-", "_")] = tokens[i + 1]
            i += 1
        elif key.startswith("no-"):
            out[key[3:].replace("-", "_")] = False
        else:
            out[key.replace("-", "_")] = True
        i += 1
    return out


def route_options(options: dict[str, str | bool], targets: dict[str, Callable[..., Any]],
                  skip: tuple[str, ...] = ("self", "n", "x", "generator", "data", "out_dir")) -> dict[str, dict[str, Any]]:
    """Send each option to the callables whose signature has it, converting by annotation."""
    routed: dict[str, dict[str, Any]] = {name: {} for name in targets}
    for key, raw in options.items():
        placed = False
        for name, fn in targets.items():
            if fn is None:
                continue
            params = inspect.signature(fn).parameters
            if key in params and key not in skip:
                try:
                    hints = typing.get_type_hints(fn)
                except Exception:
                    hints = {}
                ann = hints.get(key, str)
                value = raw if isinstance(raw, bool) else _convert(converter(ann, _flag(key)), raw, _flag(key))
                if isinstance(raw, bool) and ann is not bool and bool not in typing.get_args(ann):
                    raise GenzooError(f"{_flag(key)} needs a value.")
                routed[name][key] = value
                placed = True
        if not placed:
            avail = sorted({p for fn in targets.values() if fn is not None
                            for p in inspect.signature(fn).parameters if p not in skip and p != "kwargs" and p != "options"})
            raise GenzooError(f"unknown option {_flag(key)}; this model accepts: {', '.join(_flag(a) for a in avail) or 'none'}.")
    return routed


# -- commands ---------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    print("models:")
    for name in registry.list_models():
        cls = registry.model_class(name)
        kind = "likelihood" if callable(getattr(cls, "log_likelihood", None)) else "no likelihood"
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"  {name:<16} {kind:<14} {doc}")
    print("datasets:")
    for name in data.names():
        print(f"  {name}")
    return 0


def _run_record(args: argparse.Namespace, train_data: data.Dataset) -> dict[str, Any]:
    root = str(Path(args.root).resolve()) if args.root else None
    return {"data": args.data, "root": root, "split": "train", "val_split": "val",
            "data_info": train_data.info, "spec": train_data.spec.to_dict()}


def cmd_train(argv: Sequence[str]) -> int:
    from .train import TrainConfig, train, train_config_for
    from .viz import save_grid

    pre = _Parser(prog="genzoo train", add_help=False)
    pre.add_argument("model", nargs="?")
    known, _ = pre.parse_known_args(argv)
    if known.model is None or known.model.startswith("-"):
        raise GenzooError(f"genzoo train needs a model name; choose one of {', '.join(registry.list_models())}.")
    cls = registry.model_class(known.model)

    parser = _Parser(prog=f"genzoo train {known.model}", description=(cls.__doc__ or "").strip())
    parser.add_argument("model")
    parser.add_argument("--data", default="digits", help="dataset name (default digits)")
    parser.add_argument("--root", default=None, help="directory of the dataset's files")
    parser.add_argument("--out", default=None, help="run directory (default runs/MODEL-DATA)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last state")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    model_fields = _dataclass_flags(parser, cls.Config, f"{known.model} config")
    train_fields = _dataclass_flags(parser, TrainConfig, "training")
    args = parser.parse_args(argv)
    overrides = _collect(args, parser, model_fields)
    train_overrides = _collect(args, parser, train_fields)
    out = Path(args.out or f"runs/{args.model}-{args.data}")

    if args.resume:
        meta = checkpoint.read_config(out / "last")
        if meta["model"] != args.model:
            raise GenzooError(f"the run in {str(out)!r} trains {meta['model']!r}, not {args.model!r}.")
        if overrides or {k for k in train_overrides if k != "device"}:
            raise GenzooError("a resumed run keeps its own configuration; pass only --out, --resume, --device and --no-progress.")
        record = meta.get("run", {})
        args.data, args.root = record.get("data", args.data), record.get("root")
        model = checkpoint.build_from_config(meta)
        tc = dict(record.get("train_config", {}))
        tc.update(train_overrides)
        cfg = TrainConfig(**tc)
    else:
        if (out / "last" / "state.json").is_file() or (out / checkpoint.CONFIG_FILE).is_file():
            raise GenzooError(f"{str(out)!r} already holds a run; continue it with --resume or choose another --out.")
        model = None
        cfg = None
    train_data = data.load(args.data, "train", args.root)
    val_data = data.load(args.data, "val", args.root)
    if model is None:
        model = registry.create(args.model, train_data.spec, **overrides)
        cfg = train_config_for(model, **train_overrides)
        record = _run_record(args, train_data)
    elif model.spec != train_data.spec:
        raise GenzooError(f"the data in {args.data!r} no longer matches the run's spec.")
    print(f"training {args.model} on {args.data} ({len(train_data)} train / {len(val_data)} val images, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters) -> {out}", file=sys.stderr)
    result = train(model, train_data, val_data, cfg, out_dir=out, progress=not args.no_progress,
                   resume=args.resume, record=record)
    best = checkpoint.load(out)
    test_data = data.load(args.data, "test", args.root)
    summary: dict[str, Any] = {"model": args.model, "data": args.data, "out": str(out),
                               "best_step": result.best_step, result.metric: result.best_value}
    from .evaluate import bits_per_dim, has_likelihood
    device = next(iter(model.parameters())).device
    best.to(device)
    if has_likelihood(best):
        bpd = bits_per_dim(best, test_data.x.to(device), cfg.val_batch_size)
        summary.update({"test_bpd": bpd.value, "kind": bpd.kind})
        print(f"test bits/dim: {bpd.value:.4f} ({bpd.kind.replace('_', ' ')})")
    if cfg.num_samples and not getattr(best, "conditional", False):
        g = torch.Generator(device=device).manual_seed(cfg.seed)
        save_grid(best.sample(cfg.num_samples, generator=g), best.spec, out / "samples.png")
        summary["samples"] = str(out / "samples.png")
        print(f"samples: {out / 'samples.png'}")
    checkpoint.atomic_write_json(out / "summary.json", summary)
    return 0


def _run_data(meta: dict[str, Any], name: str | None, root: str | None, split: str) -> data.Dataset:
    record = meta.get("run", {})
    name = name or record.get("data")
    if not name:
        raise GenzooError("this checkpoint does not record its dataset; pass --data NAME (and --root DIR).")
    ds = data.load(name, split, root if root is not None else (record.get("root") if name == record.get("data") else None))
    return ds


def _load_run(directory: str, device: str) -> tuple[torch.nn.Module, dict[str, Any], torch.device]:
    from .train import resolve_device

    meta = checkpoint.read_config(directory)
    model = checkpoint.load(directory)
    dev = resolve_device(device)
    return model.to(dev), meta, dev


def cmd_sample(argv: Sequence[str]) -> int:
    from .viz import save_grid

    parser = _Parser(prog="genzoo sample", description="Draw samples from a trained model and write a PNG grid.")
    parser.add_argument("dir")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--out", default=None, help="PNG path (default DIR/samples/sample.png)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", default=None, help="dataset for figures that need data (default: the run's)")
    parser.add_argument("--root", default=None)
    args, rest = parser.parse_known_args(argv)
    if args.n < 1:
        raise GenzooError(f"--n must be a positive integer, got {args.n}.")
    model, meta, dev = _load_run(args.dir, args.device)
    visualize = getattr(model, "visualize", None)
    routed = route_options(parse_options(rest), {"sample": model.sample, "visualize": visualize})
    out = Path(args.out) if args.out else Path(args.dir) / "samples" / "sample.png"
    if out.suffix.lower() != ".png":
        raise GenzooError(f"--out must name a .png file, got {str(out)!r}.")
    g = torch.Generator(device=dev).manual_seed(args.seed)
    if not getattr(model, "conditional", False):  # conditional models draw only given an input: see visualize
        x = model.sample(args.n, generator=g, **routed["sample"])
        save_grid(x, model.spec, out)
        print(f"wrote {out}")
    if callable(visualize):
        ds = _run_data(meta, args.data, args.root, "test")
        for path in visualize(out.parent, ds, torch.Generator(device=dev).manual_seed(args.seed), **routed["visualize"]):
            print(f"wrote {path}")
    return 0


def cmd_eval(argv: Sequence[str]) -> int:
    from .evaluate import bits_per_dim, has_likelihood

    parser = _Parser(prog="genzoo eval", description="Bits/dim (with its kind) and task metrics of a trained model.")
    parser.add_argument("dir")
    parser.add_argument("--data", default=None)
    parser.add_argument("--root", default=None)
    parser.add_argument("--split", default="test", choices=list(data.SPLITS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args, rest = parser.parse_known_args(argv)
    model, meta, dev = _load_run(args.dir, args.device)
    ds = _run_data(meta, args.data, args.root, args.split)
    if ds.spec != model.spec:
        raise GenzooError(f"dataset {ds.name!r} has spec {ds.spec} but the model was trained for {model.spec}.")
    ll = getattr(model, "log_likelihood", None)
    tm = getattr(model, "task_metrics", None)
    routed = route_options(parse_options(rest), {"log_likelihood": ll, "task_metrics": tm})
    torch.manual_seed(args.seed)
    report: dict[str, Any] = {"model": meta["model"], "data": ds.name, "split": args.split, "images": len(ds)}
    if callable(ll):
        bpd = bits_per_dim(model, ds.x.to(dev), args.batch_size, labels=ds.labels, **routed["log_likelihood"])
        report.update({"bits_per_dim": bpd.value, "kind": bpd.kind, **routed["log_likelihood"]})
    if callable(tm):
        g = torch.Generator(device=dev).manual_seed(args.seed)
        with torch.no_grad():
            report.update(tm(ds, g, **routed["task_metrics"]))
    if args.json:
        print(json.dumps(report))
    else:
        if "bits_per_dim" in report:
            print(f"{args.split} bits/dim: {report['bits_per_dim']:.4f} ({report['kind'].replace('_', ' ')})")
        for key, value in report.items():
            if key not in ("bits_per_dim", "kind", "model", "data", "split"):
                print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def _module_command(module_name: str, prog: str, description: str, argv: Sequence[str]) -> int:
    """A command that lives in its own module with add_arguments(parser) and run(args)."""
    import importlib

    module = importlib.import_module(module_name)
    parser = _Parser(prog=prog, description=description)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)


EXTRA_COMMANDS = {
    "compare": ("genzoo.compare", "Every family on the same data: one table and a report."),
    "diffuse": ("genzoo.diffuse", "PNGs of the forward diffusion process q(x_t | x_0) at several t."),
}
COMMANDS = ("list", "train", "sample", "eval", *EXTRA_COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(__doc__.strip())
            return 0 if argv else 2
        command, rest = argv[0], argv[1:]
        if command == "list":
            return cmd_list(argparse.Namespace())
        if command == "train":
            return cmd_train(rest)
        if command == "sample":
            return cmd_sample(rest)
        if command == "eval":
            return cmd_eval(rest)
        if command in EXTRA_COMMANDS:
            module_name, description = EXTRA_COMMANDS[command]
            return _module_command(module_name, f"genzoo {command}", description, rest)
        raise GenzooError(f"unknown command {command!r}; choose one of {', '.join(COMMANDS)}.")
    except GenzooError as e:
        print(f"genzoo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genzoo: interrupted.", file=sys.stderr)
        return 130
    except OSError as e:
        where = f" {e.filename!r}" if getattr(e, "filename", None) else ""
        print(f"genzoo: error: cannot use{where}: {e.strerror or e}.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
