"""VQ-VAE, VQ-VAE-2 and colorization benchmark.

VQ-VAE / VQ-VAE-2 (each trained in its two stages, autoencoder then priors, with the default
config and train_defaults unless --steps is given): test reconstruction PSNR, codebook usage and
perplexity, the priors' bits per code, and the bits/dim lower bound log p(x | z) + log p(z).

Colorization: there is no colour dataset shipped, so one is made here from the 8x8 digits:
each digit is painted in a colour chosen by its class (hue = class / 10, plus a jitter of up to
+-0.03, saturation 0.9, value 0.95) on a background of the opposite hue (saturation 0.6,
value 0.4), blended by the digit's intensity, as 8-bit RGB (256 levels). The colour can be
predicted from the lightness only by recognising the digit. Reported on its test split:
per-pixel bin accuracy, PSNR of colorized vs true images, and two references: the PSNR of the
grey image (lightness only) and the accuracy of always answering the most frequent bin.

Prints one JSON object to stdout; progress goes to stderr. Examples:

    OMP_NUM_THREADS=1 python benchmarks/vq_and_colorization.py
    OMP_NUM_THREADS=1 python benchmarks/vq_and_colorization.py --data mnist --root /work/shared/data/mnist-8k --steps 1000
    OMP_NUM_THREADS=1 python benchmarks/vq_and_colorization.py --quick
"""
from __future__ import annotations

import argparse
import colorsys
import json
import sys
import time

import torch

import genzoo
from genzoo.data.spec import Dataset, DataSpec
from genzoo.training import train, train_config_for


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def coloured_digits(split: str, seed: int = 0) -> Dataset:
    """The digits of `split`, painted by class on a background of the opposite hue, 256 levels."""
    digits = genzoo.data.load("digits", split=split)
    g = torch.Generator().manual_seed(seed + {"train": 0, "val": 1, "test": 2}[split])
    jitter = (torch.rand(len(digits), 2, generator=g) - 0.5) * 0.06
    fg, bg = [], []
    for y, (j1, j2) in zip(digits.labels.tolist(), jitter.tolist()):
        hue = (y / 10 + j1) % 1.0
        fg.append(colorsys.hsv_to_rgb(hue, 0.9, 0.95))
        bg.append(colorsys.hsv_to_rgb((hue + 0.5 + j2) % 1.0, 0.6, 0.4))
    fg = torch.tensor(fg, dtype=torch.float64)[:, :, None, None]
    bg = torch.tensor(bg, dtype=torch.float64)[:, :, None, None]
    alpha = digits.x.double() / (digits.spec.levels - 1)                   # (N, 1, 8, 8)
    rgb = (1 - alpha) * bg + alpha * fg
    x = (rgb * 255).round().long()
    return Dataset(x, DataSpec(3, digits.spec.height, digits.spec.width, 256), digits.labels,
                   name="coloured-digits", split=split)


def run(name: str, tr: Dataset, va: Dataset, te: Dataset, args, **overrides) -> dict:
    model = genzoo.create(name, tr.spec, **overrides)
    train_overrides = {"sample_every": 0}
    if args.steps:
        train_overrides["steps"] = args.steps
    if args.quick:
        train_overrides.update(steps=args.steps or 60, eval_every=30)
    cfg = train_config_for(model, **train_overrides)
    log(f"[{tr.name}] training {name}: {len(model.stages)} x {cfg.steps} steps, batch {cfg.batch_size}")
    t = time.time()
    result = train(model, tr, va, cfg, progress=args.progress)
    seconds = time.time() - t
    model.eval()
    g = torch.Generator().manual_seed(0)
    out = {k: round(v, 4) for k, v in model.task_metrics(te, g).items()}
    if model.has_likelihood:
        bpd = genzoo.bits_per_dim(model, te.x)
        out.update(test_bpd=round(bpd.value, 4), kind=bpd.kind)
    out.update(stages=list(model.stages), steps_per_stage=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr,
               train_seconds=round(seconds, 1), params=sum(p.numel() for p in model.parameters()),
               history=result.history)
    log(f"[{tr.name}] {name}: {json.dumps({k: v for k, v in out.items() if k != 'history'})}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="digits", help="dataset for VQ-VAE / VQ-VAE-2 (digits, mnist, ...)")
    p.add_argument("--root", default=None, help="directory of the dataset files, if not shipped")
    p.add_argument("--steps", type=int, default=None, help="steps per stage (default: the models' train_defaults)")
    p.add_argument("--models", nargs="+", default=["vqvae", "vqvae2", "colorization"])
    p.add_argument("--quick", action="store_true", help="a few steps only, to check the script runs")
    p.add_argument("--progress", action="store_true", help="progress bars on stderr")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out: dict = {"data": args.data, "torch_threads": 1}
    vq = [m for m in args.models if m != "colorization"]
    if vq:
        tr, va, te = (genzoo.data.load(args.data, split=s, root=args.root) for s in ("train", "val", "test"))
        for name in vq:
            out[name] = run(name, tr, va, te, args)
    if "colorization" in args.models:
        tr, va, te = (coloured_digits(s) for s in ("train", "val", "test"))
        for rebalance in (False, True):
            key = "colorization" + ("_rebalanced" if rebalance else "")
            out[key] = {"data": "coloured digits (synthetic, made in this script)",
                        **run("colorization", tr, va, te, args, rebalance=rebalance)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
