"""Diffusion on digits: bounds in bits/dim, sampler speed, U-Net training speed; prints one JSON object.

    OMP_NUM_THREADS=1 python benchmarks/diffusion.py                 # default configs, full bounds
    OMP_NUM_THREADS=1 python benchmarks/diffusion.py --quick         # short runs, strided bound estimates
    /tmp/bench-venv/bin/python benchmarks/diffusion.py --only unet   # the U-Net against diffusers' UNet2DModel

    OMP_NUM_THREADS=1 python benchmarks/diffusion.py --only bound --models vdm --steps 1000,2000,4000
                                                                     # vdm's bound against training steps
    OMP_NUM_THREADS=1 python benchmarks/diffusion.py --only bound --models vdm,vdm:schedule=linear --steps 5000
    OMP_NUM_THREADS=1 python benchmarks/diffusion.py --only edm      # edm against ddpm at equal FLOPs

Parts (--only to pick some):
  bound    train each of --models (default `ddpm` with L_simple and `sohl-dickstein` with learned variance
           and the bound objective) with its default config and train_defaults, or with each of the
           --steps, then its bound on the test split in bits/dim: ddpm's and sohl-dickstein's summed over
           all T terms (stride 1) unless --stride says otherwise, vdm's continuous-time bound with its
           default draws per image; with the validation estimates during training (`val_curve`) and the
           test bound at every --steps (`bound_vs_steps`). The independent-pixel model fitted on train
           is the reference; the best non-autoregressive figure before vdm (vae, 1.894) the target's.
  edm      `genzoo compare --models edm,ddpm --budget flops --flops 2.5e12` with ddpm's 1000-step
           ancestral sampler: the Frechet distance of edm's Heun samples (35 NFE) against ddpm's.
  sampling the time to sample 64 images with 1000 ancestral steps and with 50 DDIM steps (same network).
  unet     training images/s of our U-Net against diffusers' UNet2DModel of about the same size
           (needs `diffusers` importable; else reported as unavailable).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import genzoo  # noqa: E402
from common import MNIST_8K, emit, log, machine  # noqa: E402
from genzoo.compare import _value  # noqa: E402
from genzoo.evaluate import independent_pixel_bpd  # noqa: E402
from genzoo.training import train, train_config_for  # noqa: E402

NON_AUTOREGRESSIVE_BEST = {"model": "vae", "test_bpd": 1.894}  # the ELBO in README's table of bounds


def likelihood_options(name: str, args) -> dict:
    """The options of `name`'s log_likelihood: the discrete-time bounds take the stride."""
    return {"stride": args.stride} if name in ("ddpm", "sohl-dickstein") else {}


def bound_part(args, tr, va, te) -> dict:
    out = {"independent_pixel_bpd": independent_pixel_bpd(tr.x, te.x, te.spec.levels).value}
    models = {}
    for name in args.models.split(","):
        budgets = [int(s) for s in args.steps.split(",")] if args.steps else [None]
        curve = [one_bound(name, steps, args, tr, va, te) for steps in budgets]
        models[name] = {**curve[-1], "bound_vs_steps": [{k: c[k] for k in ("steps", "test_bpd", "test_bpd_se",
                                                                               "train_seconds")} for c in curve]}
    if "sohl-dickstein" in models:
        sd = models["sohl-dickstein"]["test_bpd"]
        out["targets"] = {"sohl_dickstein_below_independent_pixels": sd < out["independent_pixel_bpd"]}
        if "ddpm" in models:
            out["targets"]["sohl_dickstein_below_ddpm"] = sd < models["ddpm"]["test_bpd"]
    if "vdm" in models:
        vdm = models["vdm"]["test_bpd"]
        out.setdefault("targets", {}).update({"vdm_at_most_1.80": vdm <= 1.80,
                                              "vdm_below_every_non_autoregressive_family": vdm < NON_AUTOREGRESSIVE_BEST[
                                                  "test_bpd"], "non_autoregressive_best": NON_AUTOREGRESSIVE_BEST})
    out["models"] = models
    return out


