"""genzoo: a generative model zoo for PyTorch.

usage:
    genzoo list                                           models (with plugins) and datasets
    genzoo train MODEL [--data digits] [--root DIR] [--out DIR] [--resume] [--FIELD VALUE ...]
    genzoo sample DIR [--n 64] [--out grid.png] [model options: --temperature, --sampler, ...]
    genzoo eval DIR [--data NAME] [--root DIR] [--split test] [model options: --num-samples, ...]
    genzoo inpaint DIR [--mask bottom|top|left|right|center|random:F|MASK.png] [--from-test N | --image PNG]
    genzoo edit DIR [--strength 0.5] [--from-test N | --image PNG] [model options: --sampler, --steps, ...]
    genzoo compare [--data NAME] [--models a,b,...] [--budget seconds|flops|default] [--runs DIR ...]
    genzoo report DIR [--out DIR]
    genzoo diffuse [--data NAME] [--out DIR]
    genzoo explore DIR [DIR ...] [--host 127.0.0.1] [--port N]   a local web page (the explore extra)
    genzoo --version

`genzoo COMMAND --help` lists a command's options; `genzoo train MODEL --help` shows every config
field and training option with the model's own defaults.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import __version__, checkpoint, data, registry
from .data.spec import DataSpec
from .errors import INSTALL, GenzooError, Interrupted, out_of_memory, require
from .flags import Parser, flag, option_flags, route
from .models.base import GenerativeModel
from .train_command import cmd_train


# -- commands ---------------------------------------------------------------------------------
def cmd_list(argv: Sequence[str]) -> int:
    print("models:")
    for name in registry.list_models():
        cls = registry.model_class(name)
        kind = "likelihood" if cls.has_likelihood else "no likelihood"
        print(f"  {name:<16} {kind:<14} {cls.description}")
    print("datasets:")
    for name in data.names():
        print(f"  {name}")
    return 0


def run_data(meta: dict[str, Any], name: str | None, root: str | None, split: str) -> data.Dataset:
    """The dataset a run was trained on (or `name`), split `split`. The spec the run records is
    checked against the model's before any data are read."""
    record = meta.get("run", {}) if isinstance(meta.get("run", {}), dict) else {}
    name = name or record.get("data")
    if not isinstance(name, str) or not name:
        raise GenzooError("this checkpoint does not record its dataset; pass --data NAME (and --root DIR).")
    if name == record.get("data") and "spec" in record:
        recorded, model_spec = DataSpec.from_dict(record["spec"]), DataSpec.from_dict(meta["spec"])
        if recorded != model_spec:
            raise GenzooError(f"the run records data of spec {recorded} but its model is built for {model_spec}.")
    if root is None and name == record.get("data"):
        root = record.get("root")
        if root is not None and not isinstance(root, str):
            raise GenzooError(f"the run records a data root that is not a path: {root!r}.")
    ds = data.load(name, split, root)
    if ds.spec != DataSpec.from_dict(meta["spec"]):
        raise GenzooError(f"dataset {ds.name!r} has spec {ds.spec} but the model was trained for "
                          f"{DataSpec.from_dict(meta['spec'])}.")
    return ds


def _run_parser(prog: str, description: str, argv: Sequence[str], methods: Sequence[str],
                own: Callable[[Parser], None]) -> tuple[argparse.Namespace, dict[str, dict[str, Any]], dict[str, Any]] | None:
    """Parse a command on a run directory: its own flags, then the model's options of `methods`
    (None after printing the help of a command given no run directory)."""
    pre = Parser(add_help=False)
    pre.add_argument("dir", nargs="?")
    own(pre)
    directory = pre.parse_known_args(argv)[0].dir
    meta = checkpoint.read_config(directory) if directory else None
    parser = Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", help="a run directory (genzoo train --out) or a saved model")
    own(parser)
    taken = {a.dest for a in parser._actions}
    if meta is None:  # --help without a run: every model's options, by model
        lines = ["model options (given a run, its model's options are listed with their defaults):"]
        for name in registry.list_models():
            cls = registry.model_class(name)
            opts = {o.name: o for m in methods for o in cls.options(m) if o.name not in taken}
            lines.append(f"  {name:<16} " + (", ".join(f"{flag(o.name)} ({o.default!r})" for o in opts.values()) or "none"))
        parser.epilog = "\n".join(lines)
        if any(a in ("-h", "--help") for a in argv):
            parser.print_help()
            return None
        raise GenzooError(f"{prog} needs a run directory.")
    flags, where = option_flags(parser, registry.model_class(meta["model"]), methods, taken)
    args = parser.parse_args(argv)
    return args, route(flags.values(args), where, methods), meta


