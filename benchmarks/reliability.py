"""Reliability of runs and readers, as JSON.

1. Requeues: the identical command `genzoo train ... --resume`, as schedulers repeat it, is killed
   (SIGKILL) at a random moment from its start to past its end, `--kills` times, and run again as
   it was, then once more; every run not killed must exit 0 and the run must match an
   uninterrupted one bit for bit (best weights, latest weights, logged losses).
2. Fuzz: `--inputs` randomly mutated files per reader (IDX raw and gzip, CIFAR binary and python
   batches, PNG, JPEG, safetensors, config.json); each must give a GenzooError or a valid result.
   Counts clean errors, valid reads and other exceptions, and the slowest input.
3. Hostile inputs, each in a fresh process: peak memory (RSS) and time (hostile config.json files
   among them: nesting 100,000 deep, a 5,000-digit integer, a model name that is a list, 16 MB).
4. Links, API and command lines (reliability_inputs.py): randomly linked run directories, random
   inputs to every model's public entries, random command lines.

    python3 benchmarks/reliability.py [--kills 20] [--inputs 2000] [--links 1000] [--api 60] [--commands 300]
                                      [--seed 0] [--skip requeue,fuzz,hostile,links,api,cli]
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import pickle
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

import reliability_inputs
from common import REPO, emit, log, machine

TRAIN = ["pixelcnn", "--hidden-channels", "8", "--num-blocks", "1", "--output-hidden", "8", "--first-kernel-size", "3",
         "--steps", "300", "--eval-every", "5", "--sample-every", "0", "--grid-size", "0", "--batch-size", "16",
         "--seed", "11", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


def genzoo(args: list[str], wait: bool = True):
    cmd = [sys.executable, "-m", "genzoo", *args]
    if wait:
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)


def fingerprint(out: Path) -> dict:
    state = json.loads((out / "last" / "state.json").read_text())
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    tensors = {**{f"best/{k}": v for k, v in load_file(str(out / "model.safetensors")).items()},
               **{f"last/{k}": v for k, v in load_file(str(out / "last" / state["files"]["model"]["name"])).items()}}
    return {"losses": losses, "tensors": tensors}


def same(a: dict, b: dict) -> bool:
    return a["losses"] == b["losses"] and a["tensors"].keys() == b["tensors"].keys() and all(
        torch.equal(a["tensors"][k], b["tensors"][k]) for k in a["tensors"])


def requeue(n: int, rng: random.Random, work: Path) -> dict:
    """The identical command a scheduler repeats, `genzoo train ... --out OUT --resume`, killed (SIGKILL) at
    a random moment from its start (before the run directory exists) to past its end, then run again
    as it was, and once more after it has finished: every run that was not killed must exit 0, and
    the run must end bit-identical to an uninterrupted one."""
    command = ["train", *TRAIN, "--resume"]
    t0 = time.perf_counter()
    assert genzoo([*command, "--out", str(work / "reference")]).returncode == 0
    whole = time.perf_counter() - t0  # start-up, training and the final evaluation
    reference = fingerprint(work / "reference")
    exact, exit_zero, moments, stages, failures = 0, 0, [], {"before_state": 0, "mid_run": 0, "finished": 0}, []
    for i in range(n):
        out = work / "requeued" / f"run{i}"  # its parent does not exist either
        proc = genzoo([*command, "--out", str(out)], wait=False)
        moment = rng.uniform(0, 1.1 * whole)
        time.sleep(moment)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = out / "last" / "state.json"
        stage = ("finished" if state.exists() and json.loads(state.read_text()).get("finished") else
                 "mid_run" if state.exists() else "before_state")
        stages[stage] += 1
        again = genzoo([*command, "--out", str(out)])
        after = genzoo([*command, "--out", str(out)])  # requeued once more, after the end
        ok = again.returncode == 0 and after.returncode == 0 and "has finished" in after.stderr
        exit_zero += int(ok)
        if not ok:
            failures.append((again.stderr or after.stderr).strip().splitlines()[-1][:160])
        exact += int(ok and same(reference, fingerprint(out)))
        moments.append(round(moment, 2))
        log(f"requeue {i + 1}/{n}: killed at {moment:.1f} s ({stage}); exact so far {exact}")
    return {"requeues": n, "bit_identical_and_exit_0": exact, "exit_0": exit_zero, "killed_when": stages,
            "kill_seconds": moments, "failures": failures[:5], "uninterrupted_command_seconds": round(whole, 2)}


# -- fuzzing --------------------------------------------------------------------------------------
def mutated(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        kind = rng.random()
        if kind < 0.6 and out:
            out[rng.randrange(len(out))] = rng.randrange(256)
        elif kind < 0.8:
            out = out[: rng.randrange(len(out) + 1)]
        else:
            out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    return bytes(out)


def samples() -> dict[str, tuple[str, bytes]]:
    """name -> (file name, valid bytes) for every reader."""
    idx = struct.pack(">IIII", 0x803, 3, 4, 4) + bytes(range(48))
    images = {}
    for fmt, name in (("PNG", "a.png"), ("JPEG", "a.jpg")):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (6, 5, 3), dtype=np.uint8)).save(buf, format=fmt)
        images[fmt.lower()] = (name, buf.getvalue())
    from genzoo.checkpoint import save_tensors

    with tempfile.TemporaryDirectory() as d:
        save_tensors(Path(d) / "w.safetensors", {"a": torch.randn(2, 3), "b": torch.arange(4)})
        weights = (Path(d) / "w.safetensors").read_bytes()
    return {"idx": ("x-idx3-ubyte", idx), "idx_gzip": ("x-idx3-ubyte.gz", gzip.compress(idx)),
            "cifar_binary": ("data_batch_1.bin", bytes(3073 * 2)),
            "cifar_python": ("data_batch_1", pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 7]})),
            **images, "safetensors": ("w.safetensors", weights)}


def readers() -> dict:
    from genzoo.checkpoint import load_tensors
    from genzoo.data.cifar import read_binary_batch, read_python_batch
    from genzoo.data.folder import read_image
    from genzoo.data.idx import read_idx

    expected = {"a": ((2, 3), torch.float32), "b": ((4,), torch.int64)}
    return {"idx": lambda p: read_idx(p, 3), "idx_gzip": lambda p: read_idx(p, 3), "cifar_binary": read_binary_batch,
            "cifar_python": read_python_batch, "png": lambda p: read_image(p, 4, False),
            "jpeg": lambda p: read_image(p, 4, False), "safetensors": lambda p: load_tensors(p, expected)}


def fuzz(n: int, rng: random.Random, work: Path) -> dict:
    import genzoo

    results = {}
    read = readers()
    for name, (file_name, valid) in samples().items():
        counts, slowest = {"clean_error": 0, "read": 0, "other_exception": 0}, 0.0
        examples = []
        path = work / file_name
        for _ in range(n):
            path.write_bytes(mutated(valid, rng))
            t = time.perf_counter()
            reliability_inputs.tally(counts, examples, lambda: read[name](path), valid="read")  # noqa: B023
            slowest = max(slowest, time.perf_counter() - t)
        results[name] = {**counts, "slowest_seconds": round(slowest, 4), "examples": examples[:3]}
    ckpt = work / "ckpt"
    genzoo.save(genzoo.create("pixelcnn", genzoo.DataSpec(1, 4, 4, 3), hidden_channels=6, num_blocks=1,
                              output_hidden=6, first_kernel_size=3), ckpt)
    meta = json.loads((ckpt / "config.json").read_text())
    values = [None, True, -1, 0, 3, 10**9, 1e308, float("nan"), "64", [], {}, [1, 2], {"a": 1}, "pixelcnn"]
    counts, examples = {"clean_error": 0, "read": 0, "other_exception": 0}, []
    for _ in range(n):
        edited = json.loads(json.dumps(meta))
        where = rng.choice([edited, edited["config"], edited["config"], edited["spec"]])
        where[rng.choice(list(where) + ["extra"])] = rng.choice(values)
        (ckpt / "config.json").write_text(json.dumps(edited))
        reliability_inputs.tally(counts, examples, lambda: genzoo.load(ckpt), valid="read")
    results["config_json"] = {**counts, "examples": examples[:3]}
    return results


HOSTILE = {
    "png_12000x12000": "from genzoo.data.folder import read_image; read_image(P / 'big.png', 8, True)",
    "gzip_bomb_2GB": "from genzoo.data.idx import read_idx; read_idx(P / 'bomb-idx3-ubyte.gz', 3)",
    "safetensors_header_1TB": "from genzoo.checkpoint import load_tensors; load_tensors(P / 'lie.safetensors')",
    "config_hidden_1e9": "import genzoo; genzoo.load(P / 'huge')",
    "config_hidden_90000": "import genzoo; genzoo.load(P / 'wide')",
    "config_nesting_100000": "import genzoo; genzoo.load(P / 'nested')",
    "config_integer_5000_digits": "import genzoo; genzoo.load(P / 'digits5000')",
    "config_model_a_list": "import genzoo; genzoo.load(P / 'listed')",
    "config_string_16MB": "import genzoo; genzoo.load(P / 'long')",
    "config_1M_objects": "import genzoo; genzoo.load(P / 'objects')",
}
HOSTILE_CONFIGS = {
    "nested": "[" * 100_000 + "]" * 100_000,
    "digits5000": '{"model": "pixelcnn", "config": {"hidden_channels": ' + "9" * 5000 + '}, "spec": {}}',
    "listed": '{"model": ["pixelcnn"], "config": {}, "spec": {}}',
    "long": '{"model": "' + "x" * ((16 << 20) - 20) + '", "config": {}, "spec": {}}',
    "objects": "[" + ",".join(["{}"] * 1_000_000) + "]",
}


def hostile(work: Path) -> dict:
    import genzoo

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", 12000, 12000, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes(12001) * 64, 9)
    (work / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [bomb.compress(struct.pack(">IIII", 0x803, 50_000, 200, 200))]
    block = bytes(1 << 20)
    parts += [bomb.compress(block) for _ in range(2048)]
    (work / "bomb-idx3-ubyte.gz").write_bytes(b"".join(parts) + bomb.flush())
    (work / "lie.safetensors").write_bytes(struct.pack("<Q", 10**12) + b'{"a":1}')
    for name, hidden in (("huge", 10**9), ("wide", 90_000)):
        genzoo.save(genzoo.create("pixelcnn", genzoo.DataSpec(1, 4, 4, 3), hidden_channels=6), work / name)
        meta = json.loads((work / name / "config.json").read_text())
        meta["config"]["hidden_channels"] = hidden
        (work / name / "config.json").write_text(json.dumps(meta))
    for name, text in HOSTILE_CONFIGS.items():
        (work / name).mkdir()
        (work / name / "config.json").write_text(text)
    out = {}
    for name, code in HOSTILE.items():
        # the clock starts after genzoo (and torch) are imported: the seconds are the input's own
        probe = ("import resource, sys, time; from pathlib import Path; import genzoo; P = Path(sys.argv[1]); "
                 "t = time.perf_counter()\n"
                 "try:\n    " + code.replace("; ", "\n    ") + "\n    outcome = 'read'\n"
                 "except Exception as e:\n    outcome = type(e).__name__ + ': ' + str(e)[:100]\n"
                 "print(outcome); print(time.perf_counter() - t); "
                 "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
        proc = subprocess.run([sys.executable, "-c", probe, str(work)], capture_output=True, text=True, env=ENV, timeout=600)
        lines = proc.stdout.strip().splitlines()
        out[name] = {"outcome": lines[0] if lines else proc.stderr[-200:], "seconds": round(float(lines[1]), 3)
                     if len(lines) > 1 else None, "peak_rss_mb": round(float(lines[2]), 1) if len(lines) > 2 else None,
                     "file_bytes": sum(f.stat().st_size for f in work.rglob("*") if f.is_file() and
                                       (f.name in code or f.parent.name in code))}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--inputs", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--links", type=int, default=1000, help="randomly linked run directories")
    p.add_argument("--api", type=int, default=60, help="random inputs per model to its public entries")
    p.add_argument("--commands", type=int, default=300, help="random command lines")
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: requeue, fuzz, hostile, links, api, cli")
    args = p.parse_args()
    skip = set(args.skip.split(","))
    torch.set_num_threads(1)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        (work / "fuzz").mkdir()
        (work / "hostile").mkdir()
        result = {"benchmark": "reliability"}
        if "fuzz" not in skip:
            result["fuzz"] = fuzz(args.inputs, rng, work / "fuzz")
        if "hostile" not in skip:
            result["hostile"] = hostile(work / "hostile")
        if "requeue" not in skip:
            result["requeue"] = requeue(args.kills, rng, work)
        for part, run in (("links", lambda: reliability_inputs.links(args.links, rng, work / "links")),
                          ("api", lambda: reliability_inputs.api(args.api, rng)),
                          ("cli", lambda: reliability_inputs.cli(args.commands, rng, work / "cli"))):
            if part not in skip:
                (work / part).mkdir(exist_ok=True)
                result[part] = run()
        result["machine"] = machine()
    emit(result)


if __name__ == "__main__":
    main()
