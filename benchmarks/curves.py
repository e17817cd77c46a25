"""Compare as curves on real 28x28 digits: one model of each family on mnist-8k (../shared/data/mnist-8k, or
--data digits, the embedded 8x8 digits),
at three training-FLOP budgets and two training seeds, through `genzoo compare` itself, as JSON: every
(model, budget, seed) row's figures, the ranking at each budget and the paired differences of adjacent
models with their verdicts, and the wall-clock seconds of the whole run on one core.

    OMP_NUM_THREADS=1 python3 benchmarks/curves.py [--root ../shared/data/mnist-8k] [--out DIR]
        [--budgets 5e11,1.5e12,5e12] [--seeds 2] [--samples 100] [--partial FILE]
        [--models pixelcnn,vae,glow,sohl-dickstein,flow-matching,vqvae]
    OMP_NUM_THREADS=1 python3 benchmarks/curves.py --data digits --models vdm,edm,ddpm,flow-matching \
        --budgets 1.25e12,2.5e12,5e12,1e13 --seeds 1 --samples 300 --sample-options ddpm:sampler=ancestral
                                                            # the diffusion models on the embedded digits

One `genzoo compare` per budget, smallest first (each with every model and seed), so that a run cut
short keeps every budget it finished (--partial FILE is rewritten after each); the reports stay in
--out (default: a temporary folder), with curves.png of bits/dim and FD against training FLOPs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import emit, log, machine
from genzoo.cli import main as genzoo
from genzoo.report import curve_png

MODELS = "pixelcnn,vae,glow,sohl-dickstein,flow-matching,vqvae"


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="mnist")
    p.add_argument("--root", default=None, help="the dataset's folder (mnist: ../shared/data/mnist-8k)")
    p.add_argument("--sample-options", nargs="*", default=[], help="compare's --sample-options, e.g. ddpm:sampler=ancestral")
    p.add_argument("--out", default=None)
    p.add_argument("--budgets", default="5e11,1.5e12,5e12")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--models", default=MODELS)
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--partial", default=None, help="a JSON file rewritten after every budget (what a cut-short run keeps)")
    args = p.parse_args()
    if args.root is None and args.data == "mnist":
        args.root = str(here.parent / "shared" / "data" / "mnist-8k")
    torch.set_num_threads(1)
    root = Path(args.out or tempfile.mkdtemp())
    t0 = time.perf_counter()
    rows: list[dict] = []
    result: dict = {}
    # one compare per budget, smallest first, so that a run cut short keeps every budget it finished
    for i, budget in enumerate(sorted(float(b) for b in args.budgets.split(","))):
        out = root / f"compare-{args.data}-b{i}"
        where = ["--root", args.root] if args.root else []
        options = ["--sample-options", *args.sample_options] if args.sample_options else []
        with contextlib.redirect_stdout(sys.stderr):  # compare's plan and table to the log: stdout is the JSON
            code = genzoo(["compare", "--data", args.data, *where, "--models", args.models,
                           "--budget", "flops", "--budgets", str(budget), "--seeds", str(args.seeds),
                           "--samples", str(args.samples), "--out", str(out), "--no-progress", *options])
        if code != 0:
            raise SystemExit(f"genzoo compare failed with exit code {code}")
        results = json.loads((out / "results.json").read_text())
        keep = ("model", "budget", "seed", "bits_per_dim", "bits_per_dim_se", "kind", "estimate", "fd", "train_steps",
                "train_flops", "train_seconds", "error")
        rows += [{k: r[k] for k in keep if k in r} for r in results["rows"]]
        result = {"benchmark": "curves", "data": "mnist-8k" if args.data == "mnist" else args.data,
                  "models": args.models.split(","), "seeds": args.seeds,
                  "budgets_flops_done": sorted({r["budget"] for r in rows}), "samples": args.samples,
                  "seconds": round(time.perf_counter() - t0, 1), "reports": str(root),
                  "protocol": results["protocol"]["runs_per_point"], "rows": rows,
                  "rankings": {**result.get("rankings", {}), **results["rankings"]},
                  "pairs": result.get("pairs", []) + results["pairs"], "machine": machine()}
        log(f"budget {budget:g} done after {result['seconds']:.0f} s")
        if args.partial:
            Path(args.partial).write_text(json.dumps(result, indent=2, default=str))
    picture = curve_png(rows, "train_flops", "training FLOPs (log scale)")
    if picture is not None:
        (root / "curves.png").write_bytes(picture)
        result["curves_png"] = str(root / "curves.png")
    emit(result)


if __name__ == "__main__":
    main()
