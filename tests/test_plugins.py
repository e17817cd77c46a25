"""Bring your own model: the README's plugin runs through the command line as written, and
registration refuses name clashes and classes that break the contract in one sentence."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import genzoo
from genzoo import GenzooError
from readme_plugin import NAME, install, plugin_class


def _genzoo(args, pythonpath, cwd):
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's genzoo, not an installed one
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(pythonpath), src]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "genzoo", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def test_the_readme_plugin_trains_samples_evaluates_and_compares_through_the_command_line(tmp_path):
    site = install(tmp_path / "site")
    run, cmp = tmp_path / "run", tmp_path / "cmp"
    listed = _genzoo(["list"], site, tmp_path)
    assert any(line.split()[:2] == [NAME, "likelihood"] for line in listed.splitlines())
    assert "standard deviation of the initial logits" in _genzoo(["train", NAME, "--help"], site, tmp_path)
    printed = _genzoo(["train", NAME, "--steps", "60", "--eval-every", "30", "--grid-size", "4", "--out", str(run),
                       "--no-progress"], site, tmp_path)
    assert "(exact; standard error over" in printed
    _genzoo(["sample", str(run), "--n", "5", "--temperature", "0.8", "--out", str(tmp_path / "g.png")], site, tmp_path)
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads(_genzoo(["eval", str(run), "--json"], site, tmp_path))
    # 60 steps of a per-pixel softmax: well below uniform (log2 17 = 4.09 bits/dim) on digits
    assert report["kind"] == "exact" and report["bits_per_dim"] < 3.9
    _genzoo(["compare", "--runs", str(run), "--out", str(cmp), "--samples", "20", "--no-progress"], site, tmp_path)
    rows = json.loads((cmp / "results.json").read_text())["rows"]
    assert rows[0]["model"] == NAME and rows[0]["bits_per_dim"] == pytest.approx(report["bits_per_dim"])


def test_the_readme_plugin_likelihood_is_a_distribution():
    spec = genzoo.DataSpec(1, 1, 2, 3)
    cls = plugin_class()
    model = cls(spec, cls.Config(init_scale=1.0)).double()
    images = torch.cartesian_prod(torch.arange(3), torch.arange(3)).view(9, 1, 1, 2)
    total = torch.logsumexp(model.log_likelihood(images).nats, 0)
    torch.testing.assert_close(total, torch.zeros((), dtype=torch.float64))


def test_a_name_that_is_taken_is_one_sentence():
    with pytest.raises(GenzooError, match="already registered"):
        genzoo.register("pixelcnn", plugin_class())


def _broken(**attrs):
    @dataclasses.dataclass(frozen=True)
    class Config:
        width: int = 1

    def __init__(self, spec, config):
        genzoo.GenerativeModel.__init__(self, spec, config)
        self.weight = torch.nn.Parameter(torch.zeros(1))

    namespace = {"Config": Config, "__init__": __init__, "loss": lambda self, x: x.sum(),
                 "sample": lambda self, n, generator=None: None, **attrs}
    namespace = {k: v for k, v in namespace.items() if v is not None}
    return type("Broken", (genzoo.GenerativeModel,), namespace)


@pytest.mark.parametrize("cls, words", [
    (_broken(loss=None), "does not define loss"),
    (_broken(sample=None), "does not define sample"),
    (_broken(Config=None), "config dataclass"),
    (_broken(Config=dataclasses.dataclass(type("C", (), {}))), "frozen"),
    (type("NotAModel", (), {}), "subclass of genzoo.GenerativeModel"),
    (type("NoLikelihood", (genzoo.LikelihoodModel,), dict(_broken().__dict__)), "does not define log_likelihood"),
    # the parameter names genzoo passes: loss(x=...), sample(n=..., generator=...)
    (_broken(loss=lambda self, images: images.sum()), "loss must take the argument 'x'"),
    (_broken(sample=lambda self, count, generator=None: None), "sample must take the argument 'n'"),
    (_broken(sample=lambda self, n: None), "sample must take the argument 'generator'"),
    # one way to say a model has a likelihood
    (_broken(has_likelihood=True), "sets has_likelihood by hand"),
    (_broken(log_likelihood=lambda self, x: None), "defines log_likelihood but subclasses genzoo.GenerativeModel"),
    # a config field without a default, a class conditioned on classes whose hooks take no labels
    (_broken(Config=dataclasses.make_dataclass("C", [("width", int)], frozen=True)), "'width' of its Config C has no default"),
    (_broken(Config=dataclasses.make_dataclass("C", [("num_classes", int, 0)], frozen=True)),
     "loss must take the argument 'labels'"),
    # a model without parameters has nothing to train
    (_broken(__init__=lambda self, spec, config: genzoo.GenerativeModel.__init__(self, spec, config)), "no parameters"),
])
def test_a_class_that_breaks_the_contract_is_one_sentence(cls, words):
    with pytest.raises(GenzooError, match=words) as info:
        genzoo.register("broken-model", cls)
    assert "\n" not in str(info.value)
    assert "broken-model" not in genzoo.list_models()


def test_a_registered_model_is_created_saved_and_loaded_by_name(tmp_path):
    genzoo.register(NAME, plugin_class())  # registering the same class again is harmless
    model = genzoo.create(NAME, genzoo.DataSpec(1, 4, 4, 5), init_scale=0.5)
    genzoo.save(model, tmp_path)
    loaded = genzoo.load(tmp_path)
    assert type(loaded) is plugin_class() and torch.equal(loaded.logits, model.logits)


def test_every_built_in_model_keeps_the_contract_that_registration_checks():
    from genzoo.models.contract import check_model_class

    for name in genzoo.list_models():
        check_model_class(name, genzoo.registry.model_class(name))


def test_every_config_field_and_training_option_has_help_text_and_string_options_list_their_choices():
    from genzoo.configs import field_docs
    from genzoo.training import TrainConfig

    built_in = [n for n in genzoo.list_models() if n in genzoo.registry._MODELS]
    for cls in [genzoo.registry.model_class(n).Config for n in built_in] + [TrainConfig]:
        undocumented = [name for name, doc in field_docs(cls).items() if not doc]
        assert not undocumented, f"{cls.__name__}: {undocumented}"
    from genzoo.train_command import train_parser

    text = " ".join(train_parser(genzoo.registry.model_class("ddpm"))[0].format_help().split())
    assert "one of eps, levels" in text and "one of fp32, bf16, fp16, auto" in text and "diffusion steps T" in text
    with pytest.raises(GenzooError, match="ddpm': schedule must be one of linear, cosine, got 'quadratic'"):
        genzoo.create("ddpm", genzoo.DataSpec(1, 8, 8, 17), schedule="quadratic")
    with pytest.raises(GenzooError, match="schedule must be one of linear, cosine, got 'quadratic'"):
        genzoo.registry.model_class("ddpm").Config(schedule="quadratic")  # built directly, the same check