def one_bound(spec: str, steps: int | None, args, tr, va, te) -> dict:
    """Train the model `spec` names, NAME or NAME:FIELD=VALUE+FIELD=VALUE (train_defaults, or `steps`), then its
    bound on the test split; `_model` the model."""
    name, _, fields = spec.partition(":")
    overrides = {k: _value(v) for k, v in (f.split("=", 1) for f in fields.split("+") if f)}
    torch.manual_seed(0)
    model = genzoo.create(name, tr.spec, **overrides)
    overrides = {"sample_every": 0}
    if steps:
        overrides["steps"] = steps
    cfg = train_config_for(model, **overrides)
    saved = Path(args.load) / name if args.load else None
    curve = []
    if saved is not None and saved.is_dir():
        log(f"loading {name} from {saved}")
        model, train_s, best = genzoo.load(saved), None, None
    else:
        log(f"training {name}: {cfg}")
        with tempfile.TemporaryDirectory() as run:  # a run directory for its metrics: the validation curve
            t0 = time.perf_counter()
            result = train(model, tr, va, cfg, out=Path(run) / "run", progress=sys.stderr.isatty())
            train_s, best = time.perf_counter() - t0, result.best_value
            rows = map(json.loads, (Path(run) / "run" / "metrics.jsonl").read_text().splitlines())
            curve = [{"step": r["global_step"], "val_bpd": r["val_bpd"]} for r in rows if "val_bpd" in r]
        if args.save:
            genzoo.save(model, Path(args.save) / name)
    model.eval()
    options = likelihood_options(name, args)
    log(f"bound of {name} on {len(te)} test images, {options or 'default options'}")
    t0 = time.perf_counter()
    bpd = genzoo.bits_per_dim(model, te.x, batch_size=len(te), generator=torch.Generator().manual_seed(0), **options)
    if "stride" in options:
        how = "all T terms" if args.stride == 1 else f"strided estimate, every {args.stride}th term"
    else:
        how = f"{model.config.likelihood_samples} draws of (t, eps) per image" if name == "vdm" else "default options"
    spread = estimator_sd(model, te.x) if name == "vdm" else None
    return {"test_bpd": bpd.value, "test_bpd_se": bpd.se, "kind": bpd.kind, "bound": how,
            "one_draw_estimator_sd_bpd": spread,
            "best_val_bpd_estimate": best, "val_curve": curve, "train_seconds": train_s,
            "eval_seconds": time.perf_counter() - t0, "steps": cfg.steps, "batch_size": cfg.batch_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "config": json.loads(json.dumps(model.config.__dict__)), "_model": model}


@torch.no_grad()
def estimator_sd(model, x, draws: int = 8) -> float:
    """The standard deviation of one draw of (t, eps) of the bound's estimate, bits/dim: the spread of
    `draws` single-draw estimates per image, root mean square over images (what the learned schedule's
    shape is trained to lower)."""
    nats = torch.stack([model.log_likelihood(x, generator=torch.Generator().manual_seed(s), samples=1).nats
                        for s in range(draws)])
    return float(nats.var(0).mean().sqrt() / (x[0].numel() * math.log(2)))


def edm_part() -> dict:
    """edm (Heun, 35 NFE) against ddpm (1000 ancestral steps) at 2.5e12 training FLOPs each."""
    from compare import compare as run_compare

    extra = ["--models", "edm,ddpm", "--budget", "flops", "--flops", "2.5e12", "--sample-options",
             "ddpm:sampler=ancestral"]
    out = run_compare(extra)
    rows = {r["model"]: r for r in out.get("rows", [])}
    if "edm" in rows and "ddpm" in rows:
        out["target_edm_fd_at_most_ddpm_ancestral"] = rows["edm"]["fd"] <= rows["ddpm"]["fd"]
    out.pop("table", None)
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


class _Trainer:
    """One AdamW step of `forward(x, t)`'s mean square on a fixed batch, timed."""

    def __init__(self, net, forward, batch: int) -> None:
        self.net, self.forward = net, forward
        self.opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        self.x = torch.randn(batch, 1, 8, 8)
        self.t = torch.randint(0, 1000, (batch,))

    def step(self) -> float:
        t0 = time.perf_counter()
        loss = self.forward(self.x, self.t).pow(2).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t0


