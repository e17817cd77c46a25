"""`genzoo compare` as curves: the paired differences against mathematics (identical models differ by
exactly zero with zero error; on correlated per-image figures the paired error is far below the
independent one; seeds add their spread), and end to end: a curve over two budgets and two seeds
whose one-budget, one-seed point equals today's single table row for row, seeds that change the
weights while the same seed reproduces them, and a report with every curve, offline."""
from __future__ import annotations

import json
import math

import pytest
import torch

from genzoo.cli import main
from genzoo.curves import combined, paired_difference, pairs, rankings


def test_identical_models_differ_by_exactly_zero_with_zero_error():
    bits = torch.rand(500, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1
    assert paired_difference(bits, bits.clone()) == (0.0, 0.0)


def test_the_paired_error_is_far_below_the_independent_one_on_correlated_figures():
    g = torch.Generator().manual_seed(1)
    hardness = 0.5 * torch.randn(2000, generator=g, dtype=torch.float64)  # a hard image is hard for both
    a = 1.80 + hardness + 0.02 * torch.randn(2000, generator=g, dtype=torch.float64)
    b = 1.81 + hardness + 0.02 * torch.randn(2000, generator=g, dtype=torch.float64)
    difference, se = paired_difference(a, b)
    independent = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert se < independent / 10 and abs(difference - 0.01) < 3 * se
    assert difference > 2 * se  # resolved by pairing, where the independent errors (0.016) would hide it


def test_seeds_add_their_spread_to_the_error():
    mean, se, spread = combined([0.10], [0.01])
    assert (mean, se, spread) == (0.10, 0.01, None)
    mean, se, spread = combined([0.10, 0.14], [0.01, 0.01])
    assert math.isclose(mean, 0.12) and math.isclose(spread, math.sqrt(0.0008))
    assert math.isclose(se, math.sqrt(2 * 0.01 ** 2 / 4 + 0.0008 / 2))


def test_pairs_rank_at_each_budget_and_say_indistinguishable_within_twice_the_error():
    g = torch.Generator().manual_seed(2)
    base = torch.randn(400, generator=g, dtype=torch.float64)
    rows, per_image = [], {}
    for model, offset in (("p", 0.0), ("q", 0.2), ("r", 0.2005)):
        row = {"model": model, "budget": 1.0, "seed": 0, "bits_per_dim": 2 + offset}
        rows.append(row)
        per_image[id(row)] = 2 + offset + base + 0.05 * torch.randn(400, generator=g, dtype=torch.float64)
    assert rankings(rows) == {"1.0": ["p", "q", "r"]}
    found = pairs(rows, per_image)
    assert [(p["a"], p["b"]) for p in found] == [("p", "q"), ("q", "r")]
    assert found[0]["verdict"] == "p better than q" and found[1]["verdict"] == "indistinguishable"
    assert set(found[0]) >= {"a", "b", "budget", "difference", "difference_se", "verdict"}


SMALL = ["--models", "pixelcnn,vae", "--budget", "steps", "--samples", "20", "--likelihood", "full", "--no-progress"]


@pytest.fixture(scope="module")
def curve(tmp_path_factory):
    out = tmp_path_factory.mktemp("curve") / "report"
    assert main(["compare", *SMALL, "--budgets", "3,6", "--seeds", "2", "--out", str(out)]) == 0
    return out


def test_a_curve_point_equals_the_single_table_row_and_seeds_change_the_weights(curve, tmp_path, capsys):
    results = json.loads((curve / "results.json").read_text())
    rows = results["rows"]
    assert len(rows) == 8 and {(r["budget"], r["seed"]) for r in rows} == {(3.0, 0), (3.0, 1), (6.0, 0), (6.0, 1)}
    assert all(r["budget_unit"] == "steps" and r["train_flops"] > 0 for r in rows)
    capsys.readouterr()
    assert main(["compare", *SMALL, "--steps", "3", "--out", str(tmp_path / "one")]) == 0
    assert "compare plan: 2 models" in capsys.readouterr().out  # said before it starts
    single = {r["model"]: r for r in json.loads((tmp_path / "one" / "results.json").read_text())["rows"]}
    for name, row in single.items():
        point = next(r for r in rows if r["model"] == name and r["budget"] == 3.0 and r["seed"] == 0)
        assert point["bits_per_dim"] == row["bits_per_dim"] and point["train_steps"] == row["train_steps"] == 3
        other_seed = next(r for r in rows if r["model"] == name and r["budget"] == 3.0 and r["seed"] == 1)
        assert other_seed["bits_per_dim"] != row["bits_per_dim"]


def test_the_report_holds_every_curve_and_the_pairs(curve):
    results = json.loads((curve / "results.json").read_text())
    assert {p["budget"] for p in results["pairs"]} == {3.0, 6.0} and all(p["seeds"] == 2 for p in results["pairs"])
    assert all(p["verdict"] in (f"{p['a']} better than {p['b']}", "indistinguishable") for p in results["pairs"])
    assert set(results["rankings"]) == {"3.0", "6.0"}
    page = (curve / "report.html").read_text()
    assert 'alt="Quality against training FLOPs"' in page and 'alt="Quality against training seconds"' in page
    assert "Paired differences" in page and "http://" not in page and "https://" not in page
    assert "the best figure is" in (curve / "report.md").read_text()  # the summary in words, above the numbers


def test_budgets_are_checked_before_anything_trains(tmp_path, capsys):
    for flags, words in ((["--budgets", "3,x"], "--budgets takes numbers"), (["--budgets", "-1"], "must be positive"),
                         (["--budget", "default", "--budgets", "3"], "--budgets needs a unit"),
                         (["--seeds", "0"], "--seeds must be at least 1")):
        assert main(["compare", "--models", "pixelcnn", *flags, "--out", str(tmp_path / "c")]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
