"""What the explorer page (explore.py) shows, as plain functions of the loaded runs: no web library
here. Each panel's function takes the page's inputs, checks them against the caps (LIMITS), and
returns images as uint8 arrays (H, W, C) and one line of text; a bad input is one GenzooError
sentence, which the page shows in place of a result.

Only the runs given when the explorer starts are ever read: the page names a run by its position
in that list, never by a path.
"""
from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from . import checkpoint
from .data.limits import MAX_IMAGE_PIXELS
from .data.spec import Dataset
from .errors import GenzooError
from .evaluate import bits_per_dim, class_log_posterior, to_bits_per_dim
from .masks import known_mask
from .models.base import GenerativeModel
from .viz import grid_array


@dataclass(frozen=True)
class Limits:
    images: int = 64  # images one request draws
    steps: int = 1000  # sampler steps one request asks for
    seconds: float = 120.0  # wall-clock seconds one request may take
    pixels: int = 4096 * 4096  # pixels of an uploaded or drawn image (below the readers' cap)


LIMITS = Limits()
SCALE = 8  # each model pixel shown as SCALE x SCALE screen pixels
VIEW = 256  # pixels across of the image to click on


@dataclass
class Run:
    """A loaded run: its name on the page, its model and its test split (None where unreadable)."""

    name: str
    model: GenerativeModel
    test: Dataset | None


def find_runs(paths: list[str]) -> list[Path]:
    """Run directories: each path a run (it holds config.json), or a compare output whose sub-folders are."""
    found: list[Path] = []
    for text in paths:
        path = Path(text)
        if (path / "config.json").is_file():
            found.append(path)
        elif path.is_dir():
            inner = sorted(p for p in path.iterdir() if (p / "config.json").is_file() and not p.is_symlink())
            if not inner:
                raise GenzooError(f"{text!r} is neither a run (no config.json) nor a compare output with runs in it.")
            found.extend(inner)
        else:
            raise GenzooError(f"{text!r} is not a directory; give run directories or a compare output.")
    return found


def load_runs(paths: list[str], device: str = "cpu") -> list[Run]:
    """The runs of `paths` (see find_runs), each with its test split when its data can be read."""
    from .cli import run_data

    runs = []
    for path in find_runs(paths):
        model = checkpoint.load(path).to(device)
        try:
            test = run_data(checkpoint.read_config(path), None, None, "test")
        except (GenzooError, OSError):
            test = None
        name = path.name if path.name not in [r.name for r in runs] else f"{path.parent.name}/{path.name}"
        runs.append(Run(name, model, test))
    return runs


def deadline(seconds: float) -> Callable[[dict], None]:
    """A sampler callback that stops the work, in one sentence, once `seconds` have passed."""
    end = time.monotonic() + seconds

    def check(state: dict) -> None:
        if time.monotonic() > end:
            raise GenzooError(f"this request took longer than the explorer's cap of {seconds:g} s; ask for fewer "
                              f"images or steps.")
    return check


def reports_steps(model: GenerativeModel) -> bool:
    """Whether the model's sampler takes a `callback` (it then reports every step)."""
    return "callback" in inspect.signature(model.sample).parameters


