"""`genzoo compare` end to end on a tiny budget, its offline report, and `genzoo report` (model cards)."""
from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

import genzoo
from genzoo.cli import main
from genzoo.training import TrainConfig, train


class Page(HTMLParser):
    """Every URL the page would fetch, its images, and its table cells."""

    def __init__(self) -> None:
        super().__init__()
        self.urls, self.images, self.cells, self._cell = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if key in attrs:
                (self.images if tag == "img" else self.urls).append(attrs[key])
        self._cell = tag == "td"

    def handle_data(self, data):
        if self._cell:
            self.cells.append(data.strip())
            self._cell = False


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    out = tmp_path_factory.mktemp("cmp") / "report"
    assert main(["compare", "--models", "pixelcnn,vae", "--budget", "default", "--steps", "4", "--samples", "20",
                 "--out", str(out), "--no-progress"]) == 0
    return out


def test_compare_writes_every_row_with_errors_quality_and_speed(compared):
    results = json.loads((compared / "results.json").read_text())
    assert results["protocol"]["budget"] == "default" and results["protocol"]["seed"] == 0
    rows = {r["model"]: r for r in results["rows"]}
    assert set(rows) == {"pixelcnn", "vae"}
    for r in rows.values():
        for key in ("model", "bits_per_dim", "bits_per_dim_se", "kind", "fd", "kid", "precision", "recall",
                    "train_images_per_second", "sample_seconds_per_image", "nfe"):
            assert key in r, key
        assert r["train_steps"] == 4 and r["train_flops"] > 0 and r["quality_samples"] == 20
        assert 0 < r["bits_per_dim_se"] < 1 and 0 <= r["precision"] <= 1 and r["fd"] > 0
    assert rows["vae"]["nfe"] == 1  # one decoder call draws every sample


def test_the_report_parses_fetches_nothing_and_holds_every_row_and_image(compared):
    page = Page()
    page.feed((compared / "report.html").read_text())
    assert page.urls == [] and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert {"pixelcnn", "vae", "uniform", "independent pixels"} <= set(page.cells)
    assert len(page.images) >= 2 + 1  # a sample grid per model, and the plots
    assert "not Inception FIDs" in (compared / "report.md").read_text()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="the chromium browser is not installed")
def test_a_headless_browser_renders_the_report(compared, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--no-first-run", f"--screenshot={shot}", "--window-size=1200,1600",
                    (compared / "report.html").resolve().as_uri()], capture_output=True, timeout=120,
                   cwd=tmp_path)
    from PIL import Image
    img = Image.open(shot).convert("L")
    assert img.size == (1200, 1600)
    assert len(img.histogram()) and sum(1 for c in img.histogram() if c) > 20, "the page rendered blank"


def test_genzoo_report_writes_a_model_card_of_a_run(compared, tmp_path):
    assert main(["report", str(compared / "vae"), "--out", str(tmp_path)]) == 0
    page = Page()
    page.feed((tmp_path / "report.html").read_text())
    assert page.urls == [] and len(page.images) >= 2  # curves and the sample grid
    card = (tmp_path / "report.md").read_text()
    first = card.split("\n")[2]  # the card opens with a plain summary, the raw configuration below it
    assert first.startswith("vae trained on digits") and card.index("## Configuration") > 0
    assert "no final figure yet (genzoo eval RUN computes it)" in first  # compare's runs keep their figure in the report


def test_max_seconds_ends_training_early_with_a_last_validation(tmp_path):
    data = genzoo.data.load("digits", "train")
    model = genzoo.create("vae", data.spec)
    result = train(model, data, None, TrainConfig(steps=100000, max_seconds=0.5, eval_every=10**6, sample_every=0),
                   out=tmp_path / "run", progress=False)
    assert 0 < result.steps < 100000 and result.best_step == result.steps


def test_nfe_is_the_model_record_or_the_count_of_network_calls():
    from genzoo.compare import count_nfe
    from tiny import tiny

    spec = genzoo.DataSpec(1, 8, 8, 17)
    flow = genzoo.create("flow-matching", spec, **tiny("flow-matching")).eval()
    _, nfe, sampler = count_nfe(flow, lambda: flow.sample(2, sampler="heun", steps=3))
    assert sampler == "heun" and nfe == flow.sample_stats().nfe and nfe > 3  # Heun: two evaluations per step
    pixelcnn = genzoo.create("pixelcnn", genzoo.DataSpec(1, 3, 3, 4), **tiny("pixelcnn")).eval()
    _, nfe, sampler = count_nfe(pixelcnn, lambda: pixelcnn.sample(2, cache=False))
    assert sampler is None and nfe == 9  # one full network pass per pixel
