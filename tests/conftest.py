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


@pytest.fixture(autouse=True, scope="session")
def _classifier_cache(tmp_path_factory):
    """Sample-quality classifiers go to a temporary cache, trained with a short recipe (also in the
    command-line subprocesses, which inherit the environment)."""
    import os

    saved = {k: os.environ.get(k) for k in ("GENZOO_CACHE", "GENZOO_CLASSIFIER_STEPS")}
    os.environ["GENZOO_CACHE"] = str(tmp_path_factory.mktemp("genzoo-cache"))
    os.environ["GENZOO_CLASSIFIER_STEPS"] = "150"
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
