"""Data parallelism through PyTorch's own launcher: two gloo processes on the CPU train the model a
single process trains with the same global batch, rank 0 alone writes, and a killed run resumes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genzoo.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")
ARGS = ["--hidden-channels", "8", "--num-blocks", "1", "--output-hidden", "8", "--first-kernel-size", "3",
        "--dropout", "0", "--steps", "6", "--eval-every", "3", "--sample-every", "3", "--grid-size", "4",
        "--batch-size", "16", "--val-batch-size", "64", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cwd: Path, *argv: str, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    env.pop("GENZOO_TEST_KILL_AT", None)
    if kill_at:
        env["GENZOO_TEST_KILL_AT"] = kill_at
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "genzoo", "train", "pixelcnn", *argv]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}


def test_two_processes_train_the_single_process_model_and_resume(tmp_path):
    single = tmp_path / "single"
    assert main(["train", "pixelcnn", "--out", str(single), *ARGS]) == 0

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    ddp = tmp_path / "ddp"
    # rank 0 is killed at its first saved state (step 3); torchrun ends rank 1
    killed = torchrun(cwd, "--out", str(ddp), *ARGS, kill_at="after_cleanup")
    assert killed.returncode != 0 and json.loads((ddp / "last" / "state.json").read_text())["step"] == 3
    done = torchrun(cwd, "--out", str(ddp), "--resume", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]

    assert not any(cwd.iterdir()), "a rank wrote outside the run directory"
    # the kill came before step 3's sample grid, which a resume does not draw again
    assert files(ddp) | {"samples/step_000003.png"} == files(single), "the run directories hold different files"
    for name in ("model.safetensors", "last/model-000002.safetensors", "last/ema-000002.safetensors"):
        a, b = load_file(single / name), load_file(ddp / name)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=f"{name}: {k}")
    rows = [[r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
            for d in (single, ddp)]
    assert [r["global_step"] for r in rows[0]] == [r["global_step"] for r in rows[1]], "one writer, one line per row"
    for a, b in zip(*rows):
        if "val_bpd" in a:
            assert b["val_bpd"] == pytest.approx(a["val_bpd"], abs=1e-6) and b["loss"] == pytest.approx(a["loss"], abs=1e-5)


def test_the_global_batch_must_divide_by_the_processes(monkeypatch, tmp_path):
    import genzoo
    from genzoo.data.spec import Dataset, DataSpec
    from genzoo.errors import GenzooError
    from genzoo.training import TrainConfig, train

    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; the check comes before the process group
    spec = DataSpec(1, 4, 4, 5)
    model = genzoo.create("pixelcnn", spec, seed=0, hidden_channels=8, num_blocks=1, first_kernel_size=3,
                          output_hidden=8)
    with pytest.raises(GenzooError, match="batch size 15 is the global batch and must divide by the 2 processes"):
        train(model, Dataset(torch.zeros(8, *spec.shape, dtype=torch.long), spec), None,
              TrainConfig(steps=1, batch_size=15), out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


AE = dict(latent_dim=4, hidden_channels=8, num_blocks=1)
AE_CFG_KW = dict(steps=3, batch_size=16, eval_every=3, sample_every=0, seed=1)


def _resume_worker(rank: int, port: int, root: str) -> None:
    import genzoo
    from genzoo.data.spec import Dataset, DataSpec
    from genzoo.rundir import RunDirectory
    from genzoo.training import TrainConfig, train

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    spec = DataSpec(1, 4, 4, 5)
    x = torch.randint(0, 5, (64, *spec.shape), generator=torch.Generator().manual_seed(0))
    d = Dataset(x, spec)
    cfg = TrainConfig(steps=12, batch_size=16, lr=3e-3, warmup_steps=3, eval_every=4, sample_every=0, seed=7,
                      ema_decay=0.9)
    tiny = dict(hidden_channels=8, num_blocks=1, first_kernel_size=3, output_hidden=8, dropout=0.3)
    train(genzoo.create("pixelcnn", spec, seed=0, **tiny), d, d, cfg, out=f"{root}/straight", progress=False)
    train(genzoo.create("pixelcnn", spec, seed=0, **tiny), d, d, cfg, out=f"{root}/stopped", progress=False,
          stop_after=9)
    resumed = RunDirectory(f"{root}/stopped").load_model()[0].train()
    train(resumed, d, d, cfg, out=f"{root}/stopped", progress=False, resume=True)
    ae = genzoo.create("ae", spec, seed=0, **AE)
    train(ae, d, d, TrainConfig(**AE_CFG_KW), out=f"{root}/ae", progress=False)
    import torch.distributed as dist
    dist.destroy_process_group()


def test_data_parallel_resume_with_dropout_is_exact_and_batch_statistics_cover_the_global_batch(tmp_path):
    """Dropout draws differ per rank (seed + rank); the saved state keeps every rank's RNG."""
    torch.multiprocessing.spawn(_resume_worker, args=(_free_port(), str(tmp_path)), nprocs=2)
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "stopped" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rng = load_file(next((tmp_path / "stopped" / "last").glob("rng-*.safetensors")))
    assert {"torch", "data", "torch.rank1"} <= set(rng) and not torch.equal(rng["torch"], rng["torch.rank1"])

    # the AE's code moments are statistics of the training batches: taken over the global batch
    import genzoo
    from genzoo.data.spec import Dataset, DataSpec
    from genzoo.training import TrainConfig, train

    spec = DataSpec(1, 4, 4, 5)
    x = torch.randint(0, 5, (64, *spec.shape), generator=torch.Generator().manual_seed(0))
    ae = genzoo.create("ae", spec, seed=0, **AE)
    train(ae, Dataset(x, spec), Dataset(x, spec), TrainConfig(**AE_CFG_KW), progress=False)
    ddp = load_file(tmp_path / "ae" / "model.safetensors")
    for k in ("code_count", "code_mean", "code_second"):
        torch.testing.assert_close(ddp[k], ae.state_dict()[k], rtol=0, atol=1e-5, msg=k)
