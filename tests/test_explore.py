"""`genzoo explore`: the panels' work on tiny runs (explore_core, no web library needed), the page
through Gradio's own client (every endpoint; errors one sentence; the server keeps serving; only the
runs given can be read), and the page in a real browser (Debian's Chromium driven by Playwright: it
loads, Sample shows an image, clicked pixels are inpainted, a screenshot is kept)."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import genzoo
from genzoo import GenzooError
from genzoo.cli import main
from genzoo.explore_core import LIMITS, Explorer, find_runs, load_runs, picture_to_levels
from tiny import tiny

TRAIN = dict(steps=2, eval_every=2, grid_size=0, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Three tiny runs on digits in one folder (as compare leaves them): a class-conditional pixelcnn,
    flow-matching and an unconditional vae."""
    root = tmp_path_factory.mktemp("explore")
    train, val = genzoo.data.load("digits", "train"), genzoo.data.load("digits", "val")
    for name, extra in (("pixelcnn", {"num_classes": 10}), ("flow-matching", {}), ("vae", {})):
        model = genzoo.create(name, train.spec, seed=0, **tiny(name), **extra)
        genzoo.train(model, train, val, out=root / name, **TRAIN)
    return root


@pytest.fixture(scope="module")
def explorer(runs) -> Explorer:
    return Explorer(load_runs([str(runs)]))


def test_a_compare_folder_names_its_runs_and_a_wrong_path_is_one_sentence(runs, tmp_path):
    assert [p.name for p in find_runs([str(runs)])] == ["flow-matching", "pixelcnn", "vae"]
    with pytest.raises(GenzooError, match="is not a directory"):
        find_runs([str(tmp_path / "missing")])
    with pytest.raises(GenzooError, match="neither a run"):
        find_runs([str(tmp_path)])


def test_every_panel_returns_pictures_and_says_what_ran(explorer):
    grid, text = explorer.sample("pixelcnn", 4, 0, label=3)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[2] == 3 and "4 images" in text
    grid, text = explorer.sample("flow-matching", 2, 1, sampler="euler", steps=3)
    assert "euler, 3 network evaluations" in text
    frames, text = explorer.trajectory("flow-matching", 0, 4)
    assert len(frames) == 4 and "predicted x_0" in text
    frames, _ = explorer.trajectory("pixelcnn", 0, 5)
    assert len(frames) == 5  # the canvas as it fills
    shown, text = explorer.inpaint(["pixelcnn", "flow-matching", "vae"], None, 2, "bottom", None, 0)
    assert len(shown) == 3 and "exact conditional" in text and "repaint" in text and "pseudo-gibbs" in text
    edited, text = explorer.edit("flow-matching", None, 1, 0.5, 0)
    assert "sdedit" in text
    path, text = explorer.interpolate("vae", 1, 2, 5)
    assert path.shape[1] > path.shape[0] and "5 points" in text
    rows, maps = explorer.likelihood(None, 1)
    kinds = {row[1]: row[3] for row in rows}
    assert kinds["pixelcnn"].startswith("exact (marginal over classes") and kinds["vae"] == "lower_bound"
    assert len(maps) == 1 and maps[0][0].dtype == np.uint8  # the autoregressive run's surprise map


def test_clicked_pixels_are_what_is_completed(explorer):
    clicks = None
    for where in ((10, 10), (40, 10), (40, 10), (200, 250)):  # the third click gives the second pixel back
        clicks = explorer.toggle("pixelcnn", clicks, where)
    marked = torch.tensor(clicks)
    assert marked.sum() == 2 and marked[0, 0] and marked[7, 6] and not marked[0, 1]
    shown, text = explorer.inpaint(["pixelcnn"], None, 1, "bottom", clicks, 0)
    assert "gibbs" in text  # (7, 6) comes before (7, 7): not a raster suffix
    view = explorer.mask_view("pixelcnn", None, 1, clicks)
    assert view.shape == (256, 256, 3) and (view[0, 0] == [220, 30, 30]).all()
    assert len(shown) == 1 and "2 sub-pixels completed" in text  # the two clicked pixels, no more


