"""A run directory cannot be turned against its owner: links among its entries (the lock, the state
folder, the samples folder, the files a run writes) that lead to a sentinel directory outside are
refused in one sentence by train, resume, compare and report, and the sentinel stays byte-identical."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from genzoo.cli import main
from genzoo.rundir import ENTRIES

TINY = ["pixelcnn", "--hidden-channels", "8", "--num-blocks", "1", "--output-hidden", "8", "--first-kernel-size", "3",
        "--steps", "4", "--eval-every", "2", "--sample-every", "2", "--grid-size", "4", "--batch-size", "8",
        "--no-progress"]


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def sentinel(tmp_path) -> Path:
    d = tmp_path / "sentinel"
    (d / "sub").mkdir(parents=True)
    for name in ("victim.txt", "weights.safetensors", "step_000002.png", "sub/state.json"):
        (d / name).write_bytes(b"not yours " + name.encode())
    return d


def _link_entries(run: Path, sentinel: Path, rng: random.Random) -> list[str]:
    """Links to the sentinel under 1 to 3 names a run writes, some in its sub-folders."""
    names = rng.sample([*ENTRIES, "last/model-000001.safetensors", "samples/step_000002.png", "report.html"],
                       rng.randint(1, 3))
    for name in names:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        target = rng.choice([sentinel, sentinel / "sub", sentinel / "victim.txt", sentinel / "step_000002.png"])
        if not (run / name).is_symlink():
            os.symlink(target, run / name)
    return names


@pytest.mark.parametrize("case", range(6))
def test_random_links_in_a_run_directory_never_touch_what_they_lead_to(case, sentinel, tmp_path, capsys):
    rng = random.Random(case)
    before = snapshot(sentinel)
    run = tmp_path / "run"
    run.mkdir()
    names = _link_entries(run, sentinel, rng)
    for argv in (["train", *TINY, "--out", str(run)], ["train", *TINY, "--out", str(run), "--resume"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and "symbolic link" in err and err.count("\n") <= 2, (names, err)
    assert snapshot(sentinel) == before


def test_compare_and_report_refuse_links_in_their_output(sentinel, tmp_path, capsys):
    before = snapshot(sentinel)
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    card = tmp_path / "card"
    card.mkdir()
    os.symlink(sentinel / "victim.txt", card / "report.html")
    assert main(["report", str(run), "--out", str(card)]) == 2
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    os.symlink(sentinel, cmp / "run0-pixelcnn")
    assert main(["compare", "--runs", str(run), "--out", str(cmp), "--samples", "8", "--no-progress"]) == 2
    assert capsys.readouterr().err.count("symbolic link") == 2
    assert snapshot(sentinel) == before


def test_a_link_as_the_lock_is_not_written_through_even_when_it_appears_after_the_check(tmp_path, monkeypatch):
    """O_NOFOLLOW: the lock is never written through a link, whenever the link appears."""
    from genzoo import checkpoint
    from genzoo.errors import GenzooError
    from genzoo.rundir import RunDirectory

    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(victim, run / ".lock")
    monkeypatch.setattr(checkpoint, "refuse_links", lambda *args: None)  # as if the link came after the check
    with pytest.raises(GenzooError, match="cannot write the run directory"):
        RunDirectory(run).lock()
    assert victim.read_text() == "mine"


def test_clean_up_deletes_only_the_state_files_a_run_named(tmp_path):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(run)]) == 0
    (run / "last" / "weights.safetensors").write_bytes(b"mine")  # not a name a state write gives
    (run / "last" / "ema-000099.safetensors").write_bytes(b"left by a killed write")
    assert main(["train", *TINY, "--out", str(run), "--resume"]) == 0  # finished: nothing trained
    from genzoo.rundir import RunDirectory

    RunDirectory(run).clean()
    assert (run / "last" / "weights.safetensors").read_bytes() == b"mine"
    assert not (run / "last" / "ema-000099.safetensors").exists()
