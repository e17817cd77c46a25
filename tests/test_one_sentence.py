"""Inputs that once gave a traceback or a silently wrong result, each now one sentence (or a valid
result): hostile config.json files, an overflowing seed, images in the wrong form, running out of
memory, out-of-range temperatures, an empty model list and a disk full from the start."""
from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import genzoo
from genzoo import GenzooError
from genzoo.cli import main
from tiny import tiny

SRC = str(Path(__file__).resolve().parents[1] / "src")
T = ["--hidden-channels", "12", "--num-blocks", "1", "--first-kernel-size", "3", "--output-hidden", "12",
     "--grid-size", "0", "--device", "cpu", "--no-progress"]
DIGITS = genzoo.DataSpec(1, 8, 8, 17)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "pixelcnn", *T, "--steps", "2", "--eval-every", "2", "--out", str(out)]) == 0
    return out


def _one_sentence(capsys, argv: list[str], words: str) -> None:
    t0 = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.splitlines()[-1].startswith("genzoo: error: "), err
    assert words in err.splitlines()[-1], err  # the error is its last line, one sentence
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000 + "]" * 100_000, "nests deeper than genzoo reads"),
    ('{"model": "pixelcnn", "config": {"hidden_channels": ' + "9" * 5000 + '}, "spec": {}}', "5000 digits"),
    ('{"model": ["pixelcnn"], "config": {}, "spec": {}}', "its 'model' must be a model name"),
    ('{"model": {"a": 1}, "config": {}, "spec": {}}', "its 'model' must be a model name"),
    ('{"model": "pixelcnn", "config": [], "spec": {}}', "its 'config' must be an object"),
])
@pytest.mark.parametrize("command", ["load", "sample", "eval"])
def test_a_hostile_config_json_is_one_sentence_in_load_sample_and_eval(run, tmp_path, capsys, text, words, command):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(text)
    (bad / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    if command == "load":
        with pytest.raises(GenzooError, match=words):
            genzoo.load(bad)
    else:
        _one_sentence(capsys, [command, str(bad)], words)


def test_diffuse_refuses_a_seed_beyond_64_bits_as_train_does(tmp_path, capsys):
    _one_sentence(capsys, ["diffuse", "--seed", str(2 ** 64), "--timesteps", "20", "--out", str(tmp_path / "d")],
                  "a seed must be an integer from 0 to 2^63 - 1")


@pytest.mark.parametrize("x, words", [
    (torch.zeros(0, 1, 8, 8, dtype=torch.long), "empty batch"),
    ([[[[0] * 8] * 8]], None),                       # a nested list of levels: a valid result or one sentence
    (np.zeros((2, 1, 8, 8), dtype=np.int32), None),  # numpy arrays are converted
])
def test_bits_per_dim_takes_numpy_and_refuses_empty_batches_and_lists_in_one_sentence(x, words):
    model = genzoo.create("pixelcnn", DIGITS, seed=0, **tiny("pixelcnn"))
    if words is None and not isinstance(x, list):
        assert genzoo.bits_per_dim(model, x).kind == "exact"
        return
    with pytest.raises(GenzooError, match=words or "must be a torch.Tensor or numpy array"):
        genzoo.bits_per_dim(model, x)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32])
def test_vae_takes_any_integer_dtype_as_the_readme_says(dtype):
    model = genzoo.create("vae", DIGITS, seed=0, **tiny("vae"))
    x = torch.randint(0, 17, (3, 1, 8, 8)).to(dtype)
    assert torch.isfinite(model.loss(x)) and model.log_likelihood(x).nats.shape == (3,)


@pytest.mark.parametrize("name", ["ddpm", "sohl-dickstein"])
def test_diffusion_likelihoods_take_numpy_arrays(name):
    model = genzoo.create(name, DIGITS, seed=0, **tiny(name))
    assert model.log_likelihood(np.zeros((2, 1, 8, 8), dtype=np.int64), stride=5).nats.shape == (2,)


def test_flow_matching_likelihood_refuses_a_list_in_one_sentence():
    model = genzoo.create("flow-matching", DIGITS, seed=0, **tiny("flow-matching"))
    with pytest.raises(GenzooError, match="must be a torch.Tensor or numpy array, got list"):
        model.log_likelihood([[0]])


def test_running_out_of_memory_in_training_is_one_sentence_with_the_size(tmp_path):
    def limit() -> None:  # as `ulimit -v 3000000` does
        resource.setrlimit(resource.RLIMIT_AS, (3_000_000 * 1024, 3_000_000 * 1024))

    proc = subprocess.run([sys.executable, "-m", "genzoo", "train", "pixelcnn", *T, "--steps", "1", "--batch-size",
                           "100000", "--out", str(tmp_path / "b")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}, preexec_fn=limit)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "out of memory: one allocation asked for" in last and "--batch-size" in last


@pytest.mark.parametrize("name", ["ae", "dae", "realnvp", "glow", "pixelcnn"])
def test_a_temperature_beyond_its_range_is_refused(name):
    model = genzoo.create(name, DIGITS, seed=0, **tiny(name))
    with pytest.raises(GenzooError, match="temperature must be a number from"):
        model.sample(2, temperature=1e308)


def test_a_temperature_beyond_its_range_is_refused_by_the_command_line(tmp_path, capsys):
    out = tmp_path / "flow"
    assert main(["train", "realnvp", "--hidden-channels", "8", "--couplings-per-scale", "1", "--final-couplings", "2",
                 "--steps", "2", "--eval-every", "2", "--grid-size", "0", "--no-progress", "--out", str(out)]) == 0
    capsys.readouterr()
    _one_sentence(capsys, ["sample", str(out), "--temperature", "1e308", "--out", str(tmp_path / "g.png")],
                  "temperature must be a number from 0.0 to 100.0")


def test_an_empty_model_list_is_refused(tmp_path, capsys):
    _one_sentence(capsys, ["compare", "--models", "", "--out", str(tmp_path / "c")], "--models is empty")


def test_compare_runs_without_a_directory_is_refused_rather_than_training_every_model(tmp_path, capsys):
    _one_sentence(capsys, ["compare", "--runs", "--out", str(tmp_path / "c")], "--runs names no run directory")


def test_a_disk_full_at_the_start_names_the_file(tmp_path, capsys, monkeypatch):
    from genzoo import rundir

    real_fdopen = os.fdopen

    class FullDisk:  # a file on a disk with no space left: writing fails, the rest works
        def __init__(self, fd: int, mode: str) -> None:
            self.file = real_fdopen(fd, mode)

        def write(self, *args):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str):
            return getattr(self.file, name)

    monkeypatch.setattr(rundir.os, "fdopen", FullDisk)
    _one_sentence(capsys, ["train", "pixelcnn", *T, "--steps", "2", "--out", str(tmp_path / "run")],
                  f"cannot write {str(tmp_path / 'run' / '.lock')!r}: No space left on device")
    assert json.dumps(sorted(p.name for p in (tmp_path / "run").iterdir())) == '[".lock"]'  # nothing else written
