"""Reports people read: `report.html` (self-contained: every image inline, no network request),
`report.md` and `results.json`, for `genzoo compare` and, as a model card, for one run
(`genzoo report RUN_DIR [--out DIR]`). Plots are drawn with matplotlib.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from . import checkpoint
from .curves import rankings
from .quality import NOTE as QUALITY_NOTE

REQUIRES = ("matplotlib",)  # checked when `genzoo report` starts

BPD_NOTE = ("Bits per dimension of the discrete test images (lower is better), +- the standard error over test "
            "images. 'exact' is -log2 P(x) itself; 'lower bound' means the model's true bits/dim are at most the "
            "figure. A row's 'estimate' says whether the figure is the full likelihood or the model's cheaper "
            "validation estimate of it; MC se is the Monte-Carlo error of a random estimator where it was measured.")


def _plt() -> Any:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _plt().close(fig)
    return buf.getvalue()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl (none when it has no log)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [checkpoint.parse_json(line, f"a line of {str(path)!r}") for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if isinstance(r, dict)]


def curves_png(runs: dict[str, list[dict[str, Any]]]) -> bytes | None:
    """Training curves: loss against steps, validation score against steps and against seconds."""
    if not any(runs.values()):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for name, rows in runs.items():
        loss = [(r["global_step"], r["loss"]) for r in rows if "loss" in r]
        metric = next((k for k in ("val_bpd", "val_loss") if any(k in r for r in rows)), None)
        if loss:
            line, = axes[0].plot(*zip(*loss), label=name, lw=1)
            for r, nxt in zip(rows, rows[1:]):  # a stage change (the VQ models' codes, then prior) marked
                if "stage" in r and "stage" in nxt and nxt["stage"] != r["stage"]:
                    axes[0].axvline(nxt["global_step"], color=line.get_color(), ls="--", lw=0.8)
                    axes[0].annotate(f"{nxt['stage']} stage", (nxt["global_step"], 1), xycoords=("data", "axes fraction"),
                                     fontsize=7, rotation=90, va="top", ha="right", color=line.get_color())
        if metric:
            val = [(r["global_step"], r.get("seconds"), r[metric]) for r in rows if metric in r]
            axes[1].plot([v[0] for v in val], [v[2] for v in val], marker=".", label=name, lw=1)
            if all(v[1] is not None for v in val):
                axes[2].plot([v[1] for v in val], [v[2] for v in val], marker=".", label=name, lw=1)
    axes[0].set(xlabel="step", ylabel="training loss (model's unit)", title="training loss")
    axes[1].set(xlabel="step", ylabel="validation bits/dim (or loss)", title="validation against steps")
    axes[2].set(xlabel="seconds", ylabel="validation bits/dim (or loss)", title="validation against seconds")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].set_yscale("symlog")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def tradeoff_png(rows: list[dict[str, Any]]) -> bytes | None:
    """Bits/dim (with its standard error) against the Frechet distance, one point per model."""
    pts = [r for r in rows if r.get("bits_per_dim") is not None and r.get("fd") is not None]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    markers = "osD^v<>phX*P"
    for i, r in enumerate(pts):  # a legend names the points: labels beside them overlap where points crowd
        ax.errorbar(r["fd"], r["bits_per_dim"], yerr=r.get("bits_per_dim_se") or 0, fmt=markers[i % len(markers)],
                    mfc="none" if r["kind"] != "exact" else None, capsize=3, label=r["model"])
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xscale("log")
    ax.set(xlabel="Frechet distance to the test split, genzoo features (lower is better)",
           ylabel="test bits/dim (lower is better)", title="likelihood against sample quality\n(open marker: bound)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def curve_png(rows: list[dict[str, Any]], x_key: str, x_label: str) -> bytes | None:
    """Bits/dim and FD against `x_key` (log scale), one line per model through its mean over seeds at
    each budget, the seeds' range as a band."""
    points = [r for r in rows if r.get(x_key) and r.get("bits_per_dim") is not None and "error" not in r]
    if len({r.get("budget") for r in points}) < 2:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for model in sorted({r["model"] for r in points}):
        mine = [r for r in points if r["model"] == model]
        for ax, y_key in zip(axes, ("bits_per_dim", "fd")):
            groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
            for r in mine:
                if r.get(y_key) is not None:
                    groups[r["budget"]].append(r)
            if not groups:
                continue
            xs, ys, lo, hi = [], [], [], []
            for _, group in sorted(groups.items(), key=lambda kv: sum(r[x_key] for r in kv[1]) / len(kv[1])):
                values = [r[y_key] for r in group]
                xs.append(sum(r[x_key] for r in group) / len(group))
                ys.append(sum(values) / len(values))
                lo.append(min(values))
                hi.append(max(values))
            line, = ax.plot(xs, ys, marker="o", lw=1.2, label=model)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
    axes[1].set_yscale("log")  # an early sample grid can be orders of magnitude from the data
    for ax, what in zip(axes, ("test bits/dim (lower is better)", "Frechet distance (lower is better, log scale)")):
        ax.set_xscale("log")
        ax.set(xlabel=x_label, ylabel=what)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle("quality against training compute: mean over seeds, band = the seeds' range", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def _point(r: dict[str, Any], curve: bool) -> str:
    """' (budget B, seed S)' for a row of a curve, '' for a single-point table's."""
    return f" (budget {_fmt(r.get('budget'))}, seed {r.get('seed')})" if curve else ""


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float)) and abs(v) >= 1e6:
        return f"{v:.3g}"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 100 or (v != 0 and abs(v) < 1e-3) else f"{v:.{digits}f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items()) or "default"
    return str(v)


