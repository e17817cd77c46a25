"""`genzoo explore RUN [RUN ...]`: a local web page to play with trained models, built on Gradio.

Panels: Sample, Trajectory, Inpaint, Edit, Interpolate, Likelihood and Compare; the work of each is
explore_core.Explorer's, so the page only lays it out. It listens on 127.0.0.1 and a free port unless
--host and --port say otherwise, sends no analytics, makes no share link unless --share, and fetches
nothing from the network (Gradio serves its own scripts and fonts). Errors are one sentence in the
page; the server keeps serving.
"""
from __future__ import annotations

import argparse
import functools
import os
import socket
from pathlib import Path
from typing import Any, Callable

from .errors import GenzooError
from .explore_core import LIMITS, Explorer, compare_pictures, compare_table, load_runs

REQUIRES = ("gradio",)
INSTALL = 'python3 -m pip install -c constraints.txt -e ".[explore]"'
MASKS = ["bottom", "top", "left", "right", "center", "random:0.5"]
PAGE_CSS = "img { image-rendering: pixelated; }"  # model pixels as crisp squares, not blurred


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories, or a compare output (its runs are loaded)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--share", action="store_true", help="also make a public Gradio share link (off by default)")
    parser.add_argument("--device", default="cpu", help="device the models run on (default cpu)")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """fn with every failure shown as one sentence in the page (gr.Error), never a traceback."""
    import gradio as gr

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except GenzooError as e:
            raise gr.Error(str(e)) from None
        except (ValueError, TypeError, RuntimeError, OSError) as e:
            raise gr.Error(f"that request failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}.") from None

    return functools.wraps(fn)(call)  # Gradio reads fn's signature (for SelectData) through __wrapped__


