"""MNIST / Fashion-MNIST IDX reader: tiny files written here, corrupt ones, and the real mnist-8k."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import genzoo
from genzoo.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from genzoo.errors import GenzooError

MNIST_8K = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist-8k"


def idx_bytes(array: np.ndarray) -> bytes:
    header = (0x800 | array.ndim).to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write(path: Path, data: bytes, gz: bool) -> Path:
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def make_mnist(root: Path, n_train: int = 20, n_test: int = 5, gz: bool = True, h: int = 28, w: int = 28) -> dict:
    rng = np.random.default_rng(0)
    arrays = {"train": (rng.integers(0, 256, (n_train, h, w)), rng.integers(0, 10, n_train)),
              "t10k": (rng.integers(0, 256, (n_test, h, w)), rng.integers(0, 10, n_test))}
    for prefix, (images, labels) in arrays.items():
        write(root / f"{prefix}-images-idx3-ubyte", idx_bytes(images), gz)
        write(root / f"{prefix}-labels-idx1-ubyte", idx_bytes(labels), gz)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_loader_reads_files_and_holds_out_last_tenth_as_val(tmp_path, gz, name):
    arrays = make_mnist(tmp_path, gz=gz)
    train, val, test = (genzoo.data.load(name, split=s, root=str(tmp_path)) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (18, 2, 5)
    assert train.spec == genzoo.data.DataSpec(1, 28, 28, 256)
    assert train.x.dtype == torch.int64 and train.x.shape == (18, 1, 28, 28)
    images, labels = arrays["train"]
    np.testing.assert_array_equal(train.x[:, 0].numpy(), images[:18])
    np.testing.assert_array_equal(val.x[:, 0].numpy(), images[18:])
    np.testing.assert_array_equal(val.labels.numpy(), labels[18:])
    np.testing.assert_array_equal(test.x[:, 0].numpy(), arrays["t10k"][0])
    assert train.name == name and val.split == "val" and any("train-images" in f for f in train.info["files"])


def test_idx_spec_takes_height_and_width_from_header(tmp_path):
    make_mnist(tmp_path, h=7, w=5)
    assert genzoo.data.load("mnist", root=str(tmp_path)).spec == genzoo.data.DataSpec(1, 7, 5, 256)


def test_idx_levels_option_requantizes_by_floor(tmp_path):
    arrays = make_mnist(tmp_path)
    ds = genzoo.data.load("mnist", split="test", root=str(tmp_path), levels=16)
    assert ds.spec.levels == 16
    np.testing.assert_array_equal(ds.x[:, 0].numpy(), arrays["t10k"][0] * 16 // 256)
    with pytest.raises(GenzooError, match="levels"):
        genzoo.data.load("mnist", root=str(tmp_path), levels=1000)


def test_read_idx_returns_header_shape(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write(tmp_path / "a-idx3-ubyte", idx_bytes(a), gz=False)
    np.testing.assert_array_equal(read_idx(path), a)
    assert int.from_bytes(idx_bytes(a)[:4], "big") == IMAGES_MAGIC
    assert int.from_bytes(idx_bytes(a[0, 0])[:4], "big") == LABELS_MAGIC


@pytest.mark.parametrize("corrupt, message", [
    (lambda b: b"\x00\x00\x0d\x03" + b[4:], "magic number is 0x00000d03"),    # dtype float
    (lambda b: b"\x00\x00\x08\x01" + b[4:], "magic number is 0x00000801"),    # labels given as images
    (lambda b: b"\x12\x34" + b[2:], "magic number"),
    (lambda b: b[:-7], "truncated"),
    (lambda b: b + b"\x00", "corrupt"),
    (lambda b: b[:10], "truncated"),
    (lambda b: b[:2], "fewer than a header"),
])
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_corrupt_idx_file_raises_one_sentence_naming_file(tmp_path, corrupt, message, gz):
    make_mnist(tmp_path, gz=gz)
    path = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    raw = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    write(tmp_path / "train-images-idx3-ubyte", corrupt(raw), gz)
    with pytest.raises(GenzooError, match=message) as e:
        genzoo.data.load("mnist", root=str(tmp_path))
    assert str(path) in str(e.value) and str(e.value).count(". ") == 0


def test_truncated_gzip_stream_names_file(tmp_path):
    make_mnist(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(GenzooError, match="not a valid gzip file") as e:
        genzoo.data.load("mnist", split="val", root=str(tmp_path))
    assert str(path) in str(e.value)


def test_image_and_label_counts_must_agree(tmp_path):
    make_mnist(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(19)), gz=True)
    with pytest.raises(GenzooError, match="19 labels"):
        genzoo.data.load("mnist", root=str(tmp_path))


def test_missing_root_missing_file_and_no_root_are_clear_errors(tmp_path):
    with pytest.raises(GenzooError, match="root=DIR"):
        genzoo.data.load("mnist")
    with pytest.raises(GenzooError, match="does not exist") as e:
        genzoo.data.load("mnist", root=str(tmp_path / "nowhere"))
    assert "nowhere" in str(e.value)
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(GenzooError, match="missing file") as e:
        genzoo.data.load("fashion-mnist", split="test", root=str(tmp_path))
    assert "t10k-labels-idx1-ubyte" in str(e.value)


def test_torchvision_layout_is_found(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    make_mnist(raw)
    assert len(genzoo.data.load("fashion-mnist", split="test", root=str(tmp_path))) == 5


@pytest.mark.skipif(not MNIST_8K.is_dir(), reason="shared/data/mnist-8k is not present")
def test_real_mnist_8k_splits_and_values():
    splits = {s: genzoo.data.load("mnist", split=s, root=str(MNIST_8K)) for s in ("train", "val", "test")}
    assert {s: len(d) for s, d in splits.items()} == {"train": 6300, "val": 700, "test": 1000}
    for d in splits.values():
        assert d.spec == genzoo.data.DataSpec(1, 28, 28, 256)
        assert int(d.x.min()) == 0 and int(d.x.max()) == 255
        assert set(d.labels.tolist()) == set(range(10))
    # MNIST digits are dark backgrounds: most pixels are 0, the mean intensity is about 33.
    mean = splits["test"].x.float().mean().item()
    assert 20 < mean < 45 and (splits["test"].x == 0).float().mean() > 0.7