def test_bad_requests_are_one_sentence(explorer, monkeypatch):
    cases = [
        (lambda: explorer.sample("../../etc/passwd", 4, 0), "no run named"),
        (lambda: explorer.sample("pixelcnn", LIMITS.images + 1, 0), "number of images must be a whole number"),
        (lambda: explorer.sample("flow-matching", 2, 0, steps=LIMITS.steps + 1), "steps must be"),
        (lambda: explorer.sample("flow-matching", 2, 0, sampler="warp"), "is not a sampler"),
        (lambda: explorer.sample("pixelcnn", 2, -5), "seed must be"),
        (lambda: explorer.sample("pixelcnn", 2, 0, label=12), "the class must be"),
        (lambda: explorer.trajectory("vae", 0), "draws in one step"),
        (lambda: explorer.interpolate("pixelcnn", 1, 2, 4), "no latent space"),
        (lambda: explorer.edit("vae", None, 1, 0.5, 0), "does not edit"),
        (lambda: explorer.inpaint([], None, 1, "bottom", None, 0), "at least one run"),
        (lambda: explorer.inpaint(["pixelcnn"], None, 10_000, "bottom", None, 0), "test image number"),
        (lambda: explorer.inpaint(["pixelcnn"], None, 1, "../../x.png", None, 0), "named masks"),
        (lambda: explorer.inpaint(["pixelcnn"], None, 1, "bottom", [[True]], 0), "must form a 8 x 8 grid"),
        (lambda: picture_to_levels(np.zeros((5000, 5000), np.uint8), explorer.runs[0]), "more than the explorer takes"),
        (lambda: picture_to_levels("a string", explorer.runs[0]), "must be a picture"),
    ]
    for call, words in cases:
        with pytest.raises(GenzooError, match=words):
            call()
    monkeypatch.setattr("genzoo.explore_core.LIMITS", LIMITS.__class__(seconds=0.0))
    with pytest.raises(GenzooError, match="longer than the explorer's cap"):
        explorer.sample("flow-matching", 2, 0)  # the deadline stops the sampler at its first step


def test_an_uploaded_or_drawn_picture_becomes_the_runs_levels(explorer):
    drawing = np.zeros((300, 200, 4), np.uint8)  # transparent paper with one opaque black stroke
    drawing[100:200, 90:110] = [0, 0, 0, 255]
    x = picture_to_levels(drawing, explorer.runs[0])
    assert x.shape == (1, 1, 8, 8) and x.dtype == torch.int64 and x.max() == 16 and x.min() < 16
    shown, text = explorer.inpaint(["vae"], drawing, 1, "top", None, 0)
    assert len(shown) == 1


def test_without_gradio_the_command_says_how_to_install_it(runs, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    assert main(["explore", str(runs)]) == 2
    assert 'pip install -c constraints.txt -e ".[explore]"' in capsys.readouterr().err


# -- the page ----------------------------------------------------------------------------------------

gradio = pytest.importorskip("gradio", reason="the explore extra is not installed")


@pytest.fixture(scope="module")
def served(explorer):
    from genzoo.explore import build, free_port, launch

    page = build(explorer, [])
    port = free_port("127.0.0.1")
    launch(page, "127.0.0.1", port)
    yield f"http://127.0.0.1:{port}/"
    page.close()


def test_every_endpoint_answers_through_gradios_client_and_errors_keep_it_serving(served):
    from gradio_client import Client

    client = Client(served, verbose=False)
    grid, text = client.predict("pixelcnn", 4, 0, "", 0, 1.0, 2, 1.0, api_name="/sample")
    assert Path(grid).is_file() and "4 images" in text
    frames, text = client.predict("flow-matching", 0, 3, api_name="/trajectory")
    assert len(frames) == 3
    shown, text = client.predict(["pixelcnn", "vae"], None, 1, "center", 0, api_name="/inpaint")  # (clicks: page state)
    assert len(shown) == 2 and "gibbs" in text
    edited, text = client.predict("flow-matching", None, 1, 0.3, 0, api_name="/edit")
    assert "sdedit" in text
    path, text = client.predict("vae", 1, 3, 4, api_name="/interpolate")
    assert "4 points" in text
    table, maps = client.predict(None, 2, api_name="/likelihood")
    assert len(table["data"]) == 3
    with pytest.raises(Exception, match="number of images must be a whole number from 1 to 64") as error:
        client.predict("pixelcnn", 1000, 0, "", 0, 1.0, 2, 1.0, api_name="/sample")
    assert "Traceback" not in str(error.value)
    with pytest.raises(Exception, match="not in the list of choices"):  # a path is never a run
        client.predict("/etc", 4, 0, "", 0, 1.0, 2, 1.0, api_name="/sample")
    grid, text = client.predict("pixelcnn", 2, 0, "", 0, 1.0, -1, 1.0, api_name="/sample")
    assert "2 images" in text  # still serving


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None or importlib.util.find_spec("playwright") is None,
                    reason="needs Debian's chromium and playwright (.ci/run installs both)")
