"""Latency of the explorer's panels (`genzoo explore`) on one core, as JSON: the page load in Debian's
Chromium, then through Gradio's own client 16 cached `pixelcnn` samples, 16 `flow-matching` samples
at 20 NFE (euler, 20 steps), a likelihood map of the `pixelcnn` run, and 8 concurrent clients asking
for samples at once (errors counted). Medians of 5 rounds; each run trained with its defaults.

    OMP_NUM_THREADS=1 python3 benchmarks/explore.py --pixelcnn RUN --flow-matching RUN --vae RUN [--screenshots DIR]

Without the runs it trains them with their defaults in a temporary folder. With --screenshots it
also runs every panel in the browser and keeps a screenshot of each (the README's pictures).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

import genzoo
from common import emit, log, machine
from genzoo.explore import build, free_port, launch
from genzoo.explore_core import Explorer, load_runs

ROUNDS = 5


def trained(name: str, out: Path) -> str:
    train, val = genzoo.data.load("digits", "train"), genzoo.data.load("digits", "val")
    genzoo.train(genzoo.create(name, train.spec, seed=0), train, val, out=out, resume=True, progress=False, grid_size=0)
    return str(out)


def median_seconds(call) -> float:
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times), 3)


def page_load(url: str) -> float:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        for _ in range(ROUNDS):
            page = browser.new_page()
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("#sample-button", state="visible")
            times.append(time.perf_counter() - t0)
            page.close()
        browser.close()
    return round(statistics.median(times), 3)


# each panel: its tab, the run to choose (by position), its button and what shows when it has run
PANELS = [("Sample", 1, "#sample-button", "#sample-image img"),
          ("Trajectory", 0, "#trajectory-button", "#trajectory-gallery img"),
          ("Inpaint", None, "#inpaint-button", "#inpaint-gallery img"),
          ("Edit", 1, "#edit-button", "#edit-image img"),
          ("Interpolate", 2, "#interpolate-button", "#interpolate-image img"),
          ("Likelihood", None, "#likelihood-button", "#likelihood-table >> text=exact"),
          ("Compare", None, None, None)]


def screenshots(url: str, folder: Path, names: list[str]) -> list[str]:
    """Run every panel in Chromium and keep a screenshot of each: explore-PANEL.png in `folder`."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    kept = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url)
        for tab, run, button, shown in PANELS:
            page.get_by_role("tab", name=tab).click()
            panel = page.locator("[role=tabpanel]:visible").first
            if run is not None:
                panel.locator("input[role=listbox], input").first.click()
                page.get_by_role("option", name=names[run]).click()
            if tab == "Inpaint":  # every run at once
                for box in panel.get_by_role("checkbox").all():
                    box.check()
            if button:
                page.click(button)
                page.wait_for_selector(shown, timeout=300_000)
                page.wait_for_timeout(500)
            path = folder / f"explore-{tab.lower()}.png"
            page.screenshot(path=str(path), full_page=True)
            kept.append(str(path))
        browser.close()
    return kept


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pixelcnn", default=None)
    p.add_argument("--flow-matching", default=None)
    p.add_argument("--vae", default=None)
    p.add_argument("--screenshots", default=None, help="a folder for a screenshot of every panel")
    args = p.parse_args()
    torch.set_num_threads(1)
    scratch = Path(tempfile.mkdtemp())
    runs = [args.pixelcnn or trained("pixelcnn", scratch / "pixelcnn"),
            args.flow_matching or trained("flow-matching", scratch / "flow-matching"),
            args.vae or trained("vae", scratch / "vae")]
    explorer = Explorer(load_runs(runs))
    names = explorer.names
    page = build(explorer, [])
    port = free_port("127.0.0.1")
    launch(page, "127.0.0.1", port)
    url = f"http://127.0.0.1:{port}/"
    from gradio_client import Client

    client = Client(url, verbose=False)
    result = {"benchmark": "explore", "runs": names, "rounds": ROUNDS, "page_load_seconds": page_load(url)}
    result["pixelcnn_16_samples_seconds"] = median_seconds(
        lambda: client.predict(names[0], 16, 0, "", 0, 1.0, -1, 1.0, api_name="/sample"))
    result["flow_matching_16_samples_20_nfe_seconds"] = median_seconds(
        lambda: client.predict(names[1], 16, 0, "euler", 20, 1.0, -1, 1.0, api_name="/sample"))
    second = build(Explorer(explorer.runs[:1]), [])  # the Likelihood panel scores every run: pixelcnn alone
    port2 = free_port("127.0.0.1")
    launch(second, "127.0.0.1", port2)
    client2 = Client(f"http://127.0.0.1:{port2}/", verbose=False)
    result["likelihood_map_seconds"] = median_seconds(lambda: client2.predict(None, 1, api_name="/likelihood"))
    second.close()
    errors = 0

    def one(i: int) -> None:
        nonlocal errors
        try:
            Client(url, verbose=False).predict(names[0], 16, i, "", 0, 1.0, -1, 1.0, api_name="/sample")
        except Exception as e:  # counted, and said
            errors += 1
            log("client", i, "failed:", e)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(8)))
    result["concurrent_clients"] = {"clients": 8, "errors": errors, "seconds": round(time.perf_counter() - t0, 2)}
    if args.screenshots:
        result["screenshots"] = screenshots(url, Path(args.screenshots), names)
    page.close()
    result["machine"] = machine()
    emit(result)


if __name__ == "__main__":
    main()
