"""Synthesis with the autoregressive models on digits, as JSON (one core):

- inpainting with the top half of each test digit given (`--mask bottom`, exact conditional
  sampling) and with a centre hole (Gibbs sweeps): the agreement of genzoo's digits classifier on
  the completion with the true label, the Frechet distance of the completions to the test digits,
  and, for the top-half mask, the exact bits/dim of the true bottom half given the top;
- class-conditional samples of gated-pixelcnn --num-classes 10: the share classified as the class
  asked for;
- the generative classifier of that model (argmax_y p(x | y)) on the test split, and the marginal
  bits/dim of p(x) = sum_y p(x | y) / 10 beside the unconditional pixelcnn's bits/dim;
- with `--parts flow-matching`, flow-matching --num-classes 10 at guidance 0, 1, 2, 4 (heun, 25 steps);
- with `--parts diffusion`, ddpm --num-classes 10: guided samples at guidance 0, 1, 2, 4 (classified as
  asked, Frechet distance, precision, recall), RePaint against replacement, its generative classifier;
- with `--parts families`, every other family that generates, each --num-classes 10 with its defaults
  (pixelcnn, pixelcnn++, vae, realnvp, glow, vqvae, sohl-dickstein, score-sde): samples classified as
  asked, the generative classifier of the likelihood models with a cheap likelihood (exact or one-pass
  bounds), and RePaint against replacement for score-sde and flow-matching (top half given);
- with `--parts flow-temperature`, the class samples of realnvp and glow --num-classes 10 at latent
  temperatures 1, 0.7 and 0.5 (Glow samples at 0.7: Kingma & Dhariwal 2018, section 5);
- seconds and network passes of every task.

    OMP_NUM_THREADS=1 python3 benchmarks/synthesis.py [--runs DIR] [--n 300] [--sweeps 20] [--parts autoregressive,diffusion]

`--runs DIR` keeps the two trained runs there (DIR/pixelcnn, DIR/gated-pixelcnn-classes) and
reuses them when they have finished.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

import genzoo
from common import emit, log, machine
from genzoo.classifier import load_classifier
from genzoo.masks import known_mask
from genzoo.quality import sample_quality


def trained(name: str, out: Path, **config) -> genzoo.GenerativeModel:
    train, val = genzoo.data.load("digits", "train"), genzoo.data.load("digits", "val")
    model = genzoo.create(name, train.spec, seed=0, **config)
    t0 = time.perf_counter()
    result = genzoo.train(model, train, val, out=out, resume=True, progress=False, grid_size=0)
    log(f"{out.name}: {'already trained' if result.already_finished else f'trained in {time.perf_counter() - t0:.0f} s'}")
    return genzoo.load(out)


def agreement(classifier, x: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return float((classifier(x).argmax(1) == labels).double().mean())


def inpainting(model, test, classifier, mask: str, sweeps: int) -> dict:
    x, labels = test.x, test.labels
    known = known_mask(mask, model.spec, len(x))
    extra = {"labels": labels} if model.num_classes else {}
    t0 = time.perf_counter()
    out = model.inpaint(x, known, generator=torch.Generator().manual_seed(0), sweeps=sweeps, **extra)
    seconds = time.perf_counter() - t0
    stats = model.sample_stats()
    assert torch.equal(out[known], x[known])
    row = {"mask": mask, "method": stats.sampler, "network_passes": stats.nfe, "seconds": round(seconds, 2),
           "classifier_agreement": agreement(classifier, out, labels),
           "fd": sample_quality(out, test.x, data="digits")["fd"]}
    if mask == "bottom":
        nats = model.log_likelihood_given(x, known, **extra).nats
        row["bits_per_dim_of_the_true_bottom_given_the_top"] = float(-nats.sum() / int((~known).sum()) / math.log(2))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default=None)
    p.add_argument("--n", type=int, default=300, help="test digits to inpaint and samples per class test")
    p.add_argument("--sweeps", type=int, default=20)
    p.add_argument("--parts", default="autoregressive", help="comma-separated: autoregressive, diffusion "
                   "(ddpm --num-classes 10: guidance, RePaint, its generative classifier), flow-matching (guidance), "
                   "families (every other conditional family), flow-temperature")
    args = p.parse_args()
    torch.set_num_threads(1)
    runs = Path(args.runs or tempfile.mkdtemp())
    test = genzoo.data.load("digits", "test")
    test = genzoo.data.Dataset(test.x[:args.n], test.spec, test.labels[:args.n], name="digits", split="test")
    classifier, record = load_classifier("digits")
    result = {"benchmark": "synthesis", "data": "digits", "test_images": len(test),
              "classifier_test_accuracy": record["test_accuracy"]}
    parts = set(args.parts.split(","))
    if "autoregressive" in parts:
        result.update(autoregressive(runs, test, classifier, args.n, args.sweeps))
    if "diffusion" in parts:
        result["diffusion"] = diffusion(runs, test, classifier, args.n)
    if "flow-matching" in parts:
        model = trained("flow-matching", runs / "flow-matching-classes", num_classes=10)
        result["flow_matching_guidance"] = guidance_sweep(model, test, classifier, args.n, {"sampler": "heun"})
    if "families" in parts:
        result["families"] = families(runs, test, classifier, args.n)
    if "flow-temperature" in parts:
        result["flow_temperature"] = flow_temperature(runs, test, classifier, args.n)
    result["machine"] = machine()
    emit(result)


def autoregressive(runs: Path, test, classifier, n: int, sweeps: int) -> dict:
    """pixelcnn and gated-pixelcnn --num-classes 10: inpainting, class-conditional samples, the
    generative classifier."""
    plain = trained("pixelcnn", runs / "pixelcnn")
    gated = trained("gated-pixelcnn", runs / "gated-pixelcnn-classes", num_classes=10)
    result: dict = {"inpainting": {}}
    for name, model in (("pixelcnn", plain), ("gated-pixelcnn --num-classes 10", gated)):
        result["inpainting"][name] = [inpainting(model, test, classifier, mask, sweeps)
                                      for mask in ("bottom", "center")]
        log(name, result["inpainting"][name])
    labels = torch.arange(n) % 10
    t0 = time.perf_counter()
    drawn = gated.sample(n, generator=torch.Generator().manual_seed(0), labels=labels)
    result["class_conditional_samples"] = {"model": "gated-pixelcnn --num-classes 10", "samples": n,
                                           "classified_as_asked": agreement(classifier, drawn, labels),
                                           "seconds": round(time.perf_counter() - t0, 2)}
    t0 = time.perf_counter()
    report = genzoo.evaluate.generative_classifier(gated, test)
    result["generative_classifier"] = {**report, "seconds": round(time.perf_counter() - t0, 2),
                                       "pixelcnn_bits_per_dim": genzoo.bits_per_dim(plain, test.x).value,
                                       "gated_conditional_bits_per_dim_given_the_true_label":
                                       genzoo.bits_per_dim(gated, test.x, labels=test.labels).value}
    return result


def guidance_sweep(model, test, classifier, n: int, options: dict) -> dict:
    """Samples of the classes 0-9 in turn at guidance 0, 1, 2 and 4: classified as asked, FD, precision,
    recall, NFE and seconds."""
    labels, out = torch.arange(n) % 10, {}
    for w in (0.0, 1.0, 2.0, 4.0):
        t0 = time.perf_counter()
        x = model.sample(n, generator=torch.Generator().manual_seed(0), labels=labels, guidance=w, **options)
        quality = sample_quality(x, test.x, data="digits")
        out[str(w)] = {"classified_as_asked": agreement(classifier, x, labels), "nfe": model.sample_stats().nfe,
                       "seconds": round(time.perf_counter() - t0, 2), **{k: quality[k] for k in ("fd", "precision", "recall")}}
        log(model.name, "guidance", w, out[str(w)])
    return out


def diffusion(runs: Path, test, classifier, n: int) -> dict:
    """ddpm --num-classes 10: guided samples (50 DDIM steps) at guidance 0, 1, 2, 4 classified as asked
    and their sample quality; RePaint against replacement with the top half given."""
    from genzoo.evaluate import generative_classifier

    model = trained("ddpm", runs / "ddpm-classes", num_classes=10)
    out = {"guidance": guidance_sweep(model, test, classifier, n, {"sampler": "ddim", "steps": 50})}
    known = known_mask("bottom", model.spec, len(test))
    for name, resamplings in (("replacement", 1), ("repaint", 5)):
        t0 = time.perf_counter()
        done = model.inpaint(test.x, known, generator=torch.Generator().manual_seed(0), labels=test.labels,
                             jump_length=10, resamplings=resamplings)
        out[f"inpainting_{name}"] = {"classifier_agreement": agreement(classifier, done, test.labels),
                                     "fd": sample_quality(done, test.x, data="digits")["fd"],
                                     "nfe": model.sample_stats().nfe, "seconds": round(time.perf_counter() - t0, 2)}
        log("ddpm", name, out[f"inpainting_{name}"])
    t0 = time.perf_counter()
    out["generative_classifier"] = {**generative_classifier(model, test, stride=20),
                                    "seconds": round(time.perf_counter() - t0, 2),
                                    "note": "the classifier of the bounds (50 of the 1000 terms per image)"}
    return out


# the families whose generative classifier is cheap here: one likelihood pass per class (exact or one-sample bound)
CHEAP_LIKELIHOOD = ("pixelcnn", "pixelcnn++", "vae", "realnvp", "glow", "vqvae")


def families(runs: Path, test, classifier, n: int) -> dict:
    """Each family --num-classes 10 with its defaults: classes asked for, generative classifier, and
    for the continuous-time models RePaint (jump 10, 5 resamplings over 100 rungs) against replacement."""
    out: dict = {}
    labels = torch.arange(n) % 10
    for name in (*CHEAP_LIKELIHOOD, "sohl-dickstein", "score-sde", "flow-matching"):
        t0 = time.perf_counter()
        model = trained(name, runs / f"{name}-classes", num_classes=10)
        row: dict = {"train_seconds": round(time.perf_counter() - t0, 1)}
        t0 = time.perf_counter()
        options = {"sampler": "ddim", "steps": 50} if name == "sohl-dickstein" else {}
        drawn = model.sample(n, generator=torch.Generator().manual_seed(0), labels=labels, **options)
        stats = model.sample_stats()
        row["samples"] = {"classified_as_asked": agreement(classifier, drawn, labels),
                          "fd": sample_quality(drawn, test.x, data="digits")["fd"],
                          "method": stats.sampler if stats else "ancestral", "nfe": stats.nfe if stats else None,
                          "seconds": round(time.perf_counter() - t0, 2)}
        if name in CHEAP_LIKELIHOOD:
            t0 = time.perf_counter()
            row["generative_classifier"] = {**genzoo.evaluate.generative_classifier(model, test),
                                            "seconds": round(time.perf_counter() - t0, 2)}
        if name in ("score-sde", "flow-matching"):
            known = known_mask("bottom", model.spec, len(test))
            for method, resamplings in (("replacement", 1), ("repaint", 5)):
                t0 = time.perf_counter()
                done = model.inpaint(test.x, known, generator=torch.Generator().manual_seed(0), labels=test.labels,
                                     jump_length=10, resamplings=resamplings, steps=100)
                row[f"inpainting_{method}"] = {"classifier_agreement": agreement(classifier, done, test.labels),
                                               "fd": sample_quality(done, test.x, data="digits")["fd"],
                                               "nfe": model.sample_stats().nfe,
                                               "seconds": round(time.perf_counter() - t0, 2)}
        out[name] = row
        log(name, row)
    return out


def flow_temperature(runs: Path, test, classifier, n: int) -> dict:
    """realnvp and glow --num-classes 10: class samples at latent temperatures 1, 0.7 and 0.5."""
    labels, out = torch.arange(n) % 10, {}
    for name in ("realnvp", "glow"):
        model = trained(name, runs / f"{name}-classes", num_classes=10)
        for t in (1.0, 0.7, 0.5):
            drawn = model.sample(n, generator=torch.Generator().manual_seed(0), labels=labels, temperature=t)
            out[f"{name} T={t}"] = {"classified_as_asked": agreement(classifier, drawn, labels),
                                    "fd": sample_quality(drawn, test.x, data="digits")["fd"]}
            log(name, t, out[f"{name} T={t}"])
    return out


if __name__ == "__main__":
    main()
