"""The trainer: exact resume, best-validation selection, a clear stop on a non-finite loss."""
from __future__ import annotations

import json

import pytest
import torch

import genzoo
from genzoo.data.spec import Dataset, DataSpec
from genzoo.optim import lr_at
from genzoo.rundir import RunDirectory
from genzoo.training import TrainConfig, train

SPEC = DataSpec(1, 4, 4, 5)
TINY = dict(hidden_channels=8, num_blocks=1, first_kernel_size=3, output_hidden=8, dropout=0.2)


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    # each image one level throughout: every pixel after the first is predictable
    x = torch.randint(0, 5, (n, 1, 1, 1), generator=g).expand(n, *SPEC.shape).clone()
    return Dataset(x, SPEC, name="toy")


def cfg(**kw):
    base = dict(steps=12, batch_size=16, lr=3e-3, warmup_steps=3, eval_every=4, sample_every=0, seed=7, ema_decay=0.9)
    return TrainConfig(**{**base, **kw})


def test_resume_continues_exactly_where_a_run_stopped(tmp_path):
    torch.manual_seed(0)
    straight = genzoo.create("pixelcnn", SPEC, **TINY)
    train(straight, data(), data(32, 1), cfg(), out=tmp_path / "a", progress=False)

    torch.manual_seed(0)
    first = genzoo.create("pixelcnn", SPEC, **TINY)
    train(first, data(), data(32, 1), cfg(), out=tmp_path / "b", progress=False, stop_after=9)
    state = json.loads((tmp_path / "b" / "last" / "state.json").read_text())
    assert state["step"] == 8, "the state saved is the last evaluation's"
    resumed = RunDirectory(tmp_path / "b").load_model()[0].train()
    train(resumed, data(), data(32, 1), cfg(), out=tmp_path / "b", progress=False, resume=True)

    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    a = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


def test_the_run_directory_holds_the_best_validation_weights(tmp_path):
    model = genzoo.create("pixelcnn", SPEC, **TINY)
    val = data(32, 1)
    result = train(model, data(), val, cfg(steps=16), out=tmp_path, progress=False, record={"data": "toy"})
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_bpd" in r]
    best = min(evals, key=lambda r: r["val_bpd"])
    assert result.best_step == best["global_step"] and result.best_value == pytest.approx(best["val_bpd"])
    loaded = genzoo.load(tmp_path)
    assert genzoo.bits_per_dim(loaded, val.x).value == pytest.approx(best["val_bpd"], rel=1e-6)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["run"]["data"] == "toy" and meta["run"]["best_step"] == best["global_step"]


def test_a_non_finite_loss_stops_training_with_one_sentence(tmp_path):
    model = genzoo.create("pixelcnn", SPEC, **TINY)
    with torch.no_grad():
        model.out.bias.fill_(float("nan"))
    with pytest.raises(genzoo.GenzooError, match="step 1: the loss became nan"):
        train(model, data(), None, cfg(), out=tmp_path, progress=False)


def test_learning_rate_warms_up_then_decays_by_cosine():
    c = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, c) == pytest.approx(0.1) and lr_at(9, c) == pytest.approx(1.0)
    assert lr_at(10, c) == pytest.approx(1.0) and lr_at(55, c) == pytest.approx(0.55)
    assert lr_at(100, c) == pytest.approx(0.1)


def test_training_lowers_the_validation_bits_per_dim():
    model = genzoo.create("pixelcnn", SPEC, **TINY)
    val = data(32, 1)
    before = genzoo.bits_per_dim(model.eval(), val.x).value
    result = train(model.train(), data(), val, cfg(steps=40, eval_every=10, lr=1e-2, ema_decay=0.5), progress=False)
    assert result.best_value < before - 0.2


def test_bad_training_options_are_one_sentence():
    with pytest.raises(genzoo.GenzooError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(genzoo.GenzooError, match="ema_decay"):
        TrainConfig(ema_decay=1.5)


def test_training_images_stay_uint8_on_the_cpu_and_batches_arrive_as_int64(tmp_path):
    from genzoo.training_loop import Loop

    model = genzoo.create("pixelcnn", SPEC, **TINY)
    d = data()
    loop = Loop(model, cfg(), RunDirectory(None), torch.device("cpu"), d, d, {}, False, None,
                 torch.Generator().manual_seed(3))
    assert loop.x_train.dtype == torch.uint8 and loop.x_train.device.type == "cpu"
    batch = loop.batch()
    idx = torch.randint(0, len(d.x), (16,), generator=torch.Generator().manual_seed(3))
    assert batch["x"].dtype == torch.int64 and torch.equal(batch["x"], d.x[idx])


def test_genzoo_train_from_python_takes_options_by_keyword_and_repeats_safely(tmp_path):
    """The notebook path: genzoo.train with keyword options, its run directory, and resume=True that
    starts, then on a finished run returns at once with the same best value."""
    d = genzoo.data.load("digits", "train")
    val = genzoo.data.load("digits", "val")
    model = genzoo.create("pixelcnn", d.spec, seed=0, hidden_channels=8, num_blocks=1, first_kernel_size=3,
                          output_hidden=8)
    first = genzoo.train(model, d, val, steps=6, eval_every=3, batch_size=16, grid_size=0, seed=2,
                         out=tmp_path / "run", resume=True, progress=False)
    assert first.out == tmp_path / "run" and first.steps == 6 and not first.already_finished
    assert genzoo.load(tmp_path / "run").config == model.config
    again = genzoo.train(model, d, val, steps=6, eval_every=3, batch_size=16, grid_size=0, seed=2,
                         out=tmp_path / "run", resume=True, progress=False)
    assert again.already_finished and again.steps == 0 and again.best_value == first.best_value
    with pytest.raises(genzoo.GenzooError, match="either as config= or as keywords"):
        genzoo.train(model, d, val, TrainConfig(), steps=3)
    with pytest.raises(genzoo.GenzooError, match="must be a genzoo.Dataset"):
        genzoo.train(model, d.x, val)
