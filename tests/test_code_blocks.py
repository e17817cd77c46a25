"""Every code block of the README and the documentation site stays true: each Python block runs, and
each genzoo command of a shell block runs, in order, one fresh folder per page (with tiny settings
where the text shows the full ones: a step count becomes 3); every genzoo command names a command
that exists and only flags that command (for `train`, that model) takes, checked against genzoo's
own parsers; a shell line that is not run names why (SKIPPED). The site's generated reference lists
every public function and every option of every built-in model."""
from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
import types
from functools import lru_cache
from pathlib import Path

import pytest

import genzoo
from genzoo.cli import COMMANDS, EXTRA_COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"```(\w*)\n(.*?)```", re.S)


def blocks(lang: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for i, (kind, body) in enumerate(BLOCK.findall(page.read_text())):
            if kind == lang:
                found.append((f"{page.relative_to(ROOT)}#{i}", body))
    return found


def tiny(code: str) -> str:
    """The block with every step count at 3 (training for 500 steps is the text's, not the test's)."""
    return re.sub(r"\bsteps=\d+", "steps=3", code)


@pytest.mark.parametrize("where,code", blocks("python"), ids=[w for w, _ in blocks("python")])
def test_every_python_block_runs(where, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what a block writes (checkpoints, runs) lands here
    module = types.ModuleType(f"genzoo_docs_block_{len(where)}_{abs(hash(where))}")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look their module up
    before = set(genzoo.list_models())
    try:
        exec(compile(tiny(code), where, "exec"), module.__dict__)
    finally:
        for name in set(genzoo.list_models()) - before:  # a plugin block's model leaves with the test
            genzoo.registry.unregister(name)


@lru_cache(maxsize=None)
def help_of(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            main([*argv, "--help"])
        except SystemExit:
            pass
    return out.getvalue()


def genzoo_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `genzoo`) of every genzoo command in a shell block, continuation lines joined."""
    found = []
    for where, body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue
            for i, word in enumerate(words):
                if word == "genzoo" and (i == 0 or words[i - 1] in ("-m", "&&")):
                    found.append((where, words[i + 1:]))
                    break
    return found


@pytest.mark.parametrize("where,argv", genzoo_commands(), ids=[f"{w}:{' '.join(a)[:40]}" for w, a in genzoo_commands()])
def test_every_genzoo_command_in_the_docs_uses_flags_its_parser_knows(where, argv):
    if not argv or argv[0].startswith("-"):
        return  # `genzoo --version` and the like
    command = argv[0]
    assert command in COMMANDS or command in EXTRA_COMMANDS, f"{where}: no command {command!r}"
    model = argv[1] if command == "train" and len(argv) > 1 and not argv[1].startswith("-") else None
    text = help_of(command, model) if model and model in genzoo.list_models() else help_of(command)
    if command == "train" and model is None:  # the model comes from --config, --init-from or the run: any model's
        text += help_of("train", "pixelcnn")  # training options are every model's
    for word in argv[1:]:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert re.search(rf"(^|[\s\[,(]){re.escape(flag)}\b", text), f"{where}: {command} has no flag {flag}"


def test_the_reference_lists_every_public_function_and_every_models_options():
    api = (ROOT / "docs" / "api.md").read_text()
    for name in genzoo.__all__:
        if callable(getattr(genzoo, name)) and not isinstance(getattr(genzoo, name), type):
            assert f"::: genzoo.{name}" in api, f"the API reference lacks genzoo.{name}"
    pages = "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    sys.path.insert(0, str(ROOT))
    import mkdocs_hooks  # the site's generator of the options tables

    built_in = [n for n in genzoo.list_models() if genzoo.registry.model_class(n).__module__.startswith("genzoo.")]
    for name in built_in:  # (a plugin another test registered is not the site's to document)
        assert f"<!-- options {name} -->" in pages, f"no page shows the options of {name}"
        table = mkdocs_hooks.options_table(name)
        import dataclasses

        for field in dataclasses.fields(genzoo.registry.model_class(name).Config):
            assert f"`--{field.name.replace('_', '-')}`" in table


# -- shell blocks, run in order as a reader would, in one folder, with tiny settings --------------

SKIPPED = {  # what a shell line does that the tests do not repeat, and why
    "pip install": "installs the project: CI's own first step",
    "python3 -m pytest": "the test suite itself",
    "torchrun": "several processes or GPUs (tests/test_distributed.py covers torchrun on the CPU)",
    "mkdocs": "the site: CI builds it in strict mode after the tests",
    "benchmarks/": "a benchmark: minutes to hours, measured by hand (the README gives each figure's command)",
    "genzoo explore": "a server that runs until stopped (tests/test_explore.py drives it)",
    "independent-pixels": "the README's plugin, installed as a package (tests/test_plugins.py installs and runs it)",
    "runs/indep": "a run of that plugin",
    "--root DIR": "needs the IDX files of MNIST, which the tests do not have",
    "--runs DIR": "names a folder of the reader's",
}


def tiny_argv(argv: list[str]) -> list[str]:
    """The command with tiny settings: 3 training steps, 2 Gibbs sweeps, and compare over two small
    models at a budget of 2 steps (3 with --budgets) with 8 samples."""
    out = list(argv)
    for flag, value in (("--steps", "3"), ("--sweeps", "2"), ("--seconds", "3"), ("--n", "8")):
        if flag in out:
            out[out.index(flag) + 1] = value
    if out[0] == "train" and "--steps" not in out and "--resume" not in out:
        out += ["--steps", "3"]
    if out[0] == "train":
        out += ["--grid-size", "8", "--no-progress"]
    if out[0] == "compare" and "--runs" not in out:
        if "--budgets" in out:
            out[out.index("--budgets") + 1] = "2,3"
            out[out.index("--budget") + 1 if "--budget" in out else len(out):] = [] if "--budget" in out else []
            out += ["--budget", "steps"] if "--budget" not in out else []
        elif "--budget" not in out:
            out += ["--budget", "steps", "--steps", "2"]
        if "--models" in out:
            out[out.index("--models") + 1] = ",".join(out[out.index("--models") + 1].split(",")[:2])
        else:
            out += ["--models", "pixelcnn,vae"]
        out += ["--samples", "8"]
    if out[0] == "compare":
        out += ["--no-progress"]
    return out


def shell_lines() -> list[tuple[str, str]]:
    lines = []
    for where, body in blocks("bash"):
        for line in body.replace("\\\n", " ").split("\n"):
            for part in line.split("&&"):
                if part.strip() and not part.strip().startswith("#"):
                    lines.append((where, part.strip()))
    return lines


def test_every_shell_block_runs_in_order_with_tiny_settings(tmp_path, monkeypatch, capsys):
    from PIL import Image

    ran, skipped = [], []
    for where, line in shell_lines():
        folder = tmp_path / where.split("#")[0].replace("/", "_")  # each page read from a fresh folder
        if not folder.exists():
            folder.mkdir()
            Image.new("L", (32, 32), 0).save(folder / "my_digit.png")  # the README's "my own digit"
        monkeypatch.chdir(folder)
        reason = next((why for key, why in SKIPPED.items() if key in line), None)
        words = shlex.split(line, comments=True)
        if reason is None and "genzoo" not in words:
            reason = "not a genzoo command"
        if reason:
            skipped.append((where, line, reason))
            continue
        argv = tiny_argv(words[words.index("genzoo") + 1:])
        if not argv or argv[0] in ("--version", "list"):
            argv = argv or ["--version"]
        code = main(argv)
        assert code == 0, f"{where}: `{' '.join(argv)}` exited {code}: {capsys.readouterr().err[-500:]}"
        ran.append(line)
    assert len(ran) >= 15 and all(reason for *_, reason in skipped)
