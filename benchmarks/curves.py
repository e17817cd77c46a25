"""Compare as curves on real 28x28 digits: one model of each family on mnist-8k (../shared/data/mnist-8k),
at three training-FLOP budgets and two training seeds, through `genzoo compare` itself, as JSON: every
(model, budget, seed) row's figures, the ranking at each budget and the paired differences of adjacent
models with their verdicts, and the wall-clock seconds of the whole run on one core.

    OMP_NUM_THREADS=1 python3 benchmarks/curves.py [--root ../shared/data/mnist-8k] [--out DIR]
        [--budgets 5e11,1.5e12,5e12] [--seeds 2] [--models pixelcnn,vae,glow,sohl-dickstein,flow-matching,vqvae]

The report (report.html with the curves, report.md, results.json) stays in --out (default: a
temporary folder); the JSON names it.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from common import emit, log, machine
from genzoo.cli import main as genzoo

MODELS = "pixelcnn,vae,glow,sohl-dickstein,flow-matching,vqvae"


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(here.parent / "shared" / "data" / "mnist-8k"))
    p.add_argument("--out", default=None)
    p.add_argument("--budgets", default="5e11,1.5e12,5e12")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--models", default=MODELS)
    p.add_argument("--samples", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out or tempfile.mkdtemp()) / "compare-mnist"
    t0 = time.perf_counter()
    code = genzoo(["compare", "--data", "mnist", "--root", args.root, "--models", args.models, "--budget", "flops",
                   "--budgets", args.budgets, "--seeds", str(args.seeds), "--samples", str(args.samples),
                   "--out", str(out), "--no-progress"])
    seconds = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"genzoo compare failed with exit code {code}")
    results = json.loads((out / "results.json").read_text())
    keep = ("model", "budget", "seed", "bits_per_dim", "bits_per_dim_se", "kind", "estimate", "fd", "train_steps",
            "train_flops", "train_seconds", "error")
    rows = [{k: r[k] for k in keep if k in r} for r in results["rows"]]
    log(f"compare took {seconds:.0f} s")
    emit({"benchmark": "curves", "data": "mnist-8k", "models": args.models.split(","), "budgets_flops": args.budgets,
          "seeds": args.seeds, "seconds": round(seconds, 1), "report": str(out / "report.html"),
          "protocol": results["protocol"]["runs_per_point"], "rows": rows, "rankings": results["rankings"],
          "pairs": results["pairs"], "machine": machine()})


if __name__ == "__main__":
    main()