def build(explorer: Explorer, compare_dirs: list[Path]) -> Any:
    """The page (a gr.Blocks) over `explorer`'s runs; each button is also an API endpoint of its name."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    names = explorer.names
    first = names[0]
    with gr.Blocks(title="genzoo explorer", analytics_enabled=False) as page:  # (css: PAGE_CSS, at launch)
        gr.Markdown(f"# genzoo explorer\n{len(names)} run(s): {', '.join(names)}. Caps per request: "
                    f"{LIMITS.images} images, {LIMITS.steps} steps, {LIMITS.seconds:g} s.")
        with gr.Tab("Sample"):
            with gr.Row():
                run = gr.Dropdown(names, value=first, label="run")
                n = gr.Number(16, precision=0, label="images")
                seed = gr.Number(0, precision=0, label="seed")
            with gr.Row():
                sampler = gr.Textbox("", label="sampler (empty: the model's default)")
                steps = gr.Number(0, precision=0, label="steps (0: default)")
                temperature = gr.Number(1.0, label="temperature")
                label = gr.Number(-1, precision=0, label="class (-1: in turn)")
                guidance = gr.Number(1.0, label="guidance")
            go = gr.Button("Sample", elem_id="sample-button")
            grid, note = gr.Image(label="samples", elem_id="sample-image"), gr.Textbox(label="what ran")
            go.click(guarded(explorer.sample), [run, n, seed, sampler, steps, temperature, label, guidance],
                     [grid, note], api_name="sample")
        with gr.Tab("Trajectory"):
            with gr.Row():
                run_t = gr.Dropdown(names, value=first, label="run")
                seed_t = gr.Number(0, precision=0, label="seed")
                frames = gr.Number(16, precision=0, label="frames")
            go_t = gr.Button("Draw one sample, step by step", elem_id="trajectory-button")
            states = gr.Gallery(label="steps", columns=8, height=360, object_fit="contain", elem_id="trajectory-gallery")
            note_t = gr.Textbox(label="what ran")
            go_t.click(guarded(explorer.trajectory), [run_t, seed_t, frames], [states, note_t], api_name="trajectory")
        with gr.Tab("Inpaint"):
            with gr.Row():
                runs_i = gr.CheckboxGroup(names, value=[first], label="runs")
                index_i = gr.Number(1, precision=0, label="test image")
                mask = gr.Dropdown(MASKS, value="bottom", label="mask (unless pixels are clicked below)")
                seed_i = gr.Number(0, precision=0, label="seed")
            upload_i = gr.Image(type="numpy", label="an image of your own (optional)", elem_id="inpaint-upload")
            marked = gr.State(None)  # the pixels clicked for completion: an H x W list of booleans, or None
            canvas = gr.Image(label="click pixels to complete them (red), again to give them back",
                              interactive=False, elem_id="inpaint-canvas")
            with gr.Row():
                show_i = gr.Button("Show the image", elem_id="inpaint-show")
                clear_i = gr.Button("Clear the clicks")
                go_i = gr.Button("Complete", elem_id="inpaint-button", variant="primary")
            done, note_i = gr.Gallery(label="completions: the image, what is given, the completion", elem_id="inpaint-gallery",
                                   columns=2, height=360, object_fit="contain"), gr.Textbox(label="what ran")

            def view(chosen: list, picture: Any, index: Any, clicks: Any) -> Any:
                return explorer.mask_view(chosen[0] if chosen else first, picture, index, clicks)

            def click(chosen: list, picture: Any, index: Any, clicks: Any, event: gr.SelectData) -> Any:
                name = chosen[0] if chosen else first
                clicks = explorer.toggle(name, clicks, event.index)
                return clicks, explorer.mask_view(name, picture, index, clicks)

            click.__annotations__["event"] = gr.SelectData  # resolved here: Gradio passes the click by this type
            show_i.click(guarded(view), [runs_i, upload_i, index_i, marked], [canvas], show_progress="hidden")
            clear_i.click(lambda: (None, None), [], [marked, canvas], show_progress="hidden")
            canvas.select(guarded(click), [runs_i, upload_i, index_i, marked], [marked, canvas], show_progress="hidden")
            go_i.click(guarded(explorer.inpaint), [runs_i, upload_i, index_i, mask, marked, seed_i], [done, note_i],
                       api_name="inpaint")
        with gr.Tab("Edit"):
            with gr.Row():
                run_e = gr.Dropdown(names, value=first, label="run")
                index_e = gr.Number(1, precision=0, label="test image")
                strength = gr.Slider(0, 1, value=0.5, label="strength (noise level)")
                seed_e = gr.Number(0, precision=0, label="seed")
            upload_e = gr.Image(type="numpy", label="an image of your own (optional)")
            go_e = gr.Button("Edit (SDEdit)", elem_id="edit-button")
            edited, note_e = gr.Image(label="input, edit", elem_id="edit-image"), gr.Textbox(label="what ran")
            go_e.click(guarded(explorer.edit), [run_e, upload_e, index_e, strength, seed_e], [edited, note_e],
                       api_name="edit")
        with gr.Tab("Interpolate"):
            with gr.Row():
                run_p = gr.Dropdown(names, value=first, label="run")
                a, b = gr.Number(1, precision=0, label="from test image"), gr.Number(2, precision=0, label="to")
                points = gr.Number(8, precision=0, label="points")
            go_p = gr.Button("Interpolate in the latent space", elem_id="interpolate-button")
            path, note_p = gr.Image(label="path", elem_id="interpolate-image"), gr.Textbox(label="what ran")
            go_p.click(guarded(explorer.interpolate), [run_p, a, b, points], [path, note_p], api_name="interpolate")
        with gr.Tab("Likelihood"):
            with gr.Row():
                index_l = gr.Number(1, precision=0, label="test image")
                upload_l = gr.Image(type="numpy", label="upload a digit of your own (optional)")
            go_l = gr.Button("Score it", elem_id="likelihood-button")
            table = gr.Dataframe(headers=["run", "model", "bits/dim", "kind"], label="bits/dim", elem_id="likelihood-table")
            surprise = gr.Gallery(label="where the autoregressive models are surprised", columns=4, height=300,
                                  object_fit="contain")
            go_l.click(guarded(explorer.likelihood), [upload_l, index_l], [table, surprise], api_name="likelihood")
        with gr.Tab("Compare"):
            rows = [row for d in compare_dirs for row in compare_table(d)]
            gr.Dataframe(rows or [["(no compare output given: genzoo explore COMPARE_OUT shows its table)"] + [None] * 5],
                         headers=["model", "budget", "seed", "bits/dim", "kind", "FD"], label="compare table")
            pictures = [p for d in compare_dirs for p in compare_pictures(d)]
            if pictures:
                gr.Gallery(pictures, label="samples of each run", columns=4, height=360, object_fit="contain")
    return page


def launch(page: Any, host: str, port: int, share: bool = False) -> None:
    """Serve `page` at host:port without blocking: no share link unless `share`, no tracebacks shown,
    uploads of at most 16 MB."""
    page.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
                show_error=False, max_file_size="16mb", css=PAGE_CSS)


def run(args: argparse.Namespace) -> int:
    explorer = Explorer(load_runs(args.runs, args.device))
    compare_dirs = [Path(p) for p in args.runs if (Path(p) / "results.json").is_file()]
    page = build(explorer, compare_dirs)
    port = args.port if args.port is not None else free_port(args.host)
    launch(page, args.host, port, args.share)
    print(f"genzoo explore: {len(explorer.runs)} run(s) at http://{args.host}:{port} (Ctrl-C stops)", flush=True)
    try:
        page.block_thread()
    finally:
        page.close()
    return 0
