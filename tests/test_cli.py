"""The command line end to end on digits, and one-sentence errors for what users get wrong."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from genzoo.cli import main

SMALL = ["--hidden-channels", "16", "--num-blocks", "1", "--output-hidden", "16", "--first-kernel-size", "3",
         "--steps", "6", "--eval-every", "3", "--sample-every", "3", "--grid-size", "4", "--batch-size", "16",
         "--no-progress"]


def test_train_eval_sample_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "pixelcnn", "--data", "digits", "--out", str(out), *SMALL]) == 0
    printed = capsys.readouterr().out
    assert "test bits/dim:" in printed and "(exact; standard error over 300 images)" in printed
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "samples.png", "summary.json", "last/state.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "exact" and 0 < summary["test_bpd"] < 6 and 0 < summary["test_bpd_se"] < 0.5

    assert main(["eval", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["data"] == "digits" and report["split"] == "test" and report["images"] == 300
    assert report["bits_per_dim"] == pytest.approx(summary["test_bpd"])

    assert main(["sample", str(out), "--n", "5", "--temperature", "0.7", "--out", str(tmp_path / "g.png")]) == 0
    from PIL import Image
    assert Image.open(tmp_path / "g.png").size[0] > 8

    assert main(["train", "pixelcnn", "--out", str(out), *SMALL]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "pixelcnn", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "has finished all" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["train", "nosuchmodel"], "unknown model"),
    (["train", "pixelcnn", "--data", "nosuchdata"], "unknown dataset"),
    (["train", "pixelcnn", "--steps", "ten"], "expected an integer"),
    (["train", "pixelcnn", "--dropout", "2"], "dropout"),
    (["train", "pixelcnn", "--hidden-size", "3"], "unknown option --hidden-size"),
    (["train", "pixelcnn", "--data", "mnist", "--root", "/no/such/dir"], "/no/such/dir"),
    (["eval", "/no/such/run"], "does not exist"),
    (["sample", "/no/such/run"], "does not exist"),
    (["frobnicate"], "unknown command"),
    (["train", "pixelcnn", "--seed", "-1"], "seed must be an integer from 0"),
    (["train", "pixelcnn", "--seed", str(2**63)], "seed must be an integer from 0"),
    (["train", "pixelcnn", "--device", "meta"], "not on 'meta'"),
    (["train", "pixelcnn", "--hidden-channels", "1000000000"], "at most 100,000"),
    (["train", "--config", "/no/such/run.json"], "does not exist"),
])
def test_user_mistakes_are_one_sentence_and_a_nonzero_exit(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genzoo: error:") and words in err and "\n" not in err


def test_a_corrupt_run_directory_is_one_sentence(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "pixelcnn", "--out", str(out), *SMALL]) == 0
    (out / "model.safetensors").write_bytes(b"\x00" * 5)
    assert main(["eval", str(out)]) == 2
    assert "model.safetensors" in capsys.readouterr().err
    assert main(["sample", str(out), "--bogus-option", "1"]) == 2


def test_the_installed_command_never_prints_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "genzoo", "eval", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "does not exist" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "genzoo", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "pixelcnn" in proc.stdout and "digits" in proc.stdout


def test_compare_reports_runs_beside_the_baselines(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "pixelcnn", "--out", str(run), *SMALL]) == 0
    capsys.readouterr()
    assert main(["compare", "--runs", str(run), "--out", str(tmp_path / "cmp"), "--samples", "20",
                 "--no-progress"]) == 0
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert results["protocol"]["data"] == "digits" and results["rows"][0]["kind"] == "exact"
    assert {b["model"] for b in results["baselines"]} == {"uniform", "independent pixels"}
    report = (tmp_path / "cmp" / "report.md").read_text()
    # two steps of training draw noise, and the row says so
    assert "| pixelcnn (samples near noise) |" in report and "| uniform | 4.0875 +- 0.0000 |" in report
    assert main(["compare", "--models", "pixelcnn,nosuch"]) == 2


def test_bits_per_dim_carry_their_standard_error_over_images():
    import math

    import torch

    from genzoo.evaluate import bits_per_dim_se, to_bits_per_dim
    nats = torch.tensor([-10.0, -12.0, -14.0, -16.0], dtype=torch.float64)
    dims = 4
    per_image = -nats / (dims * math.log(2))
    assert to_bits_per_dim(nats, dims) == pytest.approx(float(per_image.mean()))
    assert bits_per_dim_se(nats, dims) == pytest.approx(float(per_image.std()) / 2)
    assert math.isnan(bits_per_dim_se(nats[:1], dims))


def test_inpaint_completes_test_digits_and_refuses_models_that_cannot(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "pixelcnn", "--out", str(out), *SMALL]) == 0
    capsys.readouterr()
    assert main(["inpaint", str(out), "--mask", "bottom", "--from-test", "3", "--out", str(tmp_path / "a.png")]) == 0
    printed = capsys.readouterr().out
    assert "by exact conditional" in printed and "bits/dim of the true unknown sub-pixels given the known ones" in printed
    assert main(["inpaint", str(out), "--mask", "center", "--sweeps", "2", "--from-test", "2",
                 "--out", str(tmp_path / "b.png")]) == 0
    assert "by gibbs (2 sweeps)" in capsys.readouterr().out and (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["inpaint", str(out), "--mask", "diagonal"]) == 2
    assert "unknown mask 'diagonal'" in capsys.readouterr().err
    ae = tmp_path / "ae"
    assert main(["train", "ae", "--steps", "2", "--eval-every", "2", "--grid-size", "0", "--no-progress",
                 "--out", str(ae)]) == 0
    capsys.readouterr()
    assert main(["inpaint", str(ae)]) == 2
    assert "does not inpaint; the models that do: pixelcnn, gated-pixelcnn, pixelcnn++, vae, ddpm, sohl-dickstein" in (
        capsys.readouterr().err)


def test_edit_takes_test_digits_to_a_noise_level_and_back(tmp_path, capsys):
    run = tmp_path / "ddpm"
    assert main(["train", "ddpm", "--timesteps", "20", "--base-channels", "8", "--attention-resolutions", "2",
                 "--steps", "2", "--eval-every", "2", "--grid-size", "0", "--no-progress", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["edit", str(run), "--strength", "0.4", "--from-test", "3", "--out", str(tmp_path / "e.png")]) == 0
    printed = capsys.readouterr().out
    assert "by sdedit ancestral from t = 8, 9 network evaluations" in printed
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["edit", str(run), "--strength", "-0.1"]) == 2
    assert "strength must be a number from 0 to 1" in capsys.readouterr().err


def test_a_missing_dependency_is_one_sentence_when_the_command_starts_not_after_training(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert main(["compare", "--models", "pixelcnn", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert "genzoo compare needs matplotlib" in err and "pip install -c constraints.txt -e ." in err
    assert not (tmp_path / "c").exists()  # nothing was trained
