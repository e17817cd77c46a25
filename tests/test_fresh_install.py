"""The package as a new user gets it: built and installed (not in editable mode) into a fresh
virtual environment with the README's constraints, nothing else, then `genzoo compare` on one tiny
model and `genzoo report` on its run, each of which needs every dependency it draws with."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
    return proc


def test_a_fresh_environment_installs_the_package_and_runs_compare_and_report(tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    source = tmp_path / "source"  # the project's files alone: the build writes there, not into this checkout
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "constraints.txt"):
        shutil.copy(ROOT / name, source / name)
    _run([python, "-m", "pip", "install", "-q", "-c", str(source / "constraints.txt"), str(source)])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"OMP_NUM_THREADS": "1", "GENZOO_CACHE": str(tmp_path / "cache")})
    work = tmp_path / "work"
    work.mkdir()
    out = _run([python, "-m", "genzoo", "compare", "--models", "pixelcnn", "--budget", "default", "--steps", "20",
                "--samples", "20", "--no-progress", "--out", "cmp"], cwd=work, env=env).stdout
    assert "| pixelcnn |" in out and (work / "cmp" / "report.html").is_file()
    _run([python, "-m", "genzoo", "report", "cmp/pixelcnn", "--out", "card"], cwd=work, env=env)
    html = (work / "card" / "report.html").read_text()
    assert "data:image/png;base64," in html  # the plots drawn with matplotlib, inline
    # the installed package is the one that ran, not this checkout's sources
    where = _run([python, "-c", "import genzoo; print(genzoo.__file__)"], cwd=work, env=env).stdout
    assert str(venv) in where