def _interleaved_images_per_s(trainers: dict, batch: int, rounds: int, steps: int = 3) -> dict:
    """Median images/s per trainer over `rounds` rounds of `steps` steps, taking turns, so that a
    shared machine's load falls on both alike."""
    for tr in trainers.values():
        tr.step()
        tr.step()
    times = {k: [] for k in trainers}
    for _ in range(rounds):
        for k, tr in trainers.items():
            times[k].append(sum(tr.step() for _ in range(steps)) / steps)
    return {k: batch / sorted(v)[len(v) // 2] for k, v in times.items()}


def unet_part(batch: int, rounds: int) -> dict:
    from genzoo.models.diffusion.ddpm import DDPMConfig
    from genzoo.nn.unet import UNet

    torch.manual_seed(0)
    cfg = DDPMConfig()
    ours = UNet(1, 1, 8, cfg.base_channels, cfg.channel_mults, cfg.num_res_blocks, cfg.attention_resolutions, 0.0)
    out = {"batch": batch, "rounds": rounds, "ours_parameters": sum(p.numel() for p in ours.parameters())}
    trainers = {"ours": _Trainer(ours, lambda x, t: ours(x, t.float()), batch)}
    try:
        import diffusers
        from diffusers import UNet2DModel
    except ImportError:
        out["diffusers"] = "unavailable (diffusers is not importable)"
        out["ours_images_per_s"] = _interleaved_images_per_s(trainers, batch, rounds)["ours"]
        return out
    # the same layout: 2 levels (32, 64 channels), 1 block per level, attention at 4x4, group norm
    theirs = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                         block_out_channels=(cfg.base_channels, 2 * cfg.base_channels),
                         down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                         up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=32,
                         attention_head_dim=2 * cfg.base_channels)
    trainers["diffusers"] = _Trainer(theirs, lambda x, t: theirs(x, t).sample, batch)
    ips = _interleaved_images_per_s(trainers, batch, rounds)
    out.update({"ours_images_per_s": ips["ours"], "diffusers": diffusers.__version__,
                "diffusers_parameters": sum(p.numel() for p in theirs.parameters()),
                "diffusers_images_per_s": ips["diffusers"], "ratio_ours_over_diffusers": ips["ours"] / ips["diffusers"],
                "target_at_least_as_fast_met": ips["ours"] >= ips["diffusers"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--root", default=None)
    p.add_argument("--steps", default=None, help="training steps, or several comma-separated for the bound's curve "
                                                 "(default: train_defaults)")
    p.add_argument("--stride", type=int, default=1, help="bound stride (1: every one of the T terms)")
    p.add_argument("--only", default="bound,sampling,unet", help="comma-separated parts: bound, edm, sampling, unet")
    p.add_argument("--quick", action="store_true", help="300 training steps, stride 20, fewer timing iterations")
    p.add_argument("--models", default="ddpm,sohl-dickstein",
                   help="models of the bound part, comma-separated, each NAME or NAME:FIELD=VALUE+FIELD=VALUE")
    p.add_argument("--save", default=None, help="save each trained model in DIR/NAME")
    p.add_argument("--load", default=None, help="load DIR/NAME instead of training where it exists")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--unet-batch", type=int, default=64)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps = args.steps or "300"
        args.stride = 20 if args.stride == 1 else args.stride
    parts = set(args.only.split(","))
    root = args.root or (str(MNIST_8K) if args.data == "mnist" else None)
    result = {"benchmark": "diffusion", "data": args.data, "machine": machine(),
              "note": "CPU timings; taken on a shared machine, so absolute figures vary with load"}
    trained = None
    if "bound" in parts:
        tr, va, te = (genzoo.data.load(args.data, s, root) for s in ("train", "val", "test"))
        result["bound"] = bound_part(args, tr, va, te)
        trained = result["bound"]["models"].get("ddpm", {}).get("_model")
        for m in result["bound"]["models"].values():
            m.pop("_model")
    if "edm" in parts:
        log("edm against ddpm at 2.5e12 training FLOPs (genzoo compare)")
        result["edm"] = edm_part()
    if "sampling" in parts:
        if trained is None:
            spec = genzoo.data.load(args.data, "test", root).spec
            trained = genzoo.create("ddpm", spec)
        log("timing samplers")
        result["sampling"] = sampling_part(trained)
    if "unet" in parts:
        log("timing U-Nets")
        result["unet"] = unet_part(args.unet_batch, 5 if args.quick else 15)
    emit(result)


if __name__ == "__main__":
    main()
