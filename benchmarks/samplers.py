"""The sampler menu on digits: sample quality and time against NFE, and flow matching's bound; one JSON object.

    OMP_NUM_THREADS=1 python benchmarks/samplers.py --runs /tmp/runs          # train (or load) both models
    OMP_NUM_THREADS=1 python benchmarks/samplers.py --runs /tmp/runs --n 300 --nfe 10,20,50,100

Each model (default `ddpm` and `flow-matching`) is loaded from RUNS/NAME when that holds a run, else
trained there with its default config and train_defaults. For every sampler that applies, at about
each NFE of --nfe (heun takes steps = NFE / 2), n samples are drawn with one seed and scored against
the test split by `genzoo.sample_quality` (Frechet distance, KID, precision and recall of genzoo's
digits-classifier features; comparable within genzoo only, never with published FIDs), and by the
Frechet distance of raw pixels in [0, 1] as a secondary column. The reference is 1000-step ancestral
sampling for ddpm and 1000-step euler for flow-matching (which has no ancestral sampler). `--bound`
adds flow matching's test bound (rk45, Hutchinson divergence).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
import genzoo  # noqa: E402
from common import emit, log, machine  # noqa: E402
from genzoo.quality import frechet_distance  # noqa: E402
from genzoo.training import train, train_config_for  # noqa: E402

MENU = {"ddpm": ("ddim", "euler", "heun", "dpm-solver++"), "flow-matching": ("euler", "heun", "dpm-solver++")}
REFERENCE = {"ddpm": ("ancestral", None), "flow-matching": ("euler", 1000)}


def features(x: Tensor, levels: int) -> Tensor:
    """Raw pixels in [0, 1], (N, C*H*W)."""
    return x.flatten(1).double() / (levels - 1)


def get_model(name: str, runs: Path, tr, va) -> tuple[genzoo.GenerativeModel, float | None]:
    run = runs / name
    if (run / "config.json").is_file():
        log(f"loading {name} from {run}")
        return genzoo.load(run), None
    torch.manual_seed(0)
    model = genzoo.create(name, tr.spec)
    cfg = train_config_for(model, sample_every=0)
    log(f"training {name}: {cfg}")
    t0 = time.perf_counter()
    train(model, tr, va, cfg, out=run, progress=sys.stderr.isatty())
    return genzoo.load(run), time.perf_counter() - t0


def sweep(name: str, model, te, n: int, nfes: list[int], seed: int, described: dict) -> list[dict]:
    ref_feats = features(te.x, te.spec.levels)
    rows = []

    def draw(sampler: str, steps: int | None) -> None:
        t0 = time.perf_counter()
        x = model.sample(n, torch.Generator().manual_seed(seed), sampler=sampler, steps=steps)
        seconds = time.perf_counter() - t0
        stats = model.sample_stats()
        quality = genzoo.sample_quality(x, te.x, data="digits")
        row = {"sampler": sampler, "steps": steps, "nfe": stats.nfe, "seconds": round(seconds, 2),
               **{key: quality[key] for key in ("fd", "kid", "kid_se", "precision", "recall")},
               "fd_raw_pixels": frechet_distance(features(x, te.spec.levels), ref_feats)}
        log(name, row)
        described.update(features=quality["features"], reference_images=quality["reference"])
        rows.append(row)

    draw(*REFERENCE[name])
    for sampler in MENU[name]:
        for nfe in nfes:
            draw(sampler, max(1, (nfe + 1) // 2) if sampler == "heun" else nfe)
    if name == "flow-matching":
        draw("ode", None)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/samplers", help="directory of the trained runs (loaded or written)")
    parser.add_argument("--models", default="ddpm,flow-matching")
    parser.add_argument("--n", type=int, default=300, help="samples per sampler and NFE")
    parser.add_argument("--nfe", default="10,20,50,100")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bound", action="store_true", help="also flow matching's test bound in bits/dim")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tr, va, te = (genzoo.data.load("digits", split=s) for s in ("train", "val", "test"))
    nfes = [int(v) for v in args.nfe.split(",")]
    out = {"machine": machine(), "data": "digits", "n_samples": args.n,
           "quality": "genzoo.sample_quality(samples, test split, data='digits'): fd, kid, precision, recall",
           "fd_raw_pixels": "Frechet distance of raw pixels scaled to [0, 1] against the test split", "models": {}}
    for name in args.models.split(","):
        model, train_s = get_model(name, Path(args.runs), tr, va)
        entry: dict = {"train_seconds": train_s}
        if args.bound and name == "flow-matching":
            t0 = time.perf_counter()
            bpd = genzoo.bits_per_dim(model, te.x, batch_size=len(te), generator=torch.Generator().manual_seed(0))
            entry["test_bpd"] = {"value": bpd.value, "kind": bpd.kind, "seconds": time.perf_counter() - t0,
                                 "how": "rk45 (config tolerances), Hutchinson divergence, one dequantization draw"}
            log(name, entry["test_bpd"])
        entry["samplers"] = sweep(name, model, te, args.n, nfes, args.seed, out)
        out["models"][name] = entry
    emit(out)


if __name__ == "__main__":
    main()
