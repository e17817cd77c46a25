"""The GPU check, in one run printing one JSON object: every registered model trains a few dozen
steps on the device in fp32 and in bf16 (autocast), samples, and is evaluated; results must be
finite, and the bf16 bits/dim of the fp32-trained weights must lie within 0.01 of fp32's. Then one
training step of genzoo's U-Net (ddpm) is timed against diffusers' UNet2DModel of about the same
size, when diffusers is importable, and the steps of pixelcnn, ddpm and glow in channels_last and
under torch.compile against the plain step (benchmarks/speed.py's pairs and options).

    python3 benchmarks/gpu_check.py                      # CUDA (fails in one line without it)
    python3 benchmarks/gpu_check.py --device cpu --steps 4 --models pixelcnn,vae   # a dry run
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import genzoo  # noqa: E402
from common import emit, log, machine  # noqa: E402
from genzoo.data.spec import Dataset  # noqa: E402
from genzoo.evaluate import bits_per_dim  # noqa: E402
from genzoo.precision import Precision  # noqa: E402
from genzoo.training import train, train_config_for  # noqa: E402

BF16_TOLERANCE = 0.01  # bits/dim, on the same weights


def tinted(ds: Dataset) -> Dataset:
    """The digits as colour images (3, 8, 8), 17 levels: each digit in its own colour, for the
    models that need colour (colorization)."""
    g = torch.Generator().manual_seed(0)
    tint = torch.rand(len(ds.x), 3, 1, 1, generator=g) * 0.8 + 0.2
    x = (ds.x.double() * tint).round().long()
    return Dataset(x, genzoo.DataSpec(3, 8, 8, ds.spec.levels), ds.labels, name="tinted-digits", split=ds.split)


def check_model(name: str, data: dict[str, Any], device: str, steps: int, samples: int) -> dict[str, Any]:
    """Train `name` in fp32 and in bf16, sample each, and compare bits/dim of the fp32 weights."""
    cls = genzoo.registry.model_class(name)
    train_x, val_x, test_x = data["train"], data["val"], data["test"]
    if cls.conditional and train_x.spec.channels != 3:
        train_x, val_x, test_x = data["colour"]
    out: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        model = genzoo.create(name, train_x.spec, seed=0)
        cfg = train_config_for(model, steps=steps, eval_every=steps, sample_every=0, grid_size=0, device=device,
                               precision=precision, seed=0)
        t0 = time.perf_counter()
        result = train(model, train_x, val_x, cfg, progress=False)
        seconds = time.perf_counter() - t0
        row: dict[str, Any] = {"train_seconds": round(seconds, 2), "images_per_second": round(result.images_per_second, 1),
                               "best_value": result.best_value, "metric": result.metric}
        model.eval()
        if not model.conditional:
            with Precision(precision, model.device).autocast():
                x = model.sample(samples, generator=torch.Generator(device=model.device).manual_seed(0),
                                 **model.quick_sample_options)
            row["samples_ok"] = bool(x.shape == (samples, *model.spec.shape) and int(x.min()) >= 0
                                     and int(x.max()) < model.spec.levels)
        if model.has_likelihood:
            torch.manual_seed(0)
            row["bits_per_dim"] = bits_per_dim(model, test_x.x[:256], batch_size=128).value
            if precision == "fp32":  # the same weights under bf16 autocast
                torch.manual_seed(0)
                with Precision("bf16", model.device).autocast():
                    row["bits_per_dim_bf16_same_weights"] = bits_per_dim(model, test_x.x[:256], batch_size=128).value
                row["bf16_gap"] = abs(row["bits_per_dim_bf16_same_weights"] - row["bits_per_dim"])
        row["finite"] = all(math.isfinite(v) for v in row.values() if isinstance(v, float))
        out[precision] = row
    fp32 = out["fp32"]
    out["ok"] = all(r["finite"] and r.get("samples_ok", True) for r in out.values() if isinstance(r, dict)) and (
        fp32.get("bf16_gap", 0.0) <= BF16_TOLERANCE)
    return out


def speed_on(device: str) -> dict[str, Any]:
    """On the device: genzoo's U-Net (ddpm) against diffusers' UNet2DModel of about the same size (each
    with its own optimizer, then forward and backward alone), and the step options (channels_last,
    torch.compile) against the plain step, as benchmarks/speed.py measures them on a CPU."""
    data = genzoo.data.load("digits")
    x = data.x[:64].to(device)
    out: dict[str, Any] = {}
    try:
        import speed
    except Exception as e:  # the check's results still print
        return {"skipped": f"benchmarks/speed.py did not import: {type(e).__name__}: {e}"}
    try:
        ours, our_loss = speed.genzoo_model("ddpm", data)
        theirs, their_loss = speed.diffusers_unet(ours, data.spec)
        out["unet_vs_diffusers"] = speed.versus(ours.to(device), our_loss, theirs.to(device), their_loss, x,
                                                rounds=7, per_round=10)
    except Exception as e:  # diffusers missing or incompatible: say so, do not fail the check
        out["unet_vs_diffusers"] = {"skipped": f"{type(e).__name__}: {e}"}
    for name in ("pixelcnn", "ddpm", "glow"):
        try:
            out[f"{name}_step_options"] = speed.step_options(name, data, x, rounds=7, per_round=10, device=device)
        except Exception as e:
            out[f"{name}_step_options"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--models", default=None, help="comma-separated (default: every registered model)")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: CUDA is not available here; pass --device cpu for a dry run.")
    digits = {s: genzoo.data.load("digits", s) for s in ("train", "val", "test")}
    data = {**digits, "colour": tuple(tinted(digits[s]) for s in ("train", "val", "test"))}
    results: dict[str, Any] = {}
    for name in (args.models.split(",") if args.models else genzoo.list_models()):
        log(f"{name} ...")
        try:
            results[name] = check_model(name, data, args.device, args.steps, args.samples)
        except Exception as e:  # one model's failure is a finding, not the end of the check
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-800:]}
    emit({"benchmark": "gpu-check", "device": args.device, "steps": args.steps, "models": results,
          "all_ok": all(r.get("ok") for r in results.values()), "speed": speed_on(args.device),
          "machine": machine()})


if __name__ == "__main__":
    main()
