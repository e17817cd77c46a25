"""Diffusion on digits: bounds in bits/dim, sampler speed, U-Net training speed; prints one JSON object.

    OMP_NUM_THREADS=1 python benchmarks/diffusion.py                 # default configs, full bounds
    OMP_NUM_THREADS=1 python benchmarks/diffusion.py --quick         # short runs, strided bound estimates
    /tmp/bench-venv/bin/python benchmarks/diffusion.py --only unet   # the U-Net against diffusers' UNet2DModel

Parts (--only to pick some):
  bound    train `ddpm` (L_simple) and `sohl-dickstein` (learned variance, bound objective) with their
           default config and train_defaults, then the variational bound on the test split in bits/dim,
           summed over all T terms (stride 1) unless --stride says otherwise; the independent-pixel model
           fitted on train is the reference.
  sampling the time to sample 64 images with 1000 ancestral steps and with 50 DDIM steps (same network).
  unet     training images/s of our U-Net against diffusers' UNet2DModel of about the same size
           (needs `diffusers` importable; else reported as unavailable).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MNIST_8K, emit, log, machine  # noqa: E402

import genzoo  # noqa: E402
from genzoo.evaluate import independent_pixel_bpd  # noqa: E402
from genzoo.train import train, train_config_for  # noqa: E402


def bound_part(args, tr, va, te) -> dict:
    out = {"independent_pixel_bpd": independent_pixel_bpd(tr.x, te.x, te.spec.levels)}
    models = {}
    for name in ("ddpm", "sohl-dickstein"):
        torch.manual_seed(0)
        model = genzoo.create(name, tr.spec)
        overrides = {"sample_every": 0}
        if args.steps:
            overrides["steps"] = args.steps
        cfg = train_config_for(model, **overrides)
        log(f"training {name}: {cfg}")
        t0 = time.perf_counter()
        result = train(model, tr, va, cfg, out_dir=None, progress=sys.stderr.isatty())
        train_s = time.perf_counter() - t0
        model.eval()
        log(f"bound of {name} on {len(te)} test images, stride {args.stride}")
        t0 = time.perf_counter()
        bpd = genzoo.bits_per_dim(model, te.x, batch_size=len(te), generator=torch.Generator().manual_seed(0),
                                  stride=args.stride)
        models[name] = {
            "test_bpd": bpd.value, "kind": bpd.kind,
            "bound": "all T terms" if args.stride == 1 else f"strided estimate, every {args.stride}th term",
            "best_val_bpd_estimate": result.best_value, "train_seconds": train_s, "eval_seconds": time.perf_counter() - t0,
            "steps": cfg.steps, "batch_size": cfg.batch_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "config": json.loads(json.dumps(model.config.__dict__)),
        }
        models[name]["_model"] = model
    sd, dd = models["sohl-dickstein"]["test_bpd"], models["ddpm"]["test_bpd"]
    out["targets"] = {"sohl_dickstein_below_independent_pixels": sd < out["independent_pixel_bpd"],
                      "sohl_dickstein_below_ddpm": sd < dd}
    out["models"] = models
    return out


def sampling_part(model) -> dict:
    model.eval()
    g = torch.Generator().manual_seed(0)
    model.sample(2, g, sampler="ddim", steps=5)  # warm-up
    t0 = time.perf_counter()
    model.sample(64, torch.Generator().manual_seed(0), sampler="ancestral")
    ancestral = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.sample(64, torch.Generator().manual_seed(0), sampler="ddim", steps=50)
    ddim = time.perf_counter() - t0
    return {"ancestral_1000_steps_s": ancestral, "ddim_50_steps_s": ddim, "speedup": ancestral / ddim,
            "target_15x_met": ancestral / ddim >= 15}


def _images_per_s(net, forward, batch: int, iters: int) -> float:
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, 8, 8)
    t = torch.randint(0, 1000, (batch,))
    best = float("inf")
    for i in range(iters + 2):
        t0 = time.perf_counter()
        loss = forward(x, t).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
    return batch / best


def unet_part(batch: int, iters: int) -> dict:
    from genzoo.nn.unet import UNet

    torch.manual_seed(0)
    cfg = genzoo.models.diffusion.ddpm.DDPMConfig()
    ours = UNet(1, 1, 8, cfg.base_channels, cfg.channel_mults, cfg.num_res_blocks, cfg.attention_resolutions, 0.0)
    n_ours = sum(p.numel() for p in ours.parameters())
    out = {"batch": batch, "ours_parameters": n_ours}
    ours_ips = _images_per_s(ours, lambda x, t: ours(x, t.float()), batch, iters)
    out["ours_images_per_s"] = ours_ips
    try:
        from diffusers import UNet2DModel
    except ImportError:
        out["diffusers"] = "unavailable (diffusers is not importable)"
        return out
    import diffusers

    # the same layout: 2 levels (32, 64 channels), 1 block per level, attention at 4x4, group norm
    theirs = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                         block_out_channels=(cfg.base_channels, 2 * cfg.base_channels),
                         down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                         up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=32,
                         attention_head_dim=2 * cfg.base_channels)
    n_theirs = sum(p.numel() for p in theirs.parameters())
    theirs_ips = _images_per_s(theirs, lambda x, t: theirs(x, t).sample, batch, iters)
    out.update({"diffusers": diffusers.__version__, "diffusers_parameters": n_theirs,
                "diffusers_images_per_s": theirs_ips, "ratio_ours_over_diffusers": ours_ips / theirs_ips,
                "target_at_least_as_fast_met": ours_ips >= theirs_ips})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--root", default=None)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: train_defaults)")
    p.add_argument("--stride", type=int, default=1, help="bound stride (1: every one of the T terms)")
    p.add_argument("--only", default="bound,sampling,unet", help="comma-separated parts")
    p.add_argument("--quick", action="store_true", help="300 training steps, stride 20, fewer timing iterations")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--unet-batch", type=int, default=64)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps = args.steps or 300
        args.stride = 20 if args.stride == 1 else args.stride
    parts = set(args.only.split(","))
    root = args.root or (str(MNIST_8K) if args.data == "mnist" else None)
    result = {"benchmark": "diffusion", "data": args.data, "machine": machine(),
              "note": "CPU timings; taken on a shared machine, so absolute figures vary with load"}
    trained = None
    if "bound" in parts:
        tr, va, te = (genzoo.data.load(args.data, s, root) for s in ("train", "val", "test"))
        result["bound"] = bound_part(args, tr, va, te)
        trained = result["bound"]["models"]["ddpm"]["_model"]
        for m in result["bound"]["models"].values():
            m.pop("_model")
    if "sampling" in parts:
        if trained is None:
            spec = genzoo.data.load(args.data, "test", root).spec
            trained = genzoo.create("ddpm", spec)
        log("timing samplers")
        result["sampling"] = sampling_part(trained)
    if "unet" in parts:
        log("timing U-Nets")
        result["unet"] = unet_part(args.unet_batch, 3 if args.quick else 10)
    emit(result)


if __name__ == "__main__":
    main()