def _load_run(directory: str, device: str) -> GenerativeModel:
    from .training import resolve_device

    return checkpoint.load(directory).to(resolve_device(device))


def cmd_sample(argv: Sequence[str]) -> int:
    from .viz import save_figure, save_grid

    def own(parser: Parser) -> None:
        parser.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
        parser.add_argument("--out", default=None, help="PNG path (default DIR/samples/sample.png)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--device", default="auto")
        parser.add_argument("--data", default=None, help="dataset for figures that need data (default: the run's)")
        parser.add_argument("--root", default=None)
        parser.add_argument("--trajectory", default=None, metavar="FILE.gif",
                            help="also write the sampler's intermediate states as an animated GIF and a PNG strip")

    parsed = _run_parser("genzoo sample", "Draw samples from a trained model and write a PNG grid, "
                         "and the model's own figures beside it.", argv, ("sample", "figures"), own)
    if parsed is None:
        return 0
    args, routed, meta = parsed
    if args.n < 1:
        raise GenzooError(f"--n must be a positive integer, got {args.n}.")
    registry.check_seed(args.seed)
    out = Path(args.out) if args.out else Path(args.dir) / "samples" / "sample.png"
    if out.suffix.lower() != ".png":
        raise GenzooError(f"--out must name a .png file, got {str(out)!r}.")
    model = _load_run(args.dir, args.device)
    frames: list[torch.Tensor] = []
    if args.trajectory:
        import inspect

        if not args.trajectory.lower().endswith(".gif"):
            raise GenzooError(f"--trajectory must name a .gif file, got {args.trajectory!r}.")
        if model.conditional or "callback" not in inspect.signature(model.sample).parameters:
            raise GenzooError(f"model {model.name!r} does not report its sampler's intermediate states yet.")
        routed["sample"]["callback"] = lambda state: frames.append(state["x"].cpu())
    ds = run_data(meta, args.data, args.root, "test")
    if not model.conditional:  # conditional models draw only given an input: see figures
        g = torch.Generator(device=model.device).manual_seed(args.seed)
        t0 = time.perf_counter()
        x = model.sample(args.n, generator=g, **routed["sample"])
        seconds, stats = time.perf_counter() - t0, model.sample_stats()
        save_grid(x, model.spec, out, reference=ds.x)
        print(f"wrote {out}")
        print(f"sampled {args.n} in {seconds:.2f} s" + (f", {stats.nfe} network evaluations ({stats.sampler})" if stats else ""))
        if frames:
            from .viz import save_trajectory

            gif, strip = save_trajectory(frames, model.spec, args.trajectory)
            print(f"wrote {gif} ({len(frames)} states) and {strip}")
    figures = model.figures(ds, torch.Generator(device=model.device).manual_seed(args.seed), **routed["figures"])
    for name, figure in figures.items():
        print(f"wrote {save_figure(figure, model.spec, out.parent / f'{name}.png')}")
    return 0


def cmd_eval(argv: Sequence[str]) -> int:
    from .evaluate import describe_bits_per_dim, evaluate

    def own(parser: Parser) -> None:
        parser.add_argument("--data", default=None, help="dataset (default: the run's)")
        parser.add_argument("--root", default=None)
        parser.add_argument("--split", default="test", choices=list(data.SPLITS))
        parser.add_argument("--batch-size", type=int, default=256)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--device", default="auto")
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    parsed = _run_parser("genzoo eval", "Bits/dim (with its kind) and task metrics of a trained model.",
                         argv, ("log_likelihood", "task_metrics"), own)
    if parsed is None:
        return 0
    args, routed, meta = parsed
    if args.batch_size < 1:
        raise GenzooError(f"--batch-size must be a positive integer, got {args.batch_size}.")
    registry.check_seed(args.seed)
    model = _load_run(args.dir, args.device)
    ds = run_data(meta, args.data, args.root, args.split)
    report: dict[str, Any] = {"model": meta["model"], "data": ds.name, "split": args.split, "images": len(ds)}
    report.update(evaluate(model, ds, args.batch_size, args.seed, routed["log_likelihood"], routed["task_metrics"],
                           progress=not (args.no_progress or args.json)))
    if args.json:
        print(json.dumps(report))
        return 0
    if "bits_per_dim" in report:
        print(f"{args.split} bits/dim: {describe_bits_per_dim(report)}")
    for key, value in report.items():
        if key not in ("bits_per_dim", "bits_per_dim_se", "kind", "estimate", "estimator_se", "model", "data", "split"):
            print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    return 0


