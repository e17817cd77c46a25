"""The packaged 8x8 digits: split sizes, levels, disjoint and deterministic splits."""
import torch

import genzoo


def load_splits():
    return {s: genzoo.data.load("digits", split=s) for s in ("train", "val", "test")}


def test_digits_split_sizes_spec_and_levels():
    data = load_splits()
    assert {s: len(d) for s, d in data.items()} == {"train": 1297, "val": 200, "test": 300}
    for d in data.values():
        assert d.spec == genzoo.data.DataSpec(1, 8, 8, 17) and d.x.dtype == torch.int64
        assert int(d.x.min()) == 0 and int(d.x.max()) == 16
        assert set(d.labels.tolist()) == set(range(10))


def test_digits_splits_are_disjoint_and_deterministic():
    # The 1,797 digits are pairwise distinct images, so disjoint rows means disjoint images.
    data = load_splits()
    rows = {s: {bytes(r.to(torch.uint8).numpy()) for r in d.x.flatten(1)} for s, d in data.items()}
    assert len(rows["train"] | rows["val"] | rows["test"]) == 1797
    again = load_splits()
    assert all(torch.equal(data[s].x, again[s].x) and torch.equal(data[s].labels, again[s].labels) for s in data)


def test_digits_is_a_built_in_name():
    assert "digits" in genzoo.data.names()
