"""`genzoo compare`: every family on the same data, one table and a report.

Each model trains with its own defaults (or `--steps`) into `OUT/MODEL/`, or existing run
directories are given with `--runs`; then every model is evaluated on the same test split, in
bits/dim with its kind (exact or lower bound), beside two baselines that need no training: the
uniform model (log2 K) and the per-pixel independent categorical model fitted to the training set.
Models without a likelihood are listed with their task metrics.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import torch

from . import checkpoint, data, registry
from .errors import GenzooError
from .evaluate import evaluate, independent_pixel_bpd
from .models.base import GenerativeModel


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default="digits")
    parser.add_argument("--root", default=None)
    parser.add_argument("--models", default=None, help="comma-separated names (default: every model with a likelihood)")
    parser.add_argument("--runs", nargs="*", default=None, help="existing run directories to compare instead of training")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default: each model's own)")
    parser.add_argument("--out", default=None, help="report directory (default runs/compare-DATA)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")


def _evaluate(model: GenerativeModel, test: data.Dataset) -> dict[str, Any]:
    """A model's row: parameters, bits/dim with its kind, and task metrics (genzoo.evaluate.evaluate)."""
    report = evaluate(model, test, seed=0)
    row: dict[str, Any] = {"parameters": sum(p.numel() for p in model.parameters())}
    row.update({k: report.pop(k) for k in ("bits_per_dim", "kind") if k in report})
    if report:
        row["metrics"] = report
    return row


def run(args: argparse.Namespace) -> int:
    from .train import resolve_device, train, train_config_for

    device = resolve_device(args.device)
    out = Path(args.out or f"runs/compare-{args.data}")
    rows: list[dict[str, Any]] = []
    if args.runs:
        test = None
        for directory in args.runs:
            meta = checkpoint.read_config(directory)
            model = checkpoint.load(directory).to(device)
            run_data = meta.get("run", {}).get("data", args.data)
            if test is None:
                args.data = run_data
                test = data.load(args.data, "test", args.root)
                train_data = data.load(args.data, "train", args.root)
            if model.spec != test.spec:
                raise GenzooError(f"run {directory!r} was trained on data of spec {model.spec}, not {test.spec}.")
            rows.append({"model": meta["model"], "run": str(directory), **_evaluate(model, test)})
    else:
        names = args.models.split(",") if args.models else [
            n for n in registry.list_models() if registry.model_class(n).has_likelihood]
        for name in names:
            registry.model_class(name)  # unknown names fail before any training
        train_data = data.load(args.data, "train", args.root)
        val = data.load(args.data, "val", args.root)
        test = data.load(args.data, "test", args.root)
        for name in names:
            run_dir = out / name
            try:
                torch.manual_seed(0)
                model = registry.create(name, train_data.spec)
                cfg = train_config_for(model, steps=args.steps, device=args.device)
                t0 = time.time()
                record = {"data": args.data, "root": str(Path(args.root).resolve()) if args.root else None,
                          "split": "train", "val_split": "val"}
                train(model, train_data, val, cfg, out_dir=run_dir if not (run_dir / "config.json").exists() else None,
                      progress=not args.no_progress, record=record)
                rows.append({"model": name, "run": str(run_dir), "train_seconds": time.time() - t0,
                             **_evaluate(model, test)})
            except GenzooError as e:
                rows.append({"model": name, "error": str(e)})
    assert test is not None
    baselines = [
        {"model": "uniform", "bits_per_dim": math.log2(test.spec.levels), "kind": "exact", "parameters": 0},
        {"model": "independent pixels", "bits_per_dim": independent_pixel_bpd(train_data.x, test.x, test.spec.levels),
         "kind": "exact", "parameters": test.spec.dims * test.spec.levels},
    ]
    report = _report(args.data, rows, baselines)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_json(out / "results.json", {"data": args.data, "rows": rows, "baselines": baselines})
    checkpoint.atomic_write_bytes(out / "report.md", report.encode())
    print(report)
    print(f"wrote {out / 'report.md'} and {out / 'results.json'}")
    return 0


def _report(name: str, rows: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> str:
    ranked = sorted([r for r in rows + baselines if "bits_per_dim" in r], key=lambda r: r["bits_per_dim"])
    lines = [f"# genzoo compare: {name} (test split)", "",
             "Bits per dimension of the discrete images (lower is better). 'exact' is log P(x) itself; "
             "'lower bound' means the model's true bits/dim are at most the figure shown.", "",
             "| model | bits/dim | kind | parameters |", "| --- | ---: | --- | ---: |"]
    for r in ranked:
        lines.append(f"| {r['model']} | {r['bits_per_dim']:.4f} | {r['kind'].replace('_', ' ')} | {r['parameters']:,} |")
    others = [r for r in rows if "bits_per_dim" not in r]
    if others:
        lines += ["", "Models without a likelihood, or that failed:", ""]
        for r in others:
            detail = r.get("error") or ", ".join(f"{k} {v:.4g}" for k, v in r.get("metrics", {}).items())
            lines.append(f"- {r['model']}: {detail}")
    return "\n".join(lines) + "\n"