def _image_flags(parser: Parser, what: str) -> None:
    """The flags of a command that transforms images: the test images or a file, the output, the seed."""
    parser.add_argument("--from-test", type=int, default=8, metavar="N", help=f"{what} the first N test images")
    parser.add_argument("--image", default=None, help=f"{what} this PNG or JPEG instead (resized, quantized)")
    parser.add_argument("--out", default=f"{what}.png", help="PNG of the originals above the results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data", default=None, help="dataset of --from-test (default: the run's)")
    parser.add_argument("--root", default=None)


def _image_command(argv: Sequence[str], hook: str, description: str, own: Callable[[Parser], None]):
    """Parse a command that runs `hook` (inpaint, edit) of a run's model on images; returns the parsed
    flags, the model's options, the model, the images and their labels (None after --help)."""
    models = [n for n in registry.list_models() if getattr(registry.model_class(n), hook) is not getattr(
        GenerativeModel, hook)]
    parsed = _run_parser(f"genzoo {hook}", f"{description} Models that {hook}: {', '.join(models)}.", argv, (hook,), own)
    if parsed is None:
        return None
    args, routed, meta = parsed
    registry.check_seed(args.seed)
    model = _load_run(args.dir, args.device)
    if getattr(type(model), hook) is getattr(GenerativeModel, hook):
        raise GenzooError(f"model {model.name!r} does not {hook}; the models that do: {', '.join(models)}.")
    labels = None
    if args.image:
        from .data.folder import read_image

        if model.spec.height != model.spec.width:
            raise GenzooError("--image needs a model of square images; use --from-test.")
        pixels = read_image(Path(args.image), model.spec.height, model.spec.channels == 1)
        x = (torch.from_numpy(pixels).long() * model.spec.levels // 256).unsqueeze(0)
    else:
        ds = run_data(meta, args.data, args.root, "test")
        if not 1 <= args.from_test <= len(ds):
            raise GenzooError(f"--from-test must be from 1 to the {len(ds)} test images, got {args.from_test}.")
        x, labels = ds.x[:args.from_test], None if ds.labels is None else ds.labels[:args.from_test].to(model.device)
    return args, routed[hook], model, model.check_input(x), labels


def cmd_edit(argv: Sequence[str]) -> int:
    from .models.base import ImageRows
    from .viz import save_figure

    def own(parser: Parser) -> None:
        parser.add_argument("--strength", type=float, default=0.5, help="noise level in [0, 1] (default 0.5)")
        _image_flags(parser, "edit")

    parsed = _image_command(argv, "edit", "SDEdit: take images to a noise level and back with a trained model.", own)
    if parsed is None:
        return 0
    args, options, model, x, labels = parsed
    t0 = time.perf_counter()
    extra = {"labels": labels} if model.num_classes and labels is not None else {}
    out = model.edit(x, args.strength, generator=torch.Generator(device=model.device).manual_seed(args.seed),
                     **extra, **options)
    seconds, stats = time.perf_counter() - t0, model.sample_stats()
    path = save_figure(ImageRows((x.cpu(), out.cpu()), ("original", f"strength {args.strength:g}")), model.spec,
                       Path(args.out))
    print(f"wrote {path}")
    print(f"edited {len(x)} in {seconds:.2f} s" + (f" by {stats.sampler}, {stats.nfe} network evaluations" if stats else ""))
    return 0


def cmd_inpaint(argv: Sequence[str]) -> int:
    from .masks import NAMES, known_mask
    from .models.base import ImageRows
    from .viz import save_figure

    def own(parser: Parser) -> None:
        parser.add_argument("--mask", default="bottom", help=f"the region to fill: {', '.join(NAMES)} (default bottom)")
        _image_flags(parser, "inpaint")

    parsed = _image_command(argv, "inpaint", "Complete the masked part of images with a trained model.", own)
    if parsed is None:
        return 0
    args, options, model, x, labels = parsed
    routed = {"inpaint": options}
    g = torch.Generator(device=model.device).manual_seed(args.seed)
    known = known_mask(args.mask, model.spec, len(x), torch.Generator().manual_seed(args.seed)).to(model.device)
    t0 = time.perf_counter()
    out = model.inpaint(x, known, generator=g, labels=labels if model.num_classes else None, **routed["inpaint"])
    seconds, stats = time.perf_counter() - t0, model.sample_stats()
    shown = torch.where(known, x, torch.zeros_like(x))
    path = save_figure(ImageRows((x.cpu(), shown.cpu(), out.cpu()), ("original", "given", "completed")), model.spec,
                       Path(args.out))
    print(f"wrote {path}")
    print(f"inpainted {len(x)} in {seconds:.2f} s" + (f" by {stats.sampler}, {stats.nfe} network passes" if stats else ""))
    if hasattr(model, "log_likelihood_given") and args.image is None:
        from .models.autoregressive.inpaint import raster_suffix

        if raster_suffix(known):
            nats = model.log_likelihood_given(x, known, **({"labels": labels} if model.num_classes else {})).nats
            dims = int((~known).sum())
            print(f"bits/dim of the true unknown sub-pixels given the known ones: {float(-nats.sum()) / dims / math.log(2):.4f} "
                  f"(exact, over {dims} sub-pixels)")
    return 0


def _module_command(module_name: str, prog: str, description: str, argv: Sequence[str]) -> int:
    """A command that lives in its own module with add_arguments(parser) and run(args)."""
    import importlib

    module = importlib.import_module(module_name)
    require(getattr(module, "REQUIRES", ()), prog, getattr(module, "INSTALL", INSTALL))  # before any work
    parser = Parser(prog=prog, description=description)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)) or 0)


