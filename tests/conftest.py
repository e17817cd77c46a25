import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the tests' own helpers (tiny.py)

# Test models are tiny: one thread is as fast as two, and it does not oversubscribe a busy machine.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _away_from_the_checkout(tmp_path_factory, monkeypatch):
    """Every test runs in a fresh directory: nothing a test writes by default (runs/...) lands in the
    user's checkout, and a run left there by `genzoo train` cannot change a test's outcome."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
