"""The parts of benchmarks/reliability.py that throw hostile inputs at genzoo in process:

- links: run directories populated at random with symbolic links to a sentinel directory outside
  them, then trained, resumed, compared and reported on; counts the files of the sentinel touched.
- api: random images (container, dtype, shape, range), counts and temperatures for every public
  entry of every model; counts one-sentence GenzooErrors, valid results and other exceptions.
- cli: random command lines (every command, flags given garbage, unknown flags, missing paths);
  counts exit codes and tracebacks (an exception that escapes genzoo's `main`).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

TINY_RUN = ["pixelcnn", "--hidden-channels", "8", "--num-blocks", "1", "--output-hidden", "8", "--first-kernel-size", "3",
            "--steps", "2", "--eval-every", "2", "--sample-every", "2", "--grid-size", "4", "--batch-size", "8",
            "--no-progress"]


def _main(argv: list[str]) -> tuple[int | None, str]:
    """genzoo's main in this process, its output swallowed: (exit code, None when an exception escaped it)."""
    from genzoo.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            return main(argv), err.getvalue()
        except SystemExit as e:
            return int(e.code or 0), err.getvalue()
        except Exception as e:  # what the target forbids: a traceback
            return None, f"{type(e).__name__}: {e}"[:200]


def tally(counts: dict[str, int], examples: list[str], call, label: str = "", valid: str = "valid") -> None:
    """Run `call` and count its outcome: `valid` (a result), clean_error (one GenzooError sentence) or
    other_exception (what the targets forbid: kept as an example)."""
    from genzoo import GenzooError

    try:
        call()
        counts[valid] += 1
    except GenzooError:
        counts["clean_error"] += 1
    except Exception as e:
        counts["other_exception"] += 1
        examples.append(f"{label}{type(e).__name__}: {e}"[:200])


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def links(n: int, rng: random.Random, work: Path) -> dict:
    from genzoo.rundir import ENTRIES

    sentinel = work / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    for name in ("victim.txt", "weights.safetensors", "step_000002.png", "sub/state.json", "report.html"):
        (sentinel / name).write_bytes(b"not yours " + name.encode())
    before = _snapshot(sentinel)
    good = work / "good"
    assert _main(["train", *TINY_RUN, "--out", str(good)])[0] == 0
    names = [*ENTRIES, "last/model-000001.safetensors", "samples/step_000002.png", "report.html", "report.md",
             "results.json", "run0-pixelcnn"]
    targets = [sentinel, sentinel / "sub", sentinel / "victim.txt", sentinel / "report.html"]
    touched, codes, tracebacks, t0 = 0, {}, [], time.perf_counter()
    for i in range(n):
        d = work / f"linked{i}"
        d.mkdir()
        for name in rng.sample(names, rng.randint(1, 3)):
            if (d / name).parent.is_symlink() or os.path.lexists(d / name):  # its folder is a link already
                continue
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(rng.choice(targets), d / name)
        command = rng.choice(["train", "resume", "compare", "report"])
        argv = {"train": ["train", *TINY_RUN, "--out", str(d)], "resume": ["train", *TINY_RUN, "--out", str(d), "--resume"],
                "compare": ["compare", "--runs", str(good), "--out", str(d), "--samples", "8", "--no-progress"],
                "report": ["report", str(good), "--out", str(d)]}[command]
        code, err = _main(argv)
        codes[f"{command} exit {code}"] = codes.get(f"{command} exit {code}", 0) + 1
        if code is None:
            tracebacks.append(err)
        now = _snapshot(sentinel)
        if now != before:
            touched += sum(now.get(k) != v for k, v in before.items()) + len(set(now) - set(before))
            before = now
    return {"linked_directories": n, "sentinel_files_touched": touched, "outcomes": codes,
            "tracebacks": tracebacks[:5], "seconds": round(time.perf_counter() - t0, 1)}


def _random_images(rng: random.Random, spec) -> object:
    if rng.random() < 0.5:  # half of the inputs are valid images, of any integer dtype
        x = torch.randint(0, spec.levels, (rng.choice([1, 2]), *spec.shape))
        return x.to(rng.choice([torch.int64, torch.int32, torch.uint8])) if spec.levels <= 256 else x
    n = rng.choice([0, 1, 2])
    shape = rng.choice([(n, *spec.shape), (n, spec.channels + 1, spec.height, spec.width), (n, spec.height, spec.width)])
    dtype = rng.choice(["int64", "int32", "uint8", "int8", "float32", "float64", "bool"])
    values = np.random.default_rng(rng.randrange(1000)).integers(rng.choice([0, -2]), rng.choice([spec.levels,
                                                                                               spec.levels + 3]), shape)
    array = values.astype(dtype)
    return rng.choice([lambda: torch.from_numpy(array), lambda: array, lambda: array.tolist(), lambda: "images"])()