EXTRA_COMMANDS = {
    "compare": ("genzoo.compare", "Every family on the same data: one table and a report."),
    "diffuse": ("genzoo.diffuse", "PNGs of the forward diffusion process q(x_t | x_0) at several t."),
    "explore": ("genzoo.explore", "A local web page to play with trained runs (the explore extra)."),
    "report": ("genzoo.report", "A model card of one run: report.html (offline) and report.md."),
}
COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"list": cmd_list, "train": cmd_train, "sample": cmd_sample,
                                                       "eval": cmd_eval, "inpaint": cmd_inpaint,
                                                       "edit": cmd_edit}


def _error(message: str) -> None:
    """One line on stderr, on a line of its own even when a progress bar was being drawn."""
    print("\n" + message if sys.stderr.isatty() else message, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(__doc__.strip())
            return 0
        if argv[0] in ("-V", "--version"):
            print(f"genzoo {__version__} (torch {torch.__version__})")
            return 0
        command, rest = argv[0], argv[1:]
        if command in COMMANDS:
            return COMMANDS[command](rest)
        if command in EXTRA_COMMANDS:
            module_name, description = EXTRA_COMMANDS[command]
            return _module_command(module_name, f"genzoo {command}", description, rest)
        raise GenzooError(f"unknown command {command!r}; choose one of {', '.join([*COMMANDS, *EXTRA_COMMANDS])}.")
    except Interrupted as e:
        _error(f"genzoo: {e}")
        return 130
    except GenzooError as e:
        _error(f"genzoo: error: {e}")
        return 2
    except KeyboardInterrupt:
        _error("genzoo: interrupted.")
        return 130
    except BrokenPipeError:  # the reader went away (genzoo list | head): nothing more to say
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (MemoryError, RuntimeError) as e:
        message = out_of_memory(e)
        if message is None:
            raise  # a bug in genzoo: its traceback
        _error(f"genzoo: error: {message}")
        return 2
    except OSError as e:
        where = f" {e.filename!r}" if getattr(e, "filename", None) else ""
        _error(f"genzoo: error: cannot use{where}: {e.strerror or e}.")
        return 2


if __name__ == "__main__":
    sys.exit(main())
