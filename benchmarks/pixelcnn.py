"""PixelCNN's default configuration, trained and measured; prints one JSON object.

    python benchmarks/pixelcnn.py                                  # digits, default config (the `genzoo train` default)
    python benchmarks/pixelcnn.py --data mnist --root ../shared/data/mnist-8k --steps 4000

Reports test bits/dim (exact), the per-pixel independent and uniform baselines, training images/s,
wall-clock training time, the time to sample 64 images (cached and plain), and peak memory.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import genzoo  # noqa: E402
from common import MNIST_8K, emit, log, machine, peak_memory_mb, timed  # noqa: E402
from genzoo.evaluate import independent_pixel_bpd  # noqa: E402
from genzoo.training import resolve_device, train, train_config_for  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="pixelcnn")
    p.add_argument("--data", default="digits")
    p.add_argument("--root", default=None)
    p.add_argument("--steps", type=int, default=None, help="default: the model's train_defaults")
    p.add_argument("--config", default="{}", help="JSON of model config overrides")
    p.add_argument("--train", default="{}", help="JSON of TrainConfig overrides")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="keep the run directory here")
    p.add_argument("--no-sampling", action="store_true", help="skip timing the 64-sample draws (slow at 28x28 without a cache)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.root or (str(MNIST_8K) if args.data == "mnist" else None)
    tr = genzoo.data.load(args.data, "train", root)
    va = genzoo.data.load(args.data, "val", root)
    te = genzoo.data.load(args.data, "test", root)
    torch.manual_seed(0)
    model = genzoo.create(args.model, tr.spec, **json.loads(args.config))
    cfg = train_config_for(model, **{"steps": args.steps, "sample_every": 0, **json.loads(args.train)})
    device = resolve_device(cfg.device)
    log(f"training {args.model} on {args.data}: {cfg}")
    t0 = time.perf_counter()
    result = train(model, tr, va, cfg, out=args.out, progress=sys.stderr.isatty())
    train_seconds = time.perf_counter() - t0
    model.eval()
    bpd = genzoo.bits_per_dim(model, te.x.to(device))
    out = {
        "benchmark": "pixelcnn-train", "model": args.model, "data": args.data,
        "train_images": len(tr), "test_images": len(te),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": json.loads(json.dumps(model.config.__dict__)), "train_config": cfg.__dict__,
        "test_bpd": bpd.value, "kind": bpd.kind, "best_val_bpd": result.best_value, "best_step": result.best_step,
        "independent_pixel_bpd": independent_pixel_bpd(tr.x, te.x, tr.spec.levels).value,
        "uniform_bpd": math.log2(tr.spec.levels),
        "train_seconds": train_seconds, "train_images_per_second": result.images_per_second,
    }
    if not args.no_sampling:
        g = lambda: torch.Generator(device=device).manual_seed(0)  # noqa: E731
        _, out["sample64_seconds"] = timed(lambda: model.sample(64, generator=g()))
        if "cache" in inspect.signature(model.sample).parameters:
            _, out["sample64_seconds_uncached"] = timed(lambda: model.sample(64, generator=g(), cache=False))
    out["peak_memory_mb"] = peak_memory_mb(device)
    out["machine"] = machine()
    emit(out)


if __name__ == "__main__":
    main()
