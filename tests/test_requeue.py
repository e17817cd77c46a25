"""Schedulers repeat the identical command: `genzoo train ... --resume`, killed with SIGKILL at random
moments (before the run directory exists, mid-run, after the end) and run again as it was, always
ends with exit 0 and the weights of an uninterrupted run, with one process and under torchrun's own
restarts with two; a flag that differs from the run's is one sentence naming it."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genzoo.cli import main
from test_distributed import ARGS as DDP_ARGS
from test_distributed import SRC, _free_port
from test_runs import _sigint_default, same_weights

ARGS = ["pixelcnn", "--hidden-channels", "8", "--num-blocks", "1", "--output-hidden", "8", "--first-kernel-size", "3",
        "--steps", "40", "--eval-every", "4", "--sample-every", "20", "--grid-size", "4", "--batch-size", "8",
        "--seed", "5", "--no-progress"]
ENV = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def _requeued(out: Path, delays: list[float]) -> list[int]:
    """The identical command, killed after each of `delays` seconds (when still running), then run to its
    end and once more: the exit codes of the runs that were not killed."""
    cmd = [sys.executable, "-m", "genzoo", "train", *ARGS, "--out", str(out), "--resume"]
    codes = []
    for delay in delays + [None, None]:
        proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if delay is not None:
            time.sleep(delay)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.communicate(timeout=60)
                continue
        _, err = proc.communicate(timeout=300)
        assert "Traceback" not in err, err
        codes.append(proc.returncode)
    return codes


def test_the_identical_command_killed_at_random_moments_ends_as_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    t0 = time.perf_counter()
    assert main(["train", *ARGS, "--out", str(straight)]) == 0
    seconds = time.perf_counter() - t0 + 3.0  # the command also imports torch
    rng = random.Random(0)
    out = tmp_path / "missing" / "run"  # not there yet: the first kill may come before it exists
    codes = _requeued(out, [0.5] + [rng.uniform(1.0, seconds) for _ in range(3)])
    assert codes and all(c == 0 for c in codes)
    assert same_weights(straight / "model.safetensors", out / "model.safetensors")
    last = [p for p in (out / "last").glob("model-*.safetensors")]
    assert len(last) == 1 and same_weights(next((straight / "last").glob("model-*.safetensors")), last[0])
    assert (out / "summary.json").is_file() and (out / "samples.png").is_file()


def test_a_finished_run_resumed_exits_0_and_says_how_to_train_it_on(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *ARGS, "--steps", "4", "--out", str(out), "--resume"]) == 0  # empty --out: it starts
    first = capsys.readouterr().out
    assert main(["train", *ARGS, "--steps", "4", "--out", str(out), "--resume"]) == 0
    captured = capsys.readouterr()
    assert "has finished all 4 steps" in captured.err and "--init-from" in captured.err
    assert captured.out.splitlines() == first.splitlines()[:1]  # the figure, as the run's end printed it
    assert main(["train", *ARGS, "--steps", "4", "--out", str(out)]) == 2  # without --resume: refused, with the way on
    assert "--init-from" in capsys.readouterr().err
    more = tmp_path / "more"
    assert main(["train", "--init-from", str(out), "--steps", "8", "--eval-every", "4", "--grid-size", "0",
                 "--out", str(more), "--no-progress"]) == 0
    assert "test bits/dim" in capsys.readouterr().out


@pytest.mark.parametrize("flag, value, words", [
    ("--hidden-channels", "16", "--hidden-channels is 16 here but 8"),
    ("--seed", "6", "--seed is 6 here but 5"),
    ("--data", "mnist", "--data is 'mnist' here but 'digits'"),
])
def test_a_resumed_run_refuses_a_flag_that_differs_from_its_own(tmp_path, capsys, flag, value, words):
    out = tmp_path / "run"
    assert main(["train", *ARGS, "--steps", "8", "--out", str(out)]) == 0
    capsys.readouterr()
    argv = ["train", *ARGS, "--steps", "8", "--out", str(out), "--resume"]
    i = argv.index(flag) if flag in argv else None
    argv = argv[:i] + [flag, value] + argv[i + 2:] if i is not None else argv + [flag, value]
    assert main(argv) == 2
    assert words in capsys.readouterr().err
    assert main(["train", "pixelcnn", "--out", str(out), "--resume", "--device", "cpu"]) == 0  # plain resume works


def _torchrun(out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--max-restarts=1",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "genzoo", "train", "pixelcnn",
           "--out", str(out), *DDP_ARGS, "--resume"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def test_torchrun_restarts_the_identical_command_and_ends_as_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    proc = _torchrun(straight, ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "ddp"
    killed = {**ENV, "GENZOO_TEST_KILL_AT": "after_cleanup", "GENZOO_TEST_KILL_ONCE": str(tmp_path / "killed")}
    # rank 0 is killed at its first saved state; torchrun restarts both with the same command line
    proc = _torchrun(out, killed)
    assert proc.returncode == 0 and (tmp_path / "killed").exists(), proc.stderr[-3000:]
    again = _torchrun(out, killed)  # requeued after its end
    assert again.returncode == 0 and "has finished" in again.stderr, again.stderr[-3000:]
    assert same_weights(straight / "model.safetensors", out / "model.safetensors")


def test_an_interrupt_before_the_first_evaluation_says_that_nothing_was_saved(tmp_path):
    out = tmp_path / "run"
    argv = [*ARGS, "--steps", "100000", "--eval-every", "50000", "--out", str(out), "--resume"]
    proc = subprocess.Popen([sys.executable, "-m", "genzoo", "train", *argv], env=ENV, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_sigint_default)
    deadline = time.time() + 120
    while not (out / ".lock").exists() and time.time() < deadline:  # training has begun
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)  # as Ctrl-C
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "nothing was saved" in err and "Traceback" not in err, err
    assert not (out / "last" / "state.json").exists()