def test_the_page_in_a_real_browser(served, tmp_path):
    from playwright.sync_api import sync_playwright

    hosts = set()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
        page.goto(served)
        page.click("#sample-button")
        page.wait_for_selector("#sample-image img", timeout=60_000)
        page.get_by_role("tab", name="Inpaint").click()
        page.click("#inpaint-show")
        image = page.locator("#inpaint-canvas img")
        image.wait_for(timeout=30_000)
        box = image.bounding_box()
        for fx, fy in ((0.45, 0.45), (0.55, 0.45)):  # two pixels in the middle
            image.click(position={"x": box["width"] * fx, "y": box["height"] * fy})
            page.wait_for_timeout(500)
        page.click("#inpaint-button")
        page.wait_for_selector("#inpaint-gallery img", timeout=60_000)
        page.wait_for_function("() => [...document.querySelectorAll('textarea')].some(t => "
                               "t.value.includes('2 sub-pixels completed by repaint'))", timeout=60_000)
        shot = tmp_path / "explore.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.read_bytes()[:4] == b"\x89PNG" and hosts == {served.split("/")[2]}  # nothing from the network
    keep = os.environ.get("GENZOO_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "explore.png")


def test_the_server_serves_no_file_outside_its_own_outputs(served, runs):
    import urllib.error
    import urllib.request

    for path in ("/etc/passwd", str(runs / "pixelcnn" / "config.json"), "../../../../etc/passwd"):
        for route in ("gradio_api/file=", "file="):
            try:
                with urllib.request.urlopen(served + route + path, timeout=10) as response:
                    body = response.read()
            except urllib.error.HTTPError as e:
                assert e.code in (403, 404), (route, path, e.code)
                continue
            assert b"root:" not in body and b'"model"' not in body, (route, path)  # a page, never the file


def test_a_flow_interpolates_through_its_latent_and_the_compare_panel_reads_only_its_folder(tmp_path):
    from genzoo.cli import main as cli
    from genzoo.explore_core import compare_pictures, compare_table

    out = tmp_path / "cmp"
    assert cli(["compare", "--models", "glow", "--budget", "steps", "--steps", "2", "--samples", "8", "--out", str(out),
                "--no-progress"]) == 0
    explorer = Explorer(load_runs([str(out)]))
    path, text = explorer.interpolate("glow", 1, 2, 4)
    assert path.dtype == np.uint8 and "4 points" in text
    assert compare_table(out)[0][0] == "glow" and len(compare_pictures(out)) == 1
    results = out / "results.json"  # a row that points outside the folder is not read
    import json

    data = json.loads(results.read_text())
    data["rows"][0]["samples_png"] = "/etc/passwd.png"
    results.write_text(json.dumps(data))
    assert compare_pictures(out) == []


def test_the_page_listens_on_this_machine_only_unless_told():
    import argparse

    from genzoo.explore import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["runs/x"])
    assert args.host == "127.0.0.1" and args.share is False and args.port is None
