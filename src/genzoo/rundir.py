"""A training run's directory: the best weights, the resumable state, metrics and sample grids.

    config.json, model.safetensors   the best EMA weights so far (loadable by genzoo.load);
                                     config.json also records the run (data, root, seed, versions,
                                     train config)
    last/state.json                  the resumable state: step, stage, best value, optimizer settings,
                                     the model's config, and the four tensor files below by name
                                     and SHA-256
    last/{model,ema,optimizer,rng}-GGGGGG.safetensors   the tensors of state generation G
    metrics.jsonl                    one JSON object per logged step
    samples/step_NNNNNN.png          sample grids from the EMA weights
    .lock                            held by the one process writing the run

The state is replaced as one unit: a new generation's tensor files are written first (each
atomically), then state.json names them (atomically), then the old generation is deleted. A run
killed at any point leaves state.json naming a complete set whose hashes it records; a resume
checks them and refuses, in one sentence, a set that does not belong together. Nothing is pickled.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import checkpoint
from .errors import GenzooError

STATE_DIR = "last"
STATE_FILE = "state.json"
PARTS = ("model", "ema", "optimizer", "rng")
STATE_NAME = re.compile(rf"({'|'.join(PARTS)})-\d{{6,}}\.safetensors")  # the files of a state generation
RUN_FILES = ("config.json", "model.safetensors", "metrics.jsonl", "summary.json")
# every entry a run writes or deletes in its directory; none may be a symbolic link
ENTRIES = (".lock", STATE_DIR, "samples", "samples.png", *RUN_FILES)
# A test hook: GENZOO_TEST_KILL_AT=POINT kills the process (SIGKILL) when a state write reaches POINT;
# with GENZOO_TEST_KILL_ONCE=FILE only the first time (the file records it), as a restarted job sees.
KILL_POINTS = ("after_model", "after_ema", "after_optimizer", "after_rng", "after_state", "after_cleanup")


def _kill_point(point: str) -> None:
    if os.environ.get("GENZOO_TEST_KILL_AT") == point:
        once = os.environ.get("GENZOO_TEST_KILL_ONCE")
        if once:
            if os.path.exists(once):
                return
            Path(once).touch()
        os.kill(os.getpid(), signal.SIGKILL)


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer's state dict as flat tensors ("param_index.key") and JSON for the rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if isinstance(value, Tensor):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """The inverse of optimizer_to_flat: load the flat state into `opt`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state(data_gen: torch.Generator, device: torch.device) -> dict[str, Tensor]:
    """Every RNG state a run draws from: torch's global one, the data order's, and CUDA's."""
    rng = {"torch": torch.get_rng_state(), "data": data_gen.get_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return rng


def set_rng_state(rng: dict[str, Tensor], data_gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"])
    data_gen.set_state(rng["data"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)


class RunDirectory:
    """Reads and writes a run directory; every write is atomic. A `None` path writes nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock: Any = None

    @property
    def state_dir(self) -> Path:
        assert self.path is not None
        return self.path / STATE_DIR

    # -- one writer -----------------------------------------------------------------------------
    def lock(self) -> None:
        """Take the directory's lock, or refuse in one sentence when a live process holds it (the
        operating system releases it when that process dies, however it dies)."""
        if self.path is None or self._lock is not None:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            checkpoint.refuse_links(self.path, ENTRIES)
            for sub in (STATE_DIR, "samples"):  # what a run writes or deletes inside its folders
                if (self.path / sub).is_dir():
                    checkpoint.refuse_links(self.path / sub, [p.name for p in (self.path / sub).iterdir()])
            # O_NOFOLLOW: a link swapped in for the lock is refused, never written through
            f = os.fdopen(os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644), "r+")
        except OSError as e:
            raise GenzooError(f"cannot write the run directory {str(self.path)!r}: {e.strerror or e}.") from e
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise GenzooError(f"{str(self.path)!r} is being written by a running genzoo process ({holder}); "
                                  "wait for it to end or choose another --out.") from None
            raise
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}\n")
            f.flush()
        except OSError as e:
            with contextlib.suppress(OSError):  # closing flushes again, and fails again on a full disk
                f.close()
            raise GenzooError(f"cannot write {str(self.path / '.lock')!r}: {e.strerror or e}.") from e
        self._lock = f

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # -- state ----------------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any] | None:
        """The recorded state (state.json), or None when the directory holds no resumable state."""
        if self.path is None or not (self.state_dir / STATE_FILE).is_file():
            return None
        state = checkpoint.read_json(self.state_dir / STATE_FILE, "run state")
        keys = {"generation", "files", "config", "step", "stage_index", "global_step", "best_value", "best_step"}
        if not isinstance(state, dict) or not keys <= set(state) or set(state["files"]) != set(PARTS):
            raise GenzooError(f"{str(self.state_dir / STATE_FILE)!r} is not a genzoo run state; "
                              f"move it away to start the run again.")
        return state

    def has_state(self) -> bool:
        return self.read_state() is not None

    def save_state(self, model: nn.Module, ema: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any],
                   rng: dict[str, Tensor], record: dict[str, Any]) -> None:
        """Write a new generation of the resumable state, then point state.json at it."""
        if self.path is None:
            return
        d = self.state_dir
        old = self.read_state()
        generation = int(old["generation"]) + 1 if old else 1
        opt_tensors, opt_meta = optimizer_to_flat(opt)
        files = {}
        for part, tensors in zip(PARTS, (model.state_dict(), ema.state_dict(), opt_tensors, rng)):
            name = f"{part}-{generation:06d}.safetensors"
            files[part] = {"name": name, "sha256": checkpoint.save_tensors(d / name, tensors)}
            _kill_point(f"after_{part}")
        config = {"model": model.name, "config": checkpoint.config_to_dict(model.config),
                  "spec": model.spec.to_dict(), "run": record}
        checkpoint.atomic_write_json(d / STATE_FILE, {**state, "generation": generation, "files": files,
                                                      "config": config, "optimizer": opt_meta})
        _kill_point("after_state")
        self.clean()
        _kill_point("after_cleanup")

    def clean(self) -> None:
        """Delete what killed writes left: temporary files, and tensor files state.json does not name."""
        if self.path is None:
            return
        checkpoint.remove_temporary_files(self.path)
        state = self.read_state()
        keep = {f["name"] for f in state["files"].values()} if state else set()
        if self.state_dir.is_dir():
            for f in self.state_dir.glob("*.safetensors"):
                if f.name not in keep and STATE_NAME.fullmatch(f.name):  # only what a state write named
                    f.unlink(missing_ok=True)

    def _checked(self, state: dict[str, Any], part: str) -> Path:
        entry = state["files"][part]
        path = self.state_dir / str(entry["name"])
        if not path.is_file():
            raise GenzooError(f"the saved state in {str(self.state_dir)!r} is incomplete: {path.name} is missing; "
                              "start the run again in a new --out.")
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry.get("sha256"):
            raise GenzooError(f"the saved state in {str(self.state_dir)!r} does not hold together: {path.name} is not "
                              "the file its state.json records (its SHA-256 differs); start the run again.")
        return path

    def load_model(self) -> tuple[nn.Module, dict[str, Any]]:
        """The model of the recorded state, with its latest weights, and the state itself."""
        state = self.read_state()
        if state is None:
            raise GenzooError(f"there is no run to resume in {str(self.path)!r} (no {STATE_DIR}/{STATE_FILE}).")
        model = checkpoint.build_from_config(state["config"])
        checkpoint.load_state(model, self._checked(state, "model"))
        return model, state

    def load_state(self, model: nn.Module, ema: nn.Module) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Tensor]]:
        """Load the latest weights into `model` and `ema` after checking every file against its recorded
        hash; return (state, optimizer tensors, RNG states)."""
        state = self.read_state()
        if state is None:
            raise GenzooError(f"there is no run to resume in {str(self.path)!r} (no {STATE_DIR}/{STATE_FILE}).")
        paths = {part: self._checked(state, part) for part in PARTS}
        checkpoint.load_state(model, paths["model"])
        checkpoint.load_state(ema, paths["ema"])
        return state, checkpoint.load_tensors(paths["optimizer"]), checkpoint.load_tensors(paths["rng"])

    def reset(self) -> None:
        """Remove what a run that left no resumable state wrote, so that it can start again; files
        that are not a run's are left alone."""
        if self.path is None or not self.path.is_dir():
            return
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for f in (self.path / "samples").glob("step_*.png") if (self.path / "samples").is_dir() else ():
            f.unlink(missing_ok=True)
        self.clean()

    # -- best weights, metrics ------------------------------------------------------------------
    def save_best(self, ema: nn.Module, record: dict[str, Any]) -> None:
        if self.path is not None:
            checkpoint.save(ema, self.path, extra={"run": record})

    def load_best(self, model: nn.Module) -> bool:
        """Load the best weights saved in the directory into `model`; False when there are none."""
        if self.path is None or not (self.path / checkpoint.WEIGHTS_FILE).is_file():
            return False
        checkpoint.load_state(model, self.path / checkpoint.WEIGHTS_FILE)
        return True

    def sample_path(self, global_step: int) -> Path | None:
        return None if self.path is None else self.path / "samples" / f"step_{global_step:06d}.png"

    def log(self, row: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:
            raise GenzooError(f"cannot write {str(self.path / 'metrics.jsonl')!r}: {e.strerror or e}.") from e

    def truncate_log(self, last_step: int) -> None:
        """On resume, drop metric lines written after the saved state (they will be written again)."""
        if self.path is None or not (self.path / "metrics.jsonl").is_file():
            return
        kept = []
        for line in (self.path / "metrics.jsonl").read_text().splitlines():
            try:
                if checkpoint.parse_json(line, "a metrics line").get("global_step", 0) <= last_step:
                    kept.append(line)
            except (GenzooError, AttributeError, TypeError):  # not a row genzoo wrote: dropped
                continue
        checkpoint.atomic_write_bytes(self.path / "metrics.jsonl", ("\n".join(kept) + "\n" if kept else "").encode())