COLUMNS = [("model", "model"), ("bits/dim", "bpd"), ("kind", "kind"), ("estimate", "estimate_short"),
           ("FD", "fd"), ("KID", "kid"), ("precision", "precision"), ("recall", "recall"),
           ("train img/s", "train_images_per_second"), ("train s", "train_seconds"), ("steps", "train_steps"),
           ("train FLOPs", "train_flops"), ("s / sample", "sample_seconds_per_image"), ("NFE", "nfe"),
           ("sampler", "sampler"), ("likelihood s", "likelihood_seconds"), ("parameters", "parameters"),
           ("budget", "budget"), ("seed", "seed")]


def _cells(r: dict[str, Any]) -> list[str]:
    bpd = "n/a" if r.get("bits_per_dim") is None else f"{r['bits_per_dim']:.4f}"
    if r.get("bits_per_dim_se") is not None:
        bpd += f" +- {r['bits_per_dim_se']:.4f}"
    if r.get("estimator_se"):  # a deterministic figure has no Monte-Carlo error to show
        bpd += f" (MC se {_fmt(r['estimator_se'])})"
    est = r.get("estimate", "")
    model = r.get("model", "") + (" (samples near noise)" if r.get("noise_like") else "")
    view = {**r, "model": model, "bpd": bpd, "kind": r.get("kind", "").replace("_", " ") or "n/a",
            "estimate_short": "baseline" if r.get("baseline") else ("validation estimate" if "validation" in est
                                                                     else "full" if est else "n/a")}
    if r.get("kid") is not None and r.get("kid_se") is not None:
        view["kid"] = f"{r['kid']:.4g} +- {r['kid_se']:.2g}"
    return [_fmt(view.get(key)) for _, key in COLUMNS]


