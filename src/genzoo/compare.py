"""`genzoo compare`: every family on the same data under equal budgets, a table, curves and a report.

Protocol. Every chosen model trains from seed `--seed` (and the `--seeds` - 1 after it) under each
budget of `--budgets` (default: the one of `--seconds`, `--flops` or `--steps`), each (model, budget,
seed) a separate run with its own learning-rate schedule aimed at its budget. The unit (`--budget`):
  seconds  the same wall-clock seconds each (`--seconds`): the step count comes from timing a few
           steps first, and TrainConfig.max_seconds ends training at the limit in any case;
  flops    the same training compute each (`--flops`): FLOPs of one training step (forward and
           backward) are counted with torch.utils.flop_counter (matrix products and convolutions,
           on the first stage's loss) and the step count is the budget divided by them;
  steps    the same number of steps each (`--steps`);
  default  each model's own default steps.
flops and steps do not depend on the machine's speed or load: the same command gives the same table
everywhere, bit for bit on a CPU. With several budgets or seeds the report draws curves, and ranks
adjacent models by their paired differences on the same test images (genzoo.curves).
Existing run directories are compared with `--runs` instead. Every model is then evaluated on the
same test split: bits/dim with kind and standard error (genzoo.evaluate), sample quality against
the test split (genzoo.quality), and speed: training images/s, seconds per sampled image with the
sampler's options and network evaluations (NFE), seconds to evaluate the likelihood. Two baselines
need no training: the uniform model (log2 K) and the per-pixel independent categorical model.
"""
from __future__ import annotations

import argparse
import copy
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

from . import __version__, checkpoint, data, registry
from .curves import pairs
from .errors import GenzooError
from .evaluate import evaluate, independent_pixel_bpd
from .models.base import GenerativeModel
from .report import REQUIRES  # noqa: F401  (checked when `genzoo compare` starts, not after training)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="digits")
    parser.add_argument("--root", default=None)
    parser.add_argument("--models", default=None, help="comma-separated names (default: every model with a likelihood)")
    parser.add_argument("--runs", nargs="*", default=None, help="existing run directories to compare instead of training")
    parser.add_argument("--budget", choices=BUDGETS, default="flops",
                        help="equal training FLOPs (the default: the same everywhere), equal steps, equal "
                             "wall-clock seconds, or each model's default steps")
    parser.add_argument("--seconds", type=float, default=40.0, help="training seconds per model (--budget seconds)")
    parser.add_argument("--flops", type=float, default=2.5e12, help="training FLOPs per model (--budget flops)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (--budget steps or default)")
    parser.add_argument("--budgets", default=None, metavar="A,B,C",
                        help="several budgets in the unit of --budget (seconds, FLOPs or steps): a curve per model")
    parser.add_argument("--seeds", type=int, default=1, help="training seeds per model and budget, from --seed on")
    parser.add_argument("--likelihood", choices=("validation", "full"), default="validation",
                        help="each model's validation estimate (quick) or its full log_likelihood (genzoo eval's)")
    parser.add_argument("--samples", type=int, default=300, help="samples per model for sample quality (default 300)")
    parser.add_argument("--sample-options", nargs="*", default=[], metavar="MODEL:KEY=VALUE,...",
                        help="sampling options of a model, e.g. ddpm:sampler=ddim,steps=50")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="report directory (default runs/compare-DATA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


BUDGETS = ("flops", "steps", "seconds", "default")


def budgets_of(args: argparse.Namespace) -> list[float | None]:
    """The budgets to train at, in the unit of --budget: --budgets, else the one of its own flag."""
    if args.budgets is None:
        return [{"seconds": args.seconds, "flops": args.flops, "steps": args.steps, "default": None}[args.budget]]
    if args.budget == "default":
        raise GenzooError("--budgets needs a unit: --budget flops, steps or seconds.")
    try:
        values = [float(v) for v in args.budgets.split(",") if v.strip()]
    except ValueError:
        raise GenzooError(f"--budgets takes numbers separated by commas, such as 1e12,4e12,1.6e13; got "
                          f"{args.budgets!r}.") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise GenzooError(f"--budgets must be positive numbers, got {args.budgets!r}.")
    return sorted(set(values))


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def sample_options(specs: list[str]) -> dict[str, dict[str, Any]]:
    """Every model's `quick_sample_options` (so that a comparison stays proportionate), replaced per
    model by `MODEL:KEY=VALUE,...` strings."""
    out = {n: dict(registry.model_class(n).quick_sample_options) for n in registry.list_models()
           if registry.model_class(n).quick_sample_options}
    for spec in specs:
        name, _, rest = spec.partition(":")
        try:
            out[name] = {k: _value(v) for k, v in (item.split("=", 1) for item in rest.split(",") if item)}
        except ValueError:
            raise GenzooError(f"--sample-options takes MODEL:KEY=VALUE,..., got {spec!r}.") from None
    return out


