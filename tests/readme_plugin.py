"""The README's plugin example, read from the README itself so the tests run it as written."""
from __future__ import annotations

import re
import sys
import types
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
NAME = "independent-pixels"


def block(marker: str) -> str:
    """The fenced code block that follows `<!-- plugin: MARKER -->` in the README."""
    text = README.read_text()
    found = re.search(r"<!-- plugin: " + re.escape(marker) + r" -->\n```\w*\n(.*?)```", text, re.S)
    assert found, f"the README has no plugin block {marker!r}"
    return found.group(1)


def entry_points_txt() -> str:
    """The README's `[project.entry-points."genzoo.models"]` table as an installed entry_points.txt."""
    lines = block("entry points").strip().splitlines()
    assert lines[0] == '[project.entry-points."genzoo.models"]'
    return "[genzoo.models]\n" + "\n".join(line.replace('"', "") for line in lines[1:]) + "\n"


def install(directory: Path) -> Path:
    """Lay the plugin out in `directory` as pip would install it (module and dist-info), for PYTHONPATH."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "genzoo_indep.py").write_text(block("genzoo_indep.py"))
    info = directory / "genzoo_indep-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: genzoo-indep\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points_txt())
    return directory


def plugin_class() -> type:
    """The README's model class, imported in this process."""
    if "genzoo_indep" not in sys.modules:
        module = types.ModuleType("genzoo_indep")
        sys.modules["genzoo_indep"] = module  # dataclasses look their module up while the code runs
        exec(compile(block("genzoo_indep.py"), str(README), "exec"), module.__dict__)
    return sys.modules["genzoo_indep"].IndependentPixels