def ranked(rows: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with_bpd = sorted([r for r in rows + baselines if r.get("bits_per_dim") is not None], key=lambda r: r["bits_per_dim"])
    return with_bpd + [r for r in rows if r.get("bits_per_dim") is None and "error" not in r]


PAIRS_NOTE = ("Paired differences: at each budget the models are ranked by bits/dim, and each adjacent pair is "
              "compared on the same test images (per-image differences, their standard error combined with the "
              "spread over training seeds); 'A better than B' only where the difference exceeds twice its error.")


def pairs_lines(paired: list[dict[str, Any]]) -> list[str]:
    """The paired differences as markdown table lines (none when there are none)."""
    if not paired:
        return []
    lines = ["", "## Paired differences", "", PAIRS_NOTE, "",
             "| budget | ahead | behind | difference (bits/dim) | error | seed spread | verdict |",
             "| --- | --- | --- | ---: | ---: | ---: | --- |"]
    return lines + [f"| {_fmt(p['budget'])} | {p['a']} | {p['b']} | {p['difference']:.4f} | {p['difference_se']:.4f} | "
                    f"{_fmt(p['seed_spread'])} | {p['verdict']} |" for p in paired]


def summary(protocol: dict[str, Any], rows: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> str:
    """What a reader can conclude, in words, above the numbers."""
    good = [r for r in rows if r.get("bits_per_dim") is not None and "error" not in r]
    if not good:
        return "No model finished with a figure."
    uniform = next((b["bits_per_dim"] for b in baselines if b["model"] == "uniform"), None)
    best = min(good, key=lambda r: r["bits_per_dim"])
    unit = {"flops": "the same budget of training FLOPs", "steps": "the same number of steps",
            "seconds": "the same wall-clock seconds", "default": "its own default steps"}.get(protocol.get("budget"))
    text = (f"Every model trained under {unit}; " if unit else "The runs were trained elsewhere (their budgets "
            "differ); ") + (f"the best figure is {best['model']}'s {best['bits_per_dim']:.3f} bits/dim "
                           f"({best.get('kind', '').replace('_', ' ')}). ")
    behind = sorted({r["model"] for r in good if uniform is not None and r["bits_per_dim"] > uniform})
    if behind:
        text += (f"Above the uniform model's {uniform:.2f} bits/dim at this budget: {', '.join(behind)}. That says "
                 f"they are early in their curves, not that their families fail: a bound far from its optimum can "
                 f"be worse than knowing nothing, and a diffusion bound sums hundreds of such terms. ")
    return text + "A ranking holds at this budget only; compare --budgets draws the curves."


def markdown(protocol: dict[str, Any], rows: list[dict[str, Any]], baselines: list[dict[str, Any]],
             paired: list[dict[str, Any]] = ()) -> str:  # type: ignore[assignment]
    lines = [f"# genzoo compare: {protocol['data']} (test split)", "", summary(protocol, rows, baselines), "",
             BPD_NOTE, "", QUALITY_NOTE,
             f"Sample quality from {protocol['quality_samples']} samples per model against the "
             f"{protocol['test_images']} test images.", "",
             "| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in ranked(rows, baselines)]
    failed = [r for r in rows if "error" in r]
    if failed:
        lines += ["", "Failed:", ""] + [f"- {r['model']}: {r['error']}" for r in failed]
    lines += pairs_lines(list(paired))
    lines += ["", "## Protocol", "", "```", json.dumps(protocol, indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
         "figure{display:inline-block;margin:6px;vertical-align:top}figure.sample img{width:240px}"
         "figcaption{font-size:12px;text-align:center}"
         ".note{color:#444;font-size:13px;max-width:1000px}pre{background:#f4f4f4;padding:8px;font-size:12px}")


def page(title: str, body: list[str]) -> str:
    """A complete HTML page: inline style and images, nothing fetched from anywhere."""
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>" + "\n".join(body) + "</body></html>\n")


def compare_html(protocol: dict[str, Any], rows: list[dict[str, Any]], baselines: list[dict[str, Any]],
                 images: dict[str, bytes], curves: bytes | None, tradeoff: bytes | None,
                 paired: list[dict[str, Any]], budget_curves: list[tuple[str, bytes]]) -> str:
    body = [f"<p>{html.escape(summary(protocol, rows, baselines))}</p>",
            f'<p class="note">{html.escape(BPD_NOTE)}</p><p class="note">{html.escape(QUALITY_NOTE)} '
            f"{protocol['quality_samples']} samples per model against the {protocol['test_images']} test images.</p>",
            "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c, _ in COLUMNS) + "</tr>"]
    body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in ranked(rows, baselines)]
    body.append("</table>")
    body += [f"<p>{html.escape(r['model'])} failed: {html.escape(r['error'])}</p>" for r in rows if "error" in r]
    body.append("<h2>Samples</h2>")
    body += [f"<figure class=\"sample\">{_img(png, name + ' samples')}<figcaption>{html.escape(name)}</figcaption></figure>"
             for name, png in images.items()]
    for title, png in budget_curves:
        body += [f"<h2>{html.escape(title)}</h2>", _img(png, title)]
    if paired:
        body += ["<h2>Paired differences</h2>", f'<p class="note">{html.escape(PAIRS_NOTE)}</p>', "<table><tr>" +
                 "".join(f"<th>{c}</th>" for c in ("budget", "ahead", "behind", "difference", "error", "seed spread",
                                                   "verdict")) + "</tr>"]
        body += ["<tr>" + "".join(f"<td>{html.escape(_fmt(p[k]))}</td>" for k in
                                  ("budget", "a", "b", "difference", "difference_se", "seed_spread", "verdict")) + "</tr>"
                 for p in paired]
        body.append("</table>")
    if tradeoff:
        body += ["<h2>Likelihood against sample quality</h2>", _img(tradeoff, "bits/dim against Frechet distance")]
    if curves:
        body += ["<h2>Training curves</h2>", _img(curves, "training curves")]
    body += ["<h2>Protocol</h2>", f"<pre>{html.escape(json.dumps(protocol, indent=2, default=str))}</pre>"]
    return page(f"genzoo compare: {protocol['data']}", body)


def write_compare_report(out: Path, protocol: dict[str, Any], rows: list[dict[str, Any]],
                         baselines: list[dict[str, Any]], paired: list[dict[str, Any]] = ()) -> dict[str, Path]:  # type: ignore[assignment]
    """results.json (with the paired differences as `pairs`), report.md and report.html in `out`."""
    paired = list(paired)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.refuse_links(out, ("results.json", "report.md", "report.html"))
    curve = len({(r.get("budget"), r.get("seed")) for r in rows}) > 1
    images = {f"{r['model']}{_point(r, curve)}": Path(r["samples_png"]).read_bytes() for r in rows if r.get("samples_png")}
    curves = curves_png({f"{r['model']}{_point(r, curve)}": read_metrics(r["run"]) for r in rows if r.get("run")})
    budget_curves = [(f"Quality against {label}", png) for key, label in
                     (("train_flops", "training FLOPs"), ("train_seconds", "training seconds"))
                     if (png := curve_png(rows, key, label + " (log scale)")) is not None]
    paths = {"json": out / "results.json", "markdown": out / "report.md", "html": out / "report.html"}
    checkpoint.atomic_write_json(paths["json"], {"protocol": protocol, "rows": rows, "baselines": baselines,
                                                 "pairs": paired, "rankings": rankings(rows),
                                                 "notes": [BPD_NOTE, QUALITY_NOTE, PAIRS_NOTE]})
    checkpoint.atomic_write_bytes(paths["markdown"], markdown(protocol, rows, baselines, paired).encode())
    text = compare_html(protocol, rows, baselines, images, curves, tradeoff_png(rows), paired, budget_curves)
    checkpoint.atomic_write_bytes(paths["html"], text.encode())
    return paths


# -- genzoo report RUN_DIR: a model card ------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", help="a run directory (genzoo train --out)")
    parser.add_argument("--out", default=None, help="where to write report.html and report.md (default: DIR)")


def model_card(run_dir: Path) -> tuple[str, str]:
    """(HTML, markdown) of one run: config, data, summary, curves and every PNG it holds."""
    meta = checkpoint.read_config(run_dir)
    summary = checkpoint.read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    pngs = sorted(run_dir.glob("*.png")) + sorted((run_dir / "samples").glob("*.png"))
    curves = curves_png({meta["model"]: read_metrics(run_dir)})
    title = f"genzoo model card: {meta['model']} ({run_dir.name})"
    facts = {"model": meta["model"], "config": meta.get("config"), "run": meta.get("run"), "summary": summary}
    record = meta.get("run") if isinstance(meta.get("run"), dict) else {}
    plain = (f"{meta['model']} trained on {record.get('data', 'its data')}"
             + (f" for {summary['best_step']} steps to its best weights" if isinstance(summary.get("best_step"), int) else "")
             + (f". {summary['final_line']}" if isinstance(summary.get("final_line"), str) else
                ". This run has no final figure yet (genzoo eval RUN computes it)."))
    body = [f"<p>{html.escape(plain)}</p>", "<h2>Configuration</h2>",
            f"<pre>{html.escape(json.dumps(facts, indent=2, default=str))}</pre>"]
    if curves:
        body += ["<h2>Training curves</h2>", _img(curves, "training curves")]
    body.append("<h2>Pictures</h2>")
    body += [f"<figure>{_img(p.read_bytes(), p.stem)}<figcaption>{html.escape(str(p.relative_to(run_dir)))}"
             f"</figcaption></figure>" for p in pngs]
    md = [f"# {title}", "", plain, "", "## Configuration", "", "```", json.dumps(facts, indent=2, default=str), "```", ""]
    md += [f"![{p.stem}]({p.resolve()})" for p in pngs]
    return page(title, body), "\n".join(md) + "\n"


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.dir)
    text, md = model_card(run_dir)
    out = Path(args.out) if args.out else run_dir
    checkpoint.refuse_links(out, ("report.html", "report.md"))
    checkpoint.atomic_write_bytes(out / "report.html", text.encode())
    checkpoint.atomic_write_bytes(out / "report.md", md.encode())
    print(f"wrote {out / 'report.html'} and {out / 'report.md'}")
    return 0
