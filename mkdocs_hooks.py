"""Build-time pieces of the documentation site (mkdocs.yml `hooks`), generated from the code so that
none of it can drift: the command line's reference from genzoo's own parsers (`<!-- cli -->`), a
model's options with their defaults from its config (`<!-- options MODEL -->`), the training options
(`<!-- training-options -->`), and a figure per family from a tiny run trained while the site builds
(`figures/NAME.png`). The site is built offline: nothing here touches the network.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from functools import lru_cache

import torch

# one tiny run per family, trained when the site builds (a few seconds each on one core)
FIGURES = {
    "pixelcnn": {"hidden_channels": 32, "num_blocks": 2, "first_kernel_size": 7, "output_hidden": 32},
    "vae": {"latent_dim": 8, "hidden_channels": 16, "num_blocks": 1},
    "glow": {"hidden_channels": 16, "num_blocks": 0, "steps_per_level": 2, "num_levels": 2},
    "ddpm": {"timesteps": 100, "base_channels": 16, "channel_mults": (1, 2), "attention_resolutions": (2,)},
    "flow-matching": {"base_channels": 16, "channel_mults": (1, 2), "attention_resolutions": (2,), "sample_steps": 10},
}
FIGURE_STEPS = 150


def help_text(argv: list[str]) -> str:
    """What `genzoo ARGV` prints (its --help), or the one sentence it refuses with."""
    from genzoo.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit:  # argparse's --help exits
            pass
    return (out.getvalue() or err.getvalue()).rstrip()


@lru_cache(maxsize=1)
def cli_reference() -> str:
    from genzoo.cli import COMMANDS, EXTRA_COMMANDS

    parts = ["```text", help_text(["--help"]), "```"]
    for command in [*COMMANDS, *EXTRA_COMMANDS]:
        parts += [f"### genzoo {command}", "", "```text", help_text([command, "--help"]), "```", ""]
    parts += ["### genzoo train MODEL --help (for example pixelcnn)", "", "```text",
              help_text(["train", "pixelcnn", "--help"]), "```"]
    return "\n".join(parts)


def fields_table(cls: type) -> str:
    from genzoo.configs import field_docs

    docs = field_docs(cls)
    rows = ["| option | default | what it is |", "| --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = "(required)"
        text = (docs.get(f.name) or "").replace("|", "\\|")
        rows.append(f"| `--{f.name.replace('_', '-')}` | `{default}` | {text} |")
    return "\n".join(rows)


def options_table(name: str) -> str:
    from genzoo import registry

    return fields_table(registry.model_class(name).Config)


def training_options() -> str:
    from genzoo.training import TrainConfig

    return fields_table(TrainConfig)


def on_page_markdown(markdown: str, page, config, files) -> str:
    markdown = markdown.replace("<!-- cli -->", cli_reference())
    markdown = markdown.replace("<!-- training-options -->", training_options())
    return re.sub(r"<!-- options (\S+) -->", lambda m: options_table(m.group(1)), markdown)


def figure(name: str) -> bytes:
    """16 samples of a tiny `name` trained for FIGURE_STEPS steps on the digits, as a PNG."""
    from PIL import Image

    import genzoo
    from genzoo.viz import _png_bytes, grid_array

    torch.manual_seed(0)
    train = genzoo.data.load("digits", "train")
    model = genzoo.create(name, train.spec, seed=0, **FIGURES[name])
    genzoo.train(model, train, None, steps=FIGURE_STEPS, batch_size=64, progress=False, grid_size=0, eval_every=10**6)
    x = model.eval().sample(16, generator=torch.Generator().manual_seed(0))
    array = grid_array(x, train.spec.levels, 8, scale=6)
    return _png_bytes(Image.fromarray(array[..., 0] if array.shape[2] == 1 else array))


def on_files(files, config):
    from mkdocs.structure.files import File

    torch.set_num_threads(1)
    for name in FIGURES:
        files.append(File.generated(config, f"figures/{name}.png", content=figure(name)))
    return files