def _api_call(model, entry: str, rng: random.Random) -> None:
    """One public entry of `model` on random arguments."""
    import genzoo

    x = _random_images(rng, model.spec)
    if entry == "loss":
        model.loss(x)
    elif entry == "log_likelihood":
        fast = {"method": "rk4", "steps": 2} if model.name in ("score-sde", "flow-matching") else {}
        model.log_likelihood(x, **fast)
    elif entry == "bits_per_dim":
        genzoo.bits_per_dim(model, x)
    else:
        options = {o.name for o in model.options("sample")}
        extra = {"temperature": rng.choice([1.0, 0.0, -1.0, 1e308, math.nan, "hot"])} if "temperature" in options else {}
        extra.update({"steps": 2} if "steps" in options else {})
        model.sample(rng.choice([1, 2, 0, -1, 2.5, True, "3", 10 ** 30]), generator=torch.Generator().manual_seed(0),
                     **extra)


def api(n: int, rng: random.Random) -> dict:
    import genzoo

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' tiny configs
    from tiny import tiny, tiny_spec

    counts, examples = {"clean_error": 0, "valid": 0, "other_exception": 0}, []
    for name in [m for m in genzoo.list_models() if m in genzoo.registry._MODELS]:
        model = genzoo.create(name, genzoo.DataSpec(*tiny_spec(name)), seed=0, **tiny(name)).eval()
        entries = ["loss"] + (["log_likelihood", "bits_per_dim"] if model.has_likelihood else []) + (
            [] if model.conditional else ["sample"])
        for _ in range(n):
            entry = rng.choice(entries)
            with torch.no_grad():
                tally(counts, examples, lambda m=model, e=entry: _api_call(m, e, rng), f"{name}.{entry}: ")
    return {**counts, "examples": examples[:5]}


GARBAGE = ["-1", "0", "1e308", "nan", "inf", "abc", "", "99999999999999999999999", "/nonexistent/path", "true", "[]",
           "{}", "--", "-", "3.5"]


def cli(n: int, rng: random.Random, work: Path) -> dict:
    good = work / "cli-run"
    assert _main(["train", *TINY_RUN, "--out", str(good)])[0] == 0
    (work / "afile.txt").write_text("not a run")
    # training commands carry a time limit, so that one whose steps a mutation raised still ends
    bases = [["train", *TINY_RUN, "--max-seconds", "3", "--out", str(work / "cli-new")], ["sample", str(good), "--n", "4"],
             ["eval", str(good), "--no-progress"], ["compare", "--runs", str(good), "--samples", "8", "--no-progress",
                                                    "--out", str(work / "cli-cmp")],
             ["report", str(good), "--out", str(work / "cli-card")], ["diffuse", "--timesteps", "10", "--n", "2",
                                                                       "--out", str(work / "cli-d")],
             ["list"], ["train", "ddpm", "--steps", "1", "--base-channels", "4", "--timesteps", "5", "--grid-size", "0",
                        "--max-seconds", "3", "--no-progress", "--out", str(work / "cli-ddpm")]]
    codes, tracebacks, slowest, slowest_argv = {}, [], 0.0, ""
    for _ in range(n):
        argv = list(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            kind = rng.random()
            flags = [j for j, a in enumerate(argv) if a.startswith("--") and j + 1 < len(argv)]
            if kind < 0.5 and flags:
                argv[rng.choice(flags) + 1] = rng.choice(GARBAGE)
            elif kind < 0.65:
                argv.append(rng.choice(["--no-such-flag", "--temperature", "--seed", "--steps", "--resume", "--init-from",
                                        "--labels"]))
                argv.append(rng.choice(GARBAGE))
            elif kind < 0.8 and len(argv) > 1:
                argv[1] = rng.choice([str(work / "afile.txt"), str(work / "missing"), "nosuchmodel", "", "-"])
            elif len(argv) > 1:
                del argv[rng.randrange(1, len(argv))]
        t = time.perf_counter()
        here = os.getcwd()
        os.chdir(work)  # a garbage value given to --out lands in the work folder, not in the checkout
        try:
            code, err = _main(argv)
        finally:
            os.chdir(here)
        if time.perf_counter() - t > slowest:
            slowest, slowest_argv = time.perf_counter() - t, " ".join(argv)[:200]
        codes[str(code)] = codes.get(str(code), 0) + 1
        if code is None:
            tracebacks.append(f"{' '.join(argv)[:120]} -> {err}")
    return {"commands": n, "exit_codes": codes, "tracebacks": len(tracebacks), "examples": tracebacks[:5],
            "slowest_seconds": round(slowest, 2), "slowest_command": slowest_argv}
