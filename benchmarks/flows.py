"""Flow family benchmark: RealNVP and Glow test bits/dim (a lower bound: uniform dequantization) on
image data, training images/s, time to sample 64 images, and test log-likelihood in nats on 2-D toy
densities.

Prints one JSON object to stdout; progress goes to stderr. Examples:

    OMP_NUM_THREADS=1 python benchmarks/flows.py                       # digits (default configs) + toy
    OMP_NUM_THREADS=1 python benchmarks/flows.py --data digits mnist --root /work/shared/data/mnist-8k --mnist-steps 400
    OMP_NUM_THREADS=1 python benchmarks/flows.py --quick               # a few steps, to check the script runs

On toy data (2x1x1 images of 256 x 256 levels over the box [-4, 4]^2) two numbers are given per
model: `test_nats`, the bound on log P(x) of the discrete grid point, and `test_log_density`, the
same bound turned into a density of points in the box, nats + 2 log(256) - 2 log(8).
The target of the flow issue: Glow, default `genzoo train glow --data digits`, test bits/dim <= 2.3.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

import genzoo
from genzoo.training import train, train_config_for

MODELS = ("realnvp", "glow")
TOYS = ("moons", "8gaussians")
TARGET_GLOW_DIGITS = 2.3


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def sample_seconds(model: torch.nn.Module, n: int = 64) -> float:
    model.eval()
    model.sample(2, generator=torch.Generator().manual_seed(1))  # warm-up
    t = time.perf_counter()
    model.sample(n, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - t


def fit(name: str, data: str, root: str | None, overrides: dict, progress: bool) -> tuple[torch.nn.Module, dict, genzoo.Dataset]:
    tr, va, te = (genzoo.data.load(data, split=s, root=root) for s in ("train", "val", "test"))
    torch.manual_seed(0)
    model = genzoo.create(name, tr.spec)
    cfg = train_config_for(model, **{"sample_every": 0, **overrides})
    log(f"[{data}] training {name}: {cfg.steps} steps, batch {cfg.batch_size}, lr {cfg.lr}")
    cpu, wall = time.process_time(), time.time()
    result = train(model, tr, va, cfg, progress=progress)
    info = {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "train_seconds": round(time.time() - wall, 1),
            "train_cpu_seconds": round(time.process_time() - cpu, 1),
            "train_images_per_second": round(result.images_per_second, 1), "best_val_bpd": round(result.best_value, 4),
            "params": sum(p.numel() for p in model.parameters())}
    return model, info, te


def bench_images(args, data: str) -> dict:
    out = {}
    for name in args.models:
        overrides: dict = {}
        if args.quick:
            overrides.update(steps=30, eval_every=15)
        elif data == "mnist":
            overrides.update(steps=args.mnist_steps, batch_size=args.mnist_batch_size, eval_every=max(1, args.mnist_steps // 2))
        elif args.steps:
            overrides.update(steps=args.steps)
        model, info, te = fit(name, data, args.root if data != "digits" else None, overrides, args.progress)
        torch.manual_seed(0)
        bpd = genzoo.bits_per_dim(model, te.x)
        torch.manual_seed(0)
        bpd_iw = genzoo.bits_per_dim(model, te.x, num_samples=args.iw_samples)
        err = model.task_metrics(te, torch.Generator().manual_seed(0), check_inverse=True)["inverse_max_abs_error"]
        out[name] = {"test_bpd": round(bpd.value, 4), "kind": bpd.kind,
                     f"test_bpd_iw{args.iw_samples}": round(bpd_iw.value, 4),
                     "sample_64_seconds": round(sample_seconds(model), 3), "inverse_max_abs_error": err, **info}
        log(f"[{data}] {name}: test {bpd.value:.4f} bits/dim ({info['train_seconds']:.0f} s, "
            f"{info['train_images_per_second']:.0f} images/s)")
    return out


def bench_toys(args) -> dict:
    out: dict = {}
    for toy in args.toys:
        out[toy] = {}
        for name in args.models:
            overrides = {"steps": 40 if args.quick else args.toy_steps, "batch_size": 256, "lr": 2e-3,
                         "eval_every": 20 if args.quick else max(1, args.toy_steps // 4), "warmup_steps": 50}
            model, info, te = fit(name, toy, None, overrides, args.progress)
            torch.manual_seed(0)
            with torch.no_grad():
                nats = float(model.log_likelihood(te.x).nats.mean())
            K, lo, hi = te.spec.levels, -4.0, 4.0
            density = nats + 2 * math.log(K) - 2 * math.log(hi - lo)
            out[toy][name] = {"test_nats": round(nats, 4), "test_log_density": round(density, 4), "kind": "lower_bound",
                              **{k: info[k] for k in ("steps", "train_seconds", "train_images_per_second")}}
            log(f"[{toy}] {name}: test {nats:.3f} nats per point (log density {density:.3f})")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=["digits"], help="image datasets (digits, mnist)")
    p.add_argument("--root", default=None, help="directory of the mnist files")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--steps", type=int, default=None, help="training steps on digits (default: each model's own)")
    p.add_argument("--mnist-steps", type=int, default=400)
    p.add_argument("--mnist-batch-size", type=int, default=32)
    p.add_argument("--toys", nargs="*", default=list(TOYS))
    p.add_argument("--toy-steps", type=int, default=1500)
    p.add_argument("--iw-samples", type=int, default=8, help="samples of the importance-weighted bound")
    p.add_argument("--quick", action="store_true", help="a few steps, to check the script runs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    if "mnist" in args.data and args.root is None:
        args.root = "/work/shared/data/mnist-8k"
    torch.set_num_threads(args.threads)
    result: dict = {"threads": args.threads, "images": {}}
    for data in args.data:
        result["images"][data] = bench_images(args, data)
    if args.toys:
        result["toy"] = bench_toys(args)
    glow = result["images"].get("digits", {}).get("glow")
    if glow is not None and not args.quick and args.steps is None:
        result["target_glow_digits_bpd"] = {"target": TARGET_GLOW_DIGITS, "value": glow["test_bpd"],
                                            "met": glow["test_bpd"] <= TARGET_GLOW_DIGITS}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
