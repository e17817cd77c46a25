"""Autoencoder benchmark: VAE bits/dim as ELBO and IWAE(k), DAE PSNR gain, training images/s.

Trains each model with its default configuration and training settings (the same as
`genzoo train MODEL --data DATA`), keeps the best EMA weights on the validation split, and
evaluates on the test split. Prints one JSON object to stdout; progress goes to stderr.

    OMP_NUM_THREADS=1 python benchmarks/autoencoders.py --data digits
    OMP_NUM_THREADS=1 python benchmarks/autoencoders.py --data mnist --root /work/shared/data/mnist-8k \\
        --vae decoder=logistic --num-samples 64 --iwae-images 200
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

import genzoo
from genzoo.evaluate import bits_per_dim
from genzoo.training import train, train_config_for


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """key=value pairs; values parsed as int, float or left as strings."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        for cast in (int, float):
            try:
                out[key] = cast(raw)
                break
            except ValueError:
                continue
        else:
            out[key] = raw
    return out


def train_model(name: str, data: dict[str, genzoo.Dataset], overrides: dict[str, Any], steps: int | None,
                seed: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    torch.manual_seed(seed)
    model = genzoo.create(name, data["train"].spec, **overrides)
    cfg = train_config_for(model, steps=steps, seed=seed, sample_every=0)
    log(f"training {name} for {cfg.steps} steps ({sum(p.numel() for p in model.parameters())} parameters)")
    result = train(model, data["train"], data["val"], cfg, progress=False)
    info = {"config": overrides, "steps": cfg.steps,
            "batch_size": cfg.batch_size, "train_seconds": round(result.seconds, 1),
            "train_images_per_second": round(result.images_per_second, 1),
            "best_val": round(result.best_value, 4), "best_val_metric": result.metric, "best_step": result.best_step}
    log(f"  {name}: {info}")
    return model.eval(), info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--root", default=None)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: each model's own)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 100 steps, k = 16, 100 test images")
    parser.add_argument("--num-samples", type=int, default=512, help="k of the IWAE bound")
    parser.add_argument("--iwae-images", type=int, default=None, help="test images for the IWAE bound (default all)")
    parser.add_argument("--models", default="vae,dae")
    parser.add_argument("--vae", nargs="*", default=[], metavar="KEY=VALUE", help="VAE config overrides")
    parser.add_argument("--dae", nargs="*", default=[], metavar="KEY=VALUE", help="DAE config overrides")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps, k, iwae_images = args.steps, args.num_samples, args.iwae_images
    if args.quick:
        steps, k, iwae_images = steps or 100, min(k, 16), iwae_images or 100
    data = {s: genzoo.data.load(args.data, split=s, root=args.root) for s in ("train", "val", "test")}
    test = data["test"]
    report: dict[str, Any] = {"benchmark": "autoencoders", "data": args.data, "torch_threads": torch.get_num_threads(),
                              "train_images": len(data["train"]), "test_images": len(test)}
    for name in args.models.split(","):
        overrides = parse_overrides(getattr(args, name, []) or [])
        model, info = train_model(name, data, overrides, steps, args.seed)
        if name == "vae":
            torch.manual_seed(args.seed)
            t = time.time()
            elbo = bits_per_dim(model, test.x)
            info["test_elbo_bits_per_dim"] = round(elbo.value, 4)
            info["elbo_seconds"] = round(time.time() - t, 2)
            x = test.x[:iwae_images] if iwae_images else test.x
            torch.manual_seed(args.seed)
            t = time.time()
            iwae = bits_per_dim(model, x, batch_size=64, num_samples=k)
            info[f"test_iwae{k}_bits_per_dim"] = round(iwae.value, 4)
            info["iwae_num_samples"], info["iwae_images"] = k, len(x)
            info["iwae_seconds"] = round(time.time() - t, 1)
            if iwae_images:  # the ELBO on the same images, for a like-for-like gap
                torch.manual_seed(args.seed)
                info["test_elbo_bits_per_dim_same_images"] = round(bits_per_dim(model, x).value, 4)
            log(f"  vae: ELBO {elbo.value:.4f}, IWAE({k}) {iwae.value:.4f} bits/dim")
        metrics = model.task_metrics(test, torch.Generator().manual_seed(args.seed))
        info["test_metrics"] = {key: round(v, 4) for key, v in metrics.items()}
        report[name] = info
    if "vae" in report:
        report["target_vae_iwae_bits_per_dim"] = 2.2
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
