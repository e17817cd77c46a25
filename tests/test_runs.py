"""Runs that never lose or mix work: the same seed gives the same run, a run killed anywhere in a
state write resumes to the weights of an uninterrupted one (or is refused in one sentence), one
writer per run directory, and a run repeated from its record."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from genzoo.cli import main
from genzoo.rundir import KILL_POINTS, RunDirectory

SMALL = ["pixelcnn", "--hidden-channels", "8", "--num-blocks", "1", "--output-hidden", "8", "--first-kernel-size", "3",
         "--steps", "6", "--eval-every", "3", "--sample-every", "0", "--grid-size", "0", "--batch-size", "8",
         "--no-progress"]


def weights(path: Path) -> dict:
    return load_file(str(path))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def last_weights(out: Path) -> Path:
    state = RunDirectory(out).read_state()
    return out / "last" / state["files"]["model"]["name"]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _sigint_default() -> None:
    """A child that takes Ctrl-C as a user's shell delivers it, even when this process ignores SIGINT (as a
    job started in the background by a non-interactive shell does)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def genzoo_process(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genzoo", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **env})


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted run, seed 3."""
    out = tmp_path_factory.mktemp("straight") / "run"
    assert main(["train", *SMALL, "--seed", "3", "--out", str(out)]) == 0
    return out


def test_the_same_seed_twice_gives_bit_identical_weights_and_metrics(straight, tmp_path, capsys):
    again, other = tmp_path / "again", tmp_path / "other"
    assert main(["train", *SMALL, "--seed", "3", "--out", str(again)]) == 0
    assert same_weights(straight / "model.safetensors", again / "model.safetensors")
    assert same_weights(last_weights(straight), last_weights(again))
    assert [r["loss"] for r in metrics(straight)] == [r["loss"] for r in metrics(again)]
    a, b = (json.loads((d / "summary.json").read_text()) for d in (straight, again))
    assert a["test_bpd"] == b["test_bpd"]
    assert main(["train", *SMALL, "--seed", "4", "--out", str(other)]) == 0
    assert not same_weights(straight / "model.safetensors", other / "model.safetensors")
    record = json.loads((straight / "config.json").read_text())["run"]
    assert record["seed"] == 3 and {"genzoo", "torch"} <= set(record["versions"])


def test_a_run_repeats_from_its_record_and_flags_override_it(straight, tmp_path):
    repeat, shorter = tmp_path / "repeat", tmp_path / "shorter"
    assert main(["train", "--config", str(straight / "config.json"), "--out", str(repeat), "--no-progress"]) == 0
    assert same_weights(straight / "model.safetensors", repeat / "model.safetensors")
    assert main(["train", "--config", str(straight / "config.json"), "--steps", "3", "--out", str(shorter),
                 "--no-progress"]) == 0
    record = json.loads((shorter / "config.json").read_text())["run"]
    assert record["train_config"]["steps"] == 3 and record["seed"] == 3
    written = tmp_path / "mine.json"
    written.write_text(json.dumps({"model": "pixelcnn", "config": {"hidden_channels": 8, "num_blocks": 1,
                                   "output_hidden": 8, "first_kernel_size": 3}, "data": "digits",
                                   "train": {"steps": 2, "eval_every": 2, "batch_size": 8, "grid_size": 0}}))
    assert main(["train", "--config", str(written), "--out", str(tmp_path / "mine"), "--no-progress"]) == 0


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_inside_a_state_write_resumes_to_the_uninterrupted_weights(point, straight, tmp_path, capsys):
    out = tmp_path / "run"
    proc = genzoo_process(["train", *SMALL, "--seed", "3", "--out", str(out)], GENZOO_TEST_KILL_AT=point)
    assert proc.returncode == -9, proc.stderr  # killed at the first state write (step 3 of 6)
    # the identical command with --resume: it continues a complete state, or starts again without one
    assert main(["train", *SMALL, "--seed", "3", "--out", str(out), "--resume"]) == 0
    assert same_weights(last_weights(straight), last_weights(out))
    assert same_weights(straight / "model.safetensors", out / "model.safetensors")
    assert [r["loss"] for r in metrics(straight)] == [r["loss"] for r in metrics(out)]
    assert not list(out.rglob("*.tmp")) and len(list((out / "last").glob("*.safetensors"))) == 4


def test_a_state_whose_files_do_not_belong_together_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    run = RunDirectory(out)
    state = run.read_state()
    state["finished"] = False
    (out / "last" / "state.json").write_text(json.dumps(state))
    ema = out / "last" / state["files"]["ema"]["name"]
    ema.write_bytes(last_weights(out).read_bytes())  # a valid weights file, but not this state's EMA
    capsys.readouterr()
    assert main(["train", "pixelcnn", "--out", str(out), "--resume", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "does not hold together" in err and ema.name in err and "\n" not in err


def test_a_second_writer_is_refused_and_a_killed_one_leaves_no_lock(tmp_path, capsys):
    out = tmp_path / "run"
    code = ("import sys, time; from genzoo.rundir import RunDirectory; "
            "run = RunDirectory(sys.argv[1]); run.lock(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", *SMALL, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "being written by a running genzoo process" in err and f"pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", *SMALL, "--out", str(out)]) == 0


def test_temporary_files_of_a_killed_write_are_cleaned_and_files_keep_the_umask(tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o027)
    try:
        assert main(["train", *SMALL, "--steps", "3", "--out", str(out)]) == 0
        (out / "last" / ".model-000009.safetensors.abc.tmp").write_bytes(b"half")
        (out / "last" / "ema-000009.safetensors").write_bytes(b"orphan")
        run = RunDirectory(out)
        run.clean()
    finally:
        os.umask(old)
    assert not list(out.rglob("*.tmp")) and not (out / "last" / "ema-000009.safetensors").exists()
    assert stat.S_IMODE((out / "config.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o640


def test_a_run_that_left_no_state_starts_again_without_deleting_by_hand(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # what a run killed before its first state leaves
    (out / "metrics.jsonl").write_text('{"global_step": 99}\n')
    (out / "notes.txt").write_text("mine")
    assert main(["train", *SMALL, "--steps", "3", "--out", str(out)]) == 0
    assert [r["global_step"] for r in metrics(out)][-1] == 3 and (out / "notes.txt").read_text() == "mine"


def test_interrupting_a_run_exits_130_and_it_resumes(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "genzoo", "train", *SMALL, "--steps", "4000", "--eval-every", "2",
                             "--out", str(out)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=_sigint_default)
    deadline = time.time() + 120
    while not (out / "last" / "state.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(2)  # SIGINT, as Ctrl-C
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "--resume" in err and "Traceback" not in err
