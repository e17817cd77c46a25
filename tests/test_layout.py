"""The package's imports point one way (docs/models.md, "Layout"), with no circle between modules.
(The 400-line budget per source file is checked by .ci/check_sizes.py.)"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "genzoo"
ABOVE_MODELS = {"registry", "evaluate", "viz", "checkpoint", "train", "rundir", "compare", "flags", "cli", "diffuse",
                "curves", "explore", "explore_core",
                "quality", "classifier", "report", "report_html", "budget"}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool = False) -> set[str]:
    """The genzoo modules that `path` imports (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", [p for p in SOURCES if p.parts[-2] in ("models", "nn", "data")
                                  or "models" in p.relative_to(PACKAGE).parts[:1]],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_models_blocks_and_data_never_import_the_layers_above_them(path):
    rel = path.relative_to(PACKAGE).parts
    bad = {m for m in imports(path) if m.split(".")[1] in ABOVE_MODELS}
    if rel[0] in ("nn", "data"):
        bad |= {m for m in imports(path) if m.split(".")[1] == "models"}
    assert not bad, f"{'/'.join(rel)} imports {sorted(bad)}"


def test_no_two_modules_import_each_other_in_a_circle():
    graph = {module_name(p): imports(p, top_level_only=True) for p in SOURCES}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1 and not node.startswith(nxt + "."):  # a package's own modules may import it
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(nxt):] + [node, nxt]))
            if state.get(nxt) is None:
                visit(nxt, stack + [node])
        state[node] = 2

    for node in graph:
        if state.get(node) is None:
            visit(node, [])