def count(value: Any, name: str, most: int, least: int = 1) -> int:
    """An integer from least to most, else one sentence (the page sends numbers as floats)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        raise GenzooError(f"{name} must be a whole number from {least} to {most}, got {value!r}.")
    return value


def show(x: Tensor, levels: int, nrow: int | None = None, pad: int = 1, scale: int = SCALE) -> np.ndarray:
    """Levels (N, C, H, W) as one uint8 mosaic (rows, cols, 3), each pixel scale x scale."""
    out = grid_array(x, levels, nrow, pad=pad, scale=max(1, scale))
    return np.repeat(out, 3, axis=2) if out.shape[2] == 1 else out


def picture_to_levels(array: Any, run: Run) -> Tensor:
    """An image from the page (H, W[, 3 or 4]) as the run's levels (1, C, H, W): resized, and grey for a
    one-channel model."""
    if not isinstance(array, np.ndarray) or array.ndim not in (2, 3) or array.size == 0:
        raise GenzooError("the image must be a picture (height x width, grey or colour).")
    if array.shape[0] * array.shape[1] > LIMITS.pixels:
        raise GenzooError(f"the image has {array.shape[0]} x {array.shape[1]} pixels, more than the explorer takes "
                          f"({LIMITS.pixels:,}; the readers' cap is {MAX_IMAGE_PIXELS:,}).")
    if array.ndim == 3 and array.shape[2] == 4:  # a drawing: transparent means white paper
        alpha = array[..., 3:4].astype(np.float64) / 255
        array = (array[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    array = np.clip(array, 0, 255).astype(np.uint8)
    spec = run.model.spec
    img = Image.fromarray(array).convert("L" if spec.channels == 1 else "RGB").resize((spec.width, spec.height),
                                                                                      Image.BILINEAR)
    pixels = np.asarray(img, dtype=np.int64).reshape(spec.height, spec.width, -1).transpose(2, 0, 1)
    return torch.from_numpy(pixels * spec.levels // 256).unsqueeze(0)


class Explorer:
    """The panels' work over a fixed list of runs."""

    def __init__(self, runs: list[Run]) -> None:
        if not runs:
            raise GenzooError("the explorer needs at least one run.")
        self.runs = runs

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def run(self, name: Any) -> Run:
        for r in self.runs:
            if r.name == name:
                return r
        raise GenzooError(f"no run named {name!r} here; the runs are: {', '.join(self.names)}.")

    def image(self, run: Run, picture: Any, test_index: Any) -> tuple[Tensor, Tensor | None]:
        """The image to work on: the picture given, else test image number `test_index` (1-based)."""
        if picture is not None:
            return picture_to_levels(picture, run).to(run.model.device), None
        if run.test is None:
            raise GenzooError(f"run {run.name!r}'s test images cannot be read here; draw or upload an image.")
        i = count(test_index, "the test image number", len(run.test))
        labels = None if run.test.labels is None else run.test.labels[i - 1: i].to(run.model.device)
        return run.test.x[i - 1: i].to(run.model.device), labels

    @staticmethod
    def _options(model: GenerativeModel, method: str, wanted: dict[str, Any]) -> dict[str, Any]:
        """The options of `wanted` that model.method takes (the rest do not apply to its family)."""
        names = {o.name for o in model.options(method)}
        return {k: v for k, v in wanted.items() if k in names and v is not None}

    def sample(self, name: Any, n: Any, seed: Any, sampler: str = "", steps: Any = 0, temperature: float = 1.0,
               label: Any = -1, guidance: float = 1.0) -> tuple[np.ndarray, str]:
        run = self.run(name)
        model, n = run.model, count(n, "the number of images", LIMITS.images)
        wanted = {"sampler": sampler or None, "steps": count(steps, "steps", LIMITS.steps) if steps else None,
                  "temperature": temperature if temperature != 1.0 else None}
        if model.num_classes:
            wanted.update(guidance=guidance, **({"label": count(label, "the class", model.num_classes - 1, 0)}
                                                if label not in (-1, None) else {}))
        options = self._options(model, "sample", wanted)
        if reports_steps(model):
            options["callback"] = deadline(LIMITS.seconds)
        t0 = time.perf_counter()
        x = model.sample(n, generator=torch.Generator(device=model.device).manual_seed(count(seed, "seed", 2**31 - 1, 0)),
                         **options)
        stats = model.sample_stats()
        what = f"{stats.sampler}, {stats.nfe} network evaluations, " if stats else ""
        return show(x, model.spec.levels), f"{run.name}: {n} images, {what}{time.perf_counter() - t0:.2f} s"

    def trajectory(self, name: Any, seed: Any, frames: Any = 16) -> tuple[list[np.ndarray], str]:
        run = self.run(name)
        states: list[Tensor] = []
        stop = deadline(LIMITS.seconds)

        def keep(state: dict) -> None:
            stop(state)
            states.append(torch.cat([state["x"], state["x0"]]) if "x0" in state else state["x"])

        if not reports_steps(run.model):
            raise GenzooError(f"run {run.name!r} ({run.model.name}) draws in one step: it has no trajectory.")
        run.model.sample(1, generator=torch.Generator(device=run.model.device).manual_seed(count(seed, "seed", 2**31 - 1, 0)),
                         callback=keep)
        k = count(frames, "frames", 200, 2)
        picked = [states[round(i * (len(states) - 1) / (k - 1))] for i in range(k)] if len(states) > k else states
        note = " (x_t and the predicted x_0)" if picked and len(picked[0]) == 2 else ""
        return [show(s, run.model.spec.levels) for s in picked], f"{run.name}: {len(states)} steps{note}"

    def mask_view(self, name: Any, picture: Any, test_index: Any, clicks: Any) -> np.ndarray:
        """The image to complete as the page shows it (VIEW pixels wide), the clicked pixels in red."""
        run = self.run(name)
        x, _ = self.image(run, picture, test_index)
        spec = run.model.spec
        img = show(x, spec.levels, pad=0, scale=VIEW // max(spec.height, spec.width))
        marked = self.clicked(run, clicks)
        if marked is not None:
            scale = img.shape[0] // spec.height
            red = marked.numpy().repeat(scale, 0).repeat(scale, 1)
            img[red] = [220, 30, 30]
        return img

    def clicked(self, run: Run, clicks: Any) -> Tensor | None:
        """The clicked pixels (H, W) bool from the page's state, None when none; one sentence if malformed."""
        if clicks is None:
            return None
        spec = run.model.spec
        marked = torch.as_tensor(np.asarray(clicks, dtype=bool)) if isinstance(clicks, list) else None
        if marked is None or tuple(marked.shape) != (spec.height, spec.width):
            raise GenzooError(f"the clicked pixels must form a {spec.height} x {spec.width} grid; clear them and click again.")
        return marked if bool(marked.any()) else None

    def toggle(self, name: Any, clicks: Any, where: Any) -> list:
        """The clicked pixels with the one at page coordinates `where` = (x, y) flipped."""
        run = self.run(name)
        spec = run.model.spec
        marked = self.clicked(run, clicks)
        marked = torch.zeros(spec.height, spec.width, dtype=torch.bool) if marked is None else marked.clone()
        if not (isinstance(where, (list, tuple)) and len(where) == 2 and all(isinstance(v, int) for v in where)):
            raise GenzooError("a click must give the pixel's x and y.")
        scale = VIEW // max(spec.height, spec.width)
        i, j = where[1] // scale, where[0] // scale
        if 0 <= i < spec.height and 0 <= j < spec.width:
            marked[i, j] = not bool(marked[i, j])
        return marked.tolist()

    def inpaint(self, names: list[Any], picture: Any, test_index: Any, mask: str, clicks: Any,
                seed: Any) -> tuple[list[tuple[np.ndarray, str]], str]:
        """Each chosen run's completion of the image: the clicked pixels unknown, else those of the named mask."""
        if not names:
            raise GenzooError("choose at least one run to inpaint with.")
        shown, lines = [], []
        for name in names:
            run = self.run(name)
            if not run.model.inpaints:
                lines.append(f"{run.name}: {run.model.name} does not inpaint (its family has no principled completion).")
                continue
            x, labels = self.image(run, picture, test_index)
            known = self._mask(run, mask, clicks, seed)
            extra = {"labels": labels} if run.model.num_classes and labels is not None else {}
            t0 = time.perf_counter()
            out = run.model.inpaint(x, known, generator=torch.Generator(device=run.model.device).manual_seed(
                count(seed, "seed", 2**31 - 1, 0)), **extra)
            stats = run.model.sample_stats()
            given = torch.where(known, x, torch.zeros_like(x))
            shown.append((show(torch.cat([x, given, out]), run.model.spec.levels, 3), f"{run.name}: given, completion"))
            lines.append(f"{run.name}: {int((~known).sum())} sub-pixels completed by "
                         f"{stats.sampler if stats else 'its method'}, {time.perf_counter() - t0:.2f} s")
        return shown, "; ".join(lines)

    def _mask(self, run: Run, mask: str, clicks: Any, seed: Any) -> Tensor:
        """Known sub-pixels: all but the clicked pixels, else those of the named mask."""
        spec = run.model.spec
        marked = self.clicked(run, clicks)
        if marked is not None:
            return (~marked).expand(1, spec.channels, spec.height, spec.width).to(run.model.device)
        generator = torch.Generator().manual_seed(count(seed, "seed", 2**31 - 1, 0))
        if mask.endswith(".png") or "/" in mask:
            raise GenzooError("the explorer takes named masks (top, bottom, left, right, center, random:F) or clicks.")
        return known_mask(mask, spec, 1, generator).to(run.model.device)

    def edit(self, name: Any, picture: Any, test_index: Any, strength: float, seed: Any) -> tuple[np.ndarray, str]:
        run = self.run(name)
        x, _ = self.image(run, picture, test_index)
        t0 = time.perf_counter()
        out = run.model.edit(x, strength, generator=torch.Generator(device=run.model.device).manual_seed(
            count(seed, "seed", 2**31 - 1, 0)), callback=deadline(LIMITS.seconds))
        stats = run.model.sample_stats()
        return show(torch.cat([x, out]), run.model.spec.levels, 2), (
            f"{run.name}: {stats.sampler}, {stats.nfe} network evaluations, {time.perf_counter() - t0:.2f} s")

    def interpolate(self, name: Any, first: Any, second: Any, steps: Any) -> tuple[np.ndarray, str]:
        run = self.run(name)
        if not hasattr(run.model, "interpolate"):
            raise GenzooError(f"run {run.name!r} ({run.model.name}) has no latent space to interpolate in "
                              f"(vae and the flows have).")
        a, labels_a = self.image(run, None, first)
        b, labels_b = self.image(run, None, second)
        k = count(steps, "steps", LIMITS.images, 2)
        takes_labels = "labels_a" in inspect.signature(run.model.interpolate).parameters  # a flow's latent has no class
        extra = {"labels_a": labels_a, "labels_b": labels_b} if run.model.num_classes and takes_labels else {}
        path = run.model.interpolate(a, b, k, **extra)
        return show(path[0], run.model.spec.levels, k), f"{run.name}: {k} points from test image {first} to {second}"

    def likelihood(self, picture: Any, test_index: Any) -> tuple[list[list[Any]], list[tuple[np.ndarray, str]]]:
        """Bits/dim of the image under every run with a likelihood, with its kind (the marginal over the
        classes for a class-conditional model); for the autoregressive runs a map of -log2 p(x_i | x_<i)."""
        rows, maps = [], []
        for run in self.runs:
            model = run.model
            if not model.has_likelihood:
                rows.append([run.name, model.name, None, "no likelihood"])
                continue
            x, _ = self.image(run, picture, test_index)
            extra: dict[str, Tensor] = {}
            with torch.no_grad():
                if model.num_classes:
                    posterior, marginal, kind = class_log_posterior(model, x)
                    extra["labels"] = posterior.argmax(1).to(model.device)
                    rows.append([run.name, model.name, round(to_bits_per_dim(marginal, model.spec.dims), 4),
                                 f"{kind} (marginal over classes; most probable class {int(extra['labels'][0])})"])
                else:
                    report = bits_per_dim(model, x)
                    rows.append([run.name, model.name, round(report.value, 4), report.kind])
                if hasattr(model, "log_likelihood_given"):  # the autoregressive models: exact conditionals
                    maps.append((self._surprise(model, x, extra), f"{run.name}: -log2 p(x_i | x_<i), white = surprised"))
        return rows, maps

    @staticmethod
    def _surprise(model: Any, x: Tensor, extra: dict[str, Tensor]) -> np.ndarray:
        bits = F.cross_entropy(model.logits(x, **extra).double(), x, reduction="none").sum(1)[0] / math.log(2)  # (H, W)
        scaled = (bits / max(float(bits.max()), 1e-9) * 255).round().to(torch.uint8).numpy()
        return np.repeat(np.repeat(np.repeat(scaled[..., None], 3, 2), SCALE, 0), SCALE, 1)


def compare_rows(directory: Path) -> list[dict[str, Any]]:
    """The rows of a compare output's results.json (none without one)."""
    path = directory / "results.json"
    if not path.is_file():
        return []
    results = checkpoint.read_json(path, "compare results")
    rows = results.get("rows", []) if isinstance(results, dict) else []
    return [r for r in rows if isinstance(r, dict)]


def compare_table(directory: Path) -> list[list[Any]]:
    """A compare output's table: model, budget, seed, bits/dim, its kind, FD where measured."""
    return [[r.get("model"), r.get("budget"), r.get("seed"), r.get("bits_per_dim"), r.get("kind"), r.get("fd")]
            for r in compare_rows(directory)]


def compare_pictures(directory: Path) -> list[tuple[np.ndarray, str]]:
    """(picture, caption) of the sample grids a compare output holds: read here, from inside that
    directory only and never through a link, so that the page serves pixels, not files."""
    found = []
    base = directory.resolve()
    for r in compare_rows(directory):
        path = Path(str(r.get("samples_png", "")))
        if path.suffix == ".png" and path.is_file() and not path.is_symlink() and base in path.resolve().parents:
            with Image.open(path, formats=("PNG",)) as img:
                if img.width * img.height <= LIMITS.pixels:
                    found.append((np.asarray(img.convert("RGB")),
                                  f"{r.get('model')} (budget {r.get('budget')}, seed {r.get('seed')})"))
    return found

