"""Checkpoints: exact round trip, atomic writes, and nothing ever unpickled."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

import genzoo
from genzoo import checkpoint
from genzoo.data.spec import DataSpec

SPEC = DataSpec(1, 4, 4, 5)


def tiny():
    m = genzoo.create("pixelcnn", SPEC, hidden_channels=8, num_blocks=1, first_kernel_size=3, output_hidden=8)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


def test_save_writes_a_self_describing_directory_and_load_rebuilds_it(tmp_path):
    m = tiny()
    genzoo.save(m, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["model"] == "pixelcnn" and meta["spec"] == SPEC.to_dict()
    assert meta["config"]["hidden_channels"] == 8 and meta["genzoo_version"] == genzoo.__version__
    loaded = genzoo.load(tmp_path)
    assert not loaded.training and m.training
    x = torch.randint(0, 5, (3, 1, 4, 4))
    m.eval()
    assert torch.equal(m.log_likelihood(x).nats, loaded.log_likelihood(x).nats)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_pickled_weights_file_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    genzoo.save(tiny(), tmp_path / "ckpt")
    with open(tmp_path / "ckpt" / "model.safetensors", "wb") as f:
        pickle.dump({"weight": _Boom()}, f)
    with pytest.raises(genzoo.GenzooError, match="pickle"):
        genzoo.load(tmp_path / "ckpt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "ckpt" / "model.safetensors")
    with pytest.raises(genzoo.GenzooError, match="pickle"):
        genzoo.load(tmp_path / "ckpt")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing"])
def test_damaged_weights_are_one_sentence_naming_the_file(tmp_path, damage):
    genzoo.save(tiny(), tmp_path)
    w = tmp_path / "model.safetensors"
    data = w.read_bytes()
    if damage == "truncate":
        w.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        w.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + data[24:])
    elif damage == "empty":
        w.write_bytes(b"")
    else:
        w.unlink()
    with pytest.raises(genzoo.GenzooError, match="model.safetensors"):
        genzoo.load(tmp_path)


def test_bad_config_json_and_mismatched_weights_are_refused(tmp_path):
    genzoo.save(tiny(), tmp_path)
    cfg = tmp_path / "config.json"
    good = cfg.read_text()
    cfg.write_text(good[:40])
    with pytest.raises(genzoo.GenzooError, match="not valid JSON"):
        genzoo.load(tmp_path)
    meta = json.loads(good)
    meta["config"]["hidden_channels"] = 16
    cfg.write_text(json.dumps(meta))
    with pytest.raises(genzoo.GenzooError, match="do not fit"):
        genzoo.load(tmp_path)
    meta["model"] = "no-such-model"
    cfg.write_text(json.dumps(meta))
    with pytest.raises(genzoo.GenzooError, match="unknown model"):
        genzoo.load(tmp_path)
    with pytest.raises(genzoo.GenzooError, match="does not exist"):
        genzoo.load(tmp_path / "nowhere")


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.json"
    checkpoint.atomic_write_json(path, {"a": 1})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        checkpoint.atomic_write_json(path, {"a": Unserialisable()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"], "no temporary file is left behind"


def test_a_run_saved_before_a_config_gained_fields_loads_with_their_defaults(tmp_path):
    import json

    import genzoo
    from genzoo import GenzooError

    model = genzoo.create("ddpm", genzoo.DataSpec(1, 8, 8, 17), timesteps=20, base_channels=8,
                          attention_resolutions=(2,))
    genzoo.save(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    for name in ("num_classes", "label_dropout"):  # what a ddpm run saved before classes came has not
        del meta["config"][name]
    (tmp_path / "config.json").write_text(json.dumps(meta))
    assert genzoo.load(tmp_path).config.num_classes == 0
    del meta["config"]["timesteps"]  # a field every ddpm run records is still required
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(GenzooError, match="lacks the field 'timesteps'"):
        genzoo.load(tmp_path)