def training_flops(model: GenerativeModel, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one training step's loss and its gradient (torch.utils.flop_counter), on a copy."""
    from torch.utils.flop_counter import FlopCounterMode

    twin = copy.deepcopy(model).train()
    with FlopCounterMode(display=False) as counter:
        twin.loss(**batch).backward()
    return int(counter.get_total_flops())


def seconds_per_step(model: GenerativeModel, batch: dict[str, torch.Tensor], steps: int = 3) -> float:
    """Wall-clock seconds of one loss, backward and AdamW step, on a copy (after one warm-up step)."""
    twin = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(twin.parameters(), lr=1e-6)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        twin.loss(**batch).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2]


def budget_config(model: GenerativeModel, train_data: data.Dataset, args: argparse.Namespace,
                  budget: float | None = None, seed: int | None = None) -> tuple[Any, dict[str, Any]]:
    """The TrainConfig that spends `budget` (in the unit of --budget; default its own flag) from `seed`,
    and what the budget was."""
    from .training import train_config_for

    seed = args.seed if seed is None else seed
    budget = budgets_of(args)[0] if budget is None else budget
    base = train_config_for(model, steps=args.steps, device=args.device, seed=seed)
    batch = {"x": train_data.x[:base.batch_size].to(model.device)}
    if model.num_classes > 0:
        batch["labels"] = train_data.labels[:base.batch_size].to(model.device)
    flops = training_flops(model, batch)
    stages = len(model.stages)
    if args.budget == "default":
        steps, extra = base.steps, {}
    elif args.budget == "steps":
        if budget is None:
            raise GenzooError("--budget steps needs --steps N (or --budgets).")
        steps, extra = max(1, int(budget)), {}
    elif args.budget == "flops":
        steps, extra = max(1, int(budget / max(flops, 1) / stages)), {}
    else:
        per_step = seconds_per_step(model, batch)
        # periodic validation costs time too: aim the cosine schedule at 85% of the budget
        steps, extra = max(1, int(0.85 * budget / per_step / stages)), {"max_seconds": budget}
    cfg = train_config_for(model, steps=steps, device=args.device, seed=seed, sample_every=0,
                           eval_every=max(1, steps // 8), warmup_steps=min(base.warmup_steps, steps // 10), **extra)
    return cfg, {"flops_per_step": flops, "planned_steps": steps * stages}


def count_nfe(model: GenerativeModel, draw: Any) -> tuple[Any, int | None, str | None]:
    """Run `draw()` and read the network evaluations of sampling: the model's own record
    (`sample_stats()`: the sampler and its NFE) where it keeps one, else the most forward calls of any
    one direct submodule that holds parameters (the decoder, the prior). None when neither says (a
    sampler that runs its layers step by step, as the cached autoregressive samplers do). Returns
    (what draw returned, NFE, sampler name). The one place NFE is read."""
    counts: dict[str, int] = {}
    hooks = []
    for name, child in model.named_children():
        if any(True for _ in child.parameters()):
            def hook(*_: Any, key: str = name) -> None:
                counts[key] = counts.get(key, 0) + 1
            hooks.append(child.register_forward_hook(hook))
    try:
        out = draw()
    finally:
        for h in hooks:
            h.remove()
    stats = model.sample_stats()
    if stats is not None:
        return out, stats.nfe, stats.sampler
    return out, (max(counts.values()) if counts else None), None


def measure(model: GenerativeModel, test: data.Dataset, args: argparse.Namespace, options: dict[str, Any],
            sample_dir: Path) -> dict[str, Any]:
    """A model's row: bits/dim (kind, errors, what it estimates), task metrics, sample quality, speed."""
    from .quality import sample_quality
    from .viz import save_grid

    report = evaluate(model, test, seed=args.seed, objective="log_likelihood" if args.likelihood == "full"
                      else "validation", progress=not args.no_progress, per_image=True)
    row: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    if "per_image_bits" in report:  # kept beside the row for the paired differences, not written out
        row["_per_image_bits"] = report.pop("per_image_bits")
    keys = ("bits_per_dim", "bits_per_dim_se", "kind", "estimate", "estimator_se", "likelihood_seconds")
    row.update({k: report.pop(k) for k in keys if k in report})
    report.pop("images", None)
    if report:
        row["metrics"] = report
    if model.conditional:
        return row
    g = torch.Generator(device=model.device).manual_seed(args.seed)
    t0 = time.perf_counter()
    samples, nfe, sampler = count_nfe(model, lambda: model.sample(args.samples, generator=g, **options))
    seconds = time.perf_counter() - t0
    row.update({"sample_seconds_per_image": seconds / args.samples, "nfe": nfe,
                "sampler": sampler or options or "default"})
    row["samples_png"] = str(save_grid(samples[:64].cpu(), model.spec, sample_dir / "samples.png", reference=test.x))
    quality = sample_quality(samples.cpu(), test.x, data=args.data, root=args.root, seed=args.seed,
                             progress=not args.no_progress)
    row.update({k: quality[k] for k in ("fd", "kid", "kid_se", "precision", "recall", "features")})
    row["quality_samples"], row["quality_reference"] = quality["samples"], quality["reference"]
    if "classifier_accuracy" in quality:
        row["classifier_accuracy"] = quality["classifier_accuracy"]
    return row


def noise_distance(test: data.Dataset, args: argparse.Namespace) -> float:
    """The Frechet distance of uniform-noise images (every level equally likely) to the test split."""
    from .quality import sample_quality

    g = torch.Generator().manual_seed(args.seed)
    noise = torch.randint(0, test.spec.levels, (args.samples, *test.spec.shape), generator=g)
    return float(sample_quality(noise, test.x, data=args.data, root=args.root, seed=args.seed, progress=False)["fd"])


def plan(names: list[str], budgets: list[float | None], seeds: list[int], args: argparse.Namespace,
         train_data: data.Dataset, device: torch.device) -> str:
    """What compare is about to do, said before it starts: models, budgets, seeds, and the training time
    it expects here (from timing three steps of each model; evaluation comes on top)."""
    seconds = 0.0
    for name in names:
        model = registry.create(name, train_data.spec).to(device)
        if args.budget == "seconds":
            seconds += sum(budgets) * len(seeds)  # type: ignore[arg-type]
            continue
        for budget in budgets:
            cfg, planned = budget_config(model, train_data, args, budget, seeds[0])
            batch = {"x": train_data.x[:cfg.batch_size].to(device)}
            if model.num_classes > 0:
                batch["labels"] = train_data.labels[:cfg.batch_size].to(device)
            seconds += planned["planned_steps"] * seconds_per_step(model, batch, steps=2) * len(seeds)
    unit = {"flops": "training FLOPs", "steps": "steps", "seconds": "seconds", "default": "default steps"}[args.budget]
    shown = ", ".join("each model's own" if b is None else f"{b:.3g}" for b in budgets)
    return (f"compare plan: {len(names)} models ({', '.join(names)}) x {len(budgets)} budget(s) of {unit} ({shown}) x "
            f"{len(seeds)} seed(s) = {len(names) * len(budgets) * len(seeds)} runs on {args.data}; about "
            f"{seconds / 60:.0f} min of training here, evaluation on top.")


def run(args: argparse.Namespace) -> int:
    from .report import write_compare_report
    from .training import resolve_device, train

    device = resolve_device(args.device)
    if args.samples < 4:
        raise GenzooError(f"--samples must be at least 4, got {args.samples}.")
    if args.seeds < 1:
        raise GenzooError(f"--seeds must be at least 1, got {args.seeds}.")
    if args.runs is not None and not args.runs:
        raise GenzooError("--runs names no run directory; give at least one, or leave --runs out to train every model.")
    options = sample_options(args.sample_options)
    out = Path(args.out or f"runs/compare-{args.data}")
    if out.is_dir():  # compare writes only its own entries, never through a link
        checkpoint.refuse_links(out, sorted(p.name for p in out.iterdir()))
    rows: list[dict[str, Any]] = []
    t_all = time.time()
    if args.runs:
        args.data = checkpoint.read_config(args.runs[0]).get("run", {}).get("data", args.data)
    train_data, test = data.load(args.data, "train", args.root), data.load(args.data, "test", args.root)
    if args.runs:
        for i, directory in enumerate(args.runs):
            meta = checkpoint.read_config(directory)
            model = checkpoint.load(directory).to(device).eval()
            if model.spec != test.spec:
                raise GenzooError(f"run {directory!r} was trained on data of spec {model.spec}, not {test.spec}.")
            row = {"model": meta["model"], "run": str(directory), "budget": "existing run"}
            # what compare draws goes under its --out: a command that reads a run never writes into it
            row.update(measure(model, test, args, options.get(meta["model"], {}), out / f"run{i}-{meta['model']}"))
            rows.append(row)
    else:
        if args.models is not None and not [n for n in args.models.split(",") if n.strip()]:
            raise GenzooError("--models is empty; name at least one model, or leave --models out for every "
                              "model with a likelihood.")
        names = [n.strip() for n in args.models.split(",")] if args.models else [
            n for n in registry.list_models() if registry.model_class(n).has_likelihood]
        for name in names:
            registry.model_class(name)  # unknown names fail before any training
        budgets, seeds = budgets_of(args), list(range(args.seed, args.seed + args.seeds))
        one_point = len(budgets) == 1 and len(seeds) == 1
        jobs = [(i, budget, seed, name) for i, budget in enumerate(budgets) for seed in seeds for name in names]
        for i, _, seed, name in jobs:
            run_dir = out / (name if one_point else f"{name}-b{i}-s{seed}")
            if (run_dir / "config.json").exists() or (run_dir / "last").exists():
                raise GenzooError(f"{str(run_dir)!r} already holds a run; choose another --out or compare it with --runs.")
        print(plan(names, budgets, seeds, args, train_data, device), flush=True)
        val = data.load(args.data, "val", args.root)
        for i, budget, seed, name in jobs:
            run_dir = out / (name if one_point else f"{name}-b{i}-s{seed}")
            try:
                torch.manual_seed(seed)
                model = registry.create(name, train_data.spec).to(device)
                cfg, planned = budget_config(model, train_data, args, budget, seed)
                record = {"data": args.data, "root": str(Path(args.root).resolve()) if args.root else None,
                          "split": "train", "val_split": "val"}
                result = train(model, train_data, val, cfg, out=run_dir, progress=not args.no_progress,
                               record=record)
                row = {"model": name, "run": str(run_dir), "budget": "default" if budget is None else budget,
                       "budget_unit": args.budget, "seed": seed,
                       "train_steps": result.steps, "train_seconds": result.seconds,
                       "train_images": result.steps * cfg.batch_size,
                       "train_flops": planned["flops_per_step"] * result.steps,
                       "train_images_per_second": result.images_per_second, **planned}
                row.update(measure(model, test, args, options.get(name, {}), run_dir))
                rows.append(row)
            except GenzooError as e:
                rows.append({"model": name, "budget": budget, "seed": seed, "error": str(e)})
    noise_fd = noise_distance(test, args)
    for r in rows:  # a grid that is mostly noise is flagged beside its row
        r["noise_like"] = r.get("fd") is not None and r["fd"] >= 0.5 * noise_fd
    per_image = {id(r): r.pop("_per_image_bits") for r in rows if "_per_image_bits" in r}
    paired = pairs(rows, per_image)
    independent = independent_pixel_bpd(train_data.x, test.x, test.spec.levels)
    baselines = [
        {"model": "uniform", "bits_per_dim": math.log2(test.spec.levels), "bits_per_dim_se": 0.0, "kind": "exact",
         "parameters": 0, "baseline": True},
        {"model": "independent pixels", "bits_per_dim": independent.value, "bits_per_dim_se": independent.se,
         "kind": independent.kind, "parameters": test.spec.dims * test.spec.levels, "baseline": True},
    ]
    protocol = {"data": args.data, "root": args.root, "test_split": "test", "test_images": len(test),
                "train_images": len(train_data), "budget": "existing runs" if args.runs else args.budget,
                "seconds": args.seconds if args.budget == "seconds" else None,
                "flops": args.flops if args.budget == "flops" else None,
                "steps": args.steps, "seed": args.seed, "likelihood": args.likelihood,
                "noise_fd": noise_fd, "noise_like": "a row's samples are flagged as near noise where their FD is at "
                                                    "least half that of uniform noise images (noise_fd)",
                "budgets": None if args.runs else budgets_of(args), "seeds": args.seeds,
                "runs_per_point": "one run per (model, budget, seed), each with its own learning-rate schedule "
                                  "aimed at its budget (separate runs, not marks along one run)",
                "quality_samples": args.samples, "sample_options": options,
                "versions": {"genzoo": __version__, "torch": torch.__version__, "python": platform.python_version()},
                "machine": {"platform": platform.platform(), "processor": platform.machine(),
                            "threads": torch.get_num_threads(), "device": str(device)},
                "total_seconds": time.time() - t_all}
    paths = write_compare_report(out, protocol, rows, baselines, paired)
    print(paths["markdown"].read_text())
    print(f"wrote {paths['html']}, {paths['markdown']} and {paths['json']}")
    return 0
