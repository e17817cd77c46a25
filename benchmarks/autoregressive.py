r"""Autoregressive family benchmark: test bits/dim of PixelCNN, Gated PixelCNN and PixelCNN++ trained
with the same budget, and the speed-up of cached over naive sampling at 28x28 (batch 16).

Prints one JSON object to stdout; progress goes to stderr. Examples:

    OMP_NUM_THREADS=1 python benchmarks/autoregressive.py --data digits
    OMP_NUM_THREADS=1 python benchmarks/autoregressive.py --data mnist --steps 500 --batch-size 32 --eval-every 250 \
        --config '{"dropout": 0}'
    OMP_NUM_THREADS=1 python benchmarks/autoregressive.py --sampling-only --full-naive

Naive sampling costs one full forward pass per sub-pixel, the same at every step; unless
--full-naive is given it is timed over the first --naive-steps steps (the rest of the image is
given, which the sampler skips) and scaled to the whole image, and reported as such.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import genzoo
from common import MNIST_8K  # noqa: E402
from genzoo.data.spec import DataSpec
from genzoo.training import train, train_config_for

MODELS = ("pixelcnn", "gated-pixelcnn", "pixelcnn++")


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def bench_likelihood(args) -> dict:
    tr, va, te = (genzoo.data.load(args.data, split=s, root=args.root) for s in ("train", "val", "test"))
    out = {}
    for name in args.models:
        torch.manual_seed(args.seed)  # each model's initialisation independent of the models before it
        model = genzoo.create(name, tr.spec, **json.loads(args.config))
        overrides = {"steps": args.steps, "batch_size": args.batch_size, "eval_every": args.eval_every, "sample_every": 0}
        if args.quick:
            overrides.update(steps=args.steps or 100, eval_every=50)
        cfg = train_config_for(model, **overrides)
        log(f"[{args.data}] training {name}: {cfg.steps} steps, batch {cfg.batch_size}")
        t = time.time()
        result = train(model, tr, va, cfg, progress=args.progress)
        seconds = time.time() - t
        model.eval()
        bpd = genzoo.bits_per_dim(model, te.x)
        out[name] = {"test_bpd": round(bpd.value, 4), "kind": bpd.kind, "best_val_bpd": round(result.best_value, 4),
                     "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr, "train_seconds": round(seconds, 1),
                     "params": sum(p.numel() for p in model.parameters()), "config": dict(model.config.__dict__)}
        log(f"[{args.data}] {name}: test {bpd.value:.4f} bits/dim ({seconds:.0f} s)")
    return out


def bench_sampling(args) -> dict:
    spec = DataSpec(1, 28, 28, 256)
    out = {}
    for name in ("pixelcnn", "gated-pixelcnn"):
        torch.manual_seed(0)
        model = genzoo.create(name, spec).eval()
        n, C, H, W = 16, *spec.shape
        t = time.time()
        cached = model.sample(n, generator=torch.Generator().manual_seed(0), cache=True)
        cached_s = time.time() - t
        steps = C * H * W if args.full_naive else min(args.naive_steps, C * H * W)
        # the first `steps` sub-pixels free, the rest given (and skipped by the sampler)
        given = torch.full((n, C, H * W), -1, dtype=torch.long)
        given.view(n, -1)[:, steps:] = cached.view(n, -1)[:, steps:]
        given = given.view(n, C, H, W)
        t = time.time()
        naive = model.sample(n, generator=torch.Generator().manual_seed(0), cache=False, given=given)
        naive_part = time.time() - t
        naive_s = naive_part * (C * H * W) / steps
        out[name] = {"batch": n, "image": [C, H, W], "levels": spec.levels, "cached_seconds": round(cached_s, 2),
                     "naive_seconds": round(naive_s, 2), "naive_measured_steps": steps,
                     "naive_extrapolated": steps < C * H * W, "speedup": round(naive_s / cached_s, 1),
                     "identical": bool(torch.equal(naive, cached))}
        log(f"[sampling] {name}: cached {cached_s:.1f} s, naive {naive_s:.1f} s ({steps} steps timed), "
            f"x{naive_s / cached_s:.1f}, identical {out[name]['identical']}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--root", default=None)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--steps", type=int, default=None, help="training steps for every model (default: each model's own)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--config", default="{}", help="JSON of config overrides applied to every model, e.g. '{\"dropout\": 0}'")
    p.add_argument("--quick", action="store_true", help="a few steps, to check the script runs")
    p.add_argument("--sampling-only", action="store_true")
    p.add_argument("--no-sampling", action="store_true")
    p.add_argument("--naive-steps", type=int, default=56, help="naive sampling steps to time (default: two rows)")
    p.add_argument("--full-naive", action="store_true", help="time naive sampling of the whole image")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="initialisation seed of every model")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    if args.data == "mnist" and args.root is None:
        args.root = str(MNIST_8K)
    torch.set_num_threads(args.threads)
    result: dict = {"threads": args.threads}
    if not args.sampling_only:
        result["data"] = args.data
        models = bench_likelihood(args)
        result["likelihood"] = models
        if "pixelcnn" in models:
            ref = models["pixelcnn"]["test_bpd"]
            result["vs_pixelcnn"] = {m: {"test_bpd_ratio": round(v["test_bpd"] / ref, 4), "better": v["test_bpd"] < ref}
                                     for m, v in models.items() if m != "pixelcnn"}
    if not args.no_sampling:
        sampling = bench_sampling(args)
        result["sampling"] = sampling
        result["sampling_target_10x_met"] = all(v["speedup"] >= 10 and v["identical"] for v in sampling.values())
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
