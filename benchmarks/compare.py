"""`genzoo compare` as an instrument, measured: the sample-quality metric's sanity figures, the
quick-try time of every model (`genzoo train MODEL --data digits --steps 30`), and the default
`genzoo compare --data digits` end to end, all as JSON.

    PYTHONPATH=src OMP_NUM_THREADS=1 python3 benchmarks/compare.py [--skip quick,compare] [--compare-args ...]

Targets (2 CPU cores): every quick try in about a minute; the whole compare within 20 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import genzoo  # noqa: E402
from common import REPO, emit, log, machine  # noqa: E402


def sanity(seed: int = 0) -> dict:
    """Held-out real images against noise, and a corruption ladder: a growing fraction of pixels
    replaced by uniform noise (the distance should grow monotonically)."""
    test, val = genzoo.data.load("digits", "test"), genzoo.data.load("digits", "val")
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, test.spec.levels, val.x.shape, generator=g)
    keep = ("fd", "kid", "precision", "recall")
    real = genzoo.sample_quality(val.x, test.x, data="digits")
    out = {"classifier": real["features"], "reference_images": len(test), "sample_images": len(val),
           "held_out_real": {k: real[k] for k in keep},
           "uniform_noise": {k: v for k, v in genzoo.sample_quality(noise, test.x, data="digits").items() if k in keep},
           "corruption": []}
    mask_draw = torch.rand(val.x.shape, generator=g)
    for p in (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0):
        x = torch.where(mask_draw < p, noise, val.x)
        q = genzoo.sample_quality(x, test.x, data="digits")
        out["corruption"].append({"fraction_noise": p, **{k: q[k] for k in keep}})
    fds = [c["fd"] for c in out["corruption"]]
    out["fd_monotone"] = all(a < b for a, b in zip(fds, fds[1:]))
    return out


def quick_tries(models: list[str]) -> list[dict]:
    """Wall-clock seconds of `genzoo train MODEL --data digits --steps 30`, the whole command."""
    rows = []
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            t0 = time.time()
            proc = subprocess.run([sys.executable, "-m", "genzoo", "train", name, "--data", "digits", "--steps", "30",
                                   "--out", f"{tmp}/{name}", "--no-progress"], capture_output=True, text=True, env=env)
            row = {"model": name, "seconds": round(time.time() - t0, 1), "ok": proc.returncode == 0}
            line = next((s for s in proc.stdout.splitlines() if s.startswith("test bits/dim")), None)
            if line:
                row["printed"] = line
            if proc.returncode != 0:  # a model that cannot train on digits says why in one sentence
                row["error"] = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            log(json.dumps(row))
            rows.append(row)
    return rows


def compare(extra: list[str], report_dir: str | None = None) -> dict:
    """The default `genzoo compare --data digits`, timed, and its table; its report stays in
    `report_dir` when given."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = report_dir or f"{tmp}/cmp"
        cmd = [sys.executable, "-m", "genzoo", "compare", "--data", "digits", "--out", out, "--no-progress", *extra]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        seconds = time.time() - t0
        if proc.returncode != 0:
            return {"command": shlex.join(cmd[1:]), "error": proc.stderr[-2000:]}
        results = json.loads(Path(out, "results.json").read_text())
        table = Path(out, "report.md").read_text()
    keys = ("model", "bits_per_dim", "bits_per_dim_se", "kind", "fd", "kid", "precision", "recall",
            "train_steps", "train_seconds", "train_images_per_second", "sample_seconds_per_image", "nfe")
    return {"command": "genzoo compare --data digits " + shlex.join(extra), "seconds": round(seconds, 1),
            "within_20_minutes": seconds < 1200, "protocol": results["protocol"],
            "rows": [{k: r.get(k) for k in keys} for r in results["rows"] + results["baselines"]], "table": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: sanity, quick, compare")
    parser.add_argument("--models", default=None, help="models of the quick tries (default: all)")
    parser.add_argument("--compare-args", default="", help="extra arguments for genzoo compare")
    parser.add_argument("--report-dir", default=None, help="keep the compare report here (default: a temporary one)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    torch.set_num_threads(1)
    result: dict = {"benchmark": "compare", "machine": machine()}
    if "sanity" not in skip:
        result["sanity"] = sanity()
        log(json.dumps(result["sanity"]))
    if "quick" not in skip:
        result["quick_try"] = quick_tries(args.models.split(",") if args.models else genzoo.list_models())
    if "compare" not in skip:
        result["compare"] = compare(shlex.split(args.compare_args), args.report_dir)
    emit(result)


if __name__ == "__main__":
    main()
