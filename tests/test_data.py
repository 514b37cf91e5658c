"""Built-in data sets: shapes, dtypes, labels, determinism, file verification, caching.

MNIST comes from the shared data folder (``LABNET_DATA_DIR``); no test touches the network:
the downloader is replaced by a function that fails the test unless a test installs its own.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pluggy
import pytest

from labnet import hookspecs
from labnet.data import builtin, idx
from labnet.data.idx import IdxFile
from labnet.data.logic_gates import LogicGates
from labnet.data.mnist import FashionMnist, Mnist
from labnet.data.spiral import Spiral
from labnet.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MNIST_FILES = [spec.name for spec in Mnist.files.values()]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
REAL_DOWNLOAD = idx.download_url  # before the fixture below replaces it
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(url, dest, timeout=None):
        pytest.fail(f"a test tried to download {url}")

    monkeypatch.setattr(idx, "download_url", refuse)


@pytest.fixture
def data_dir(monkeypatch) -> Path:
    """The shared data folder as LABNET_DATA_DIR; skips when its MNIST files are absent."""
    missing = [n for n in MNIST_FILES if not (SHARED_DATA / "mnist" / n).is_file()]
    if missing:
        pytest.skip(f"MNIST files {missing} not found in {SHARED_DATA / 'mnist'} (the shared data folder)")
    monkeypatch.setenv("LABNET_DATA_DIR", str(SHARED_DATA))
    return SHARED_DATA


@pytest.fixture
def mnist_copy(tmp_path, data_dir) -> Path:
    """A data root whose mnist/ links to the shared files; tests replace the file they corrupt."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in MNIST_FILES:
        (folder / name).symlink_to(data_dir / "mnist" / name)
    return tmp_path


def rewrite(path: Path, content: bytes, *, compress: bool = True) -> None:
    path.unlink()
    path.write_bytes(gzip.compress(content, compresslevel=1) if compress else content)


def shared_bytes(name: str) -> bytes:
    return gzip.decompress((SHARED_DATA / "mnist" / name).read_bytes())


# --------------------------------------------------------------------------- spiral


def test_spiral_matches_the_books_formula():
    split = Spiral().load(np.random.default_rng(0)).train
    rng = np.random.default_rng(1984)
    n = 100
    expected = np.zeros((3 * n, 2))
    for j in range(3):
        for i in range(n):
            rate = i / n
            theta = j * 4.0 + 4.0 * rate + rng.standard_normal() * 0.2
            expected[n * j + i] = rate * np.sin(theta), rate * np.cos(theta)
    np.testing.assert_allclose(split.x, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(split.y, np.repeat([0, 1, 2], n))
    assert split.x.dtype == np.float32 and split.y.dtype == np.int64


def test_spiral_shapes_scale_and_are_deterministic():
    ds = Spiral(num_per_class=50, num_classes=5, val_size=30)
    a, b = ds.load(np.random.default_rng(7)), ds.load(np.random.default_rng(7))
    assert a.input_shape == (2,) and a.num_classes == 5 and a.test is None
    assert a.train.x.shape == (220, 2) and a.val.x.shape == (30, 2)
    assert np.bincount(np.concatenate([a.train.y, a.val.y])).tolist() == [50] * 5
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.val.y, b.val.y)
    # the points depend on `seed`, not on the run's generator
    c = Spiral(num_per_class=50, num_classes=5).load(np.random.default_rng(99))
    np.testing.assert_array_equal(
        np.sort(c.train.x, axis=0), np.sort(np.concatenate([a.train.x, a.val.x]), axis=0)
    )
    assert not np.array_equal(Spiral(seed=1).load(None).train.x, Spiral(seed=2).load(None).train.x)
    assert np.abs(a.train.x).max() <= 1.0


def test_spiral_one_hot_and_dtype():
    s = Spiral(one_hot=True).load(np.random.default_rng(0), dtype=np.float64)
    assert s.train.x.dtype == np.float64 and s.train.y.shape == (300, 3) and s.train.y.dtype == np.float64
    np.testing.assert_array_equal(s.train.y.argmax(1), np.repeat([0, 1, 2], 100))


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"num_per_class": 0}, "num_per_class=0"),
        ({"num_classes": 1}, "num_classes=1"),
        ({"val_size": -1}, "val_size=-1"),
        ({"noise": -0.1}, "noise=-0.1"),
        ({"val_size": 300}, "val_size=300"),
    ],
)
def test_spiral_rejects_bad_values(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        Spiral(**kwargs)


# --------------------------------------------------------------------------- logic gates


@pytest.mark.parametrize(
    "gate, labels",
    [("and", [0, 0, 0, 1]), ("nand", [1, 1, 1, 0]), ("or", [0, 1, 1, 1]), ("xor", [0, 1, 1, 0])],
)
def test_logic_gates_truth_tables(gate, labels):
    s = LogicGates(gate=gate).load(np.random.default_rng(0))
    assert s.input_shape == (2,) and s.num_classes == 2
    for split in (s.train, s.val, s.test):
        np.testing.assert_array_equal(split.x, [[0, 0], [0, 1], [1, 0], [1, 1]])
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        np.testing.assert_array_equal(split.y, labels)
    s.train.y[:] = 5  # splits do not share memory
    assert s.test.y.tolist() == labels


def test_logic_gates_default_is_xor_and_unknown_gate_lists_the_accepted():
    assert LogicGates().load(None).train.y.tolist() == [0, 1, 1, 0]
    assert LogicGates(gate="XOR").gate == "xor"
    with pytest.raises(ConfigError, match=r"'xnor'.*and, nand, or, xor"):
        LogicGates(gate="xnor")


# --------------------------------------------------------------------------- mnist


@pytest.fixture
def mnist(data_dir):
    return Mnist().load(np.random.default_rng(0))


def test_mnist_shapes_dtypes_and_published_class_counts(mnist):
    assert mnist.input_shape == (784,) and mnist.num_classes == 10
    assert mnist.train.x.shape == (55000, 784) and mnist.val.x.shape == (5000, 784)
    assert mnist.test.x.shape == (10000, 784)
    for split in (mnist.train, mnist.val, mnist.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert 0.0 <= split.x.min() and split.x.max() == 1.0
    train_y = np.concatenate([mnist.train.y, mnist.val.y])
    assert np.bincount(train_y, minlength=10).tolist() == TRAIN_COUNTS
    assert np.bincount(mnist.test.y, minlength=10).tolist() == TEST_COUNTS


def test_mnist_options_follow_the_book(data_dir):
    s = Mnist(normalize=False, flatten=False, one_hot=True, val_size=0).load(
        np.random.default_rng(0), np.float64
    )
    assert s.val is None and s.input_shape == (1, 28, 28)
    assert s.train.x.shape == (60000, 1, 28, 28) and s.train.x.dtype == np.float64 and s.train.x.max() == 255
    assert s.test.y.shape == (10000, 10) and s.test.y.dtype == np.float64
    assert np.bincount(s.test.y.argmax(1)).tolist() == TEST_COUNTS and (s.test.y.sum(1) == 1).all()
    # the first training image of MNIST is a 5
    assert s.train.y[0].argmax() == 5
    flat = Mnist(val_size=0).load(np.random.default_rng(0))
    np.testing.assert_array_equal(flat.train.x[0], (s.train.x[0].ravel() / 255).astype(np.float32))


def test_mnist_validation_split_is_deterministic_in_the_rng(data_dir):
    a = Mnist(val_size=100).load(np.random.default_rng(3))
    b = Mnist(val_size=100).load(np.random.default_rng(3))
    c = Mnist(val_size=100).load(np.random.default_rng(4))
    np.testing.assert_array_equal(a.val.x, b.val.x)
    assert not np.array_equal(a.val.y, c.val.y)
    assert len(a.train) == 59900


def test_mnist_loads_are_cached_and_independent(data_dir, monkeypatch):
    monkeypatch.setattr(idx, "_cache", {})
    calls = []
    real = idx.read_idx_file
    monkeypatch.setattr(idx, "read_idx_file", lambda path, spec: calls.append(path.name) or real(path, spec))
    first = Mnist().load(np.random.default_rng(0))
    assert sorted(calls) == sorted(MNIST_FILES)
    first.test.x[:] = -1  # callers may modify their arrays: the cache must not change
    second = Mnist(one_hot=True, flatten=False).load(np.random.default_rng(0))
    assert len(calls) == 4
    assert second.test.x.min() == 0.0 and np.bincount(second.test.y.argmax(1)).tolist() == TEST_COUNTS


def test_a_replaced_file_is_read_again(mnist_copy, monkeypatch):
    ds = Mnist(root=str(mnist_copy))
    ds.load(np.random.default_rng(0))
    calls = []
    real = idx.read_idx_file
    monkeypatch.setattr(idx, "read_idx_file", lambda path, spec: calls.append(path.name) or real(path, spec))
    labels = mnist_copy / "mnist" / "t10k-labels-idx1-ubyte.gz"
    rewrite(labels, b"\x00" + shared_bytes(labels.name))  # a new, broken file under the same name
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        ds.load(np.random.default_rng(0))
    assert calls == ["t10k-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("t10k-images-idx3-ubyte.gz", "truncated", r"not a valid gzip file.*corrupt or truncated"),
        ("train-labels-idx1-ubyte.gz", "not gzip", r"not a valid gzip file"),
        ("train-labels-idx1-ubyte.gz", "images instead", r"magic number is 0x00000803, expected 0x00000801"),
        ("t10k-images-idx3-ubyte.gz", "short", r"7840016 for dimensions \(10000, 28, 28\)"),
        ("t10k-labels-idx1-ubyte.gz", "one label changed", r"SHA-256 .* expected ff7bcfd416de3373"),
    ],
)
def test_corrupt_files_give_a_data_error_naming_the_file(mnist_copy, name, content, message):
    path = mnist_copy / "mnist" / name
    gz = (SHARED_DATA / "mnist" / name).read_bytes()
    if content == "truncated":
        rewrite(path, gz[: len(gz) // 2], compress=False)
    elif content == "not gzip":
        rewrite(path, b"<html>404 Not Found</html>", compress=False)
    elif content == "images instead":
        rewrite(path, shared_bytes("t10k-images-idx3-ubyte.gz"))
    elif content == "short":
        rewrite(path, shared_bytes(name)[:-784])
    else:
        data = bytearray(shared_bytes(name))
        data[-1] = (data[-1] + 1) % 10
        rewrite(path, bytes(data))
    with pytest.raises(DataError, match=message) as info:
        Mnist(root=str(mnist_copy)).load(np.random.default_rng(0))
    assert str(path) in str(info.value)


def test_labels_out_of_range_are_refused(mnist_copy):
    data = bytearray(shared_bytes("t10k-labels-idx1-ubyte.gz"))
    data[8 + 17] = 12
    path = mnist_copy / "mnist" / "t10k-labels-idx1-ubyte.gz"
    rewrite(path, bytes(data))

    class Tampered(Mnist):  # checksum of the tampered file, so the label check itself is tested
        files = {
            **Mnist.files,
            "test_labels": IdxFile(path.name, (), sha256=hashlib.sha256(data).hexdigest()),
        }

    with pytest.raises(
        DataError, match=r"t10k-labels-idx1-ubyte.gz: label 12 at index 17 is out of range.*0..9"
    ):
        Tampered(root=str(mnist_copy)).load(np.random.default_rng(0))


def test_missing_files_without_download_say_where_to_put_them(tmp_path):
    with pytest.raises(DataError) as info:
        Mnist(root=str(tmp_path), download=False).load(np.random.default_rng(0))
    message = str(info.value)
    assert f"missing from {tmp_path / 'mnist'}" in message and "downloading is off" in message
    assert all(name in message for name in MNIST_FILES)
    assert "LABNET_DATA_DIR" in message and "dataset.root" in message
    assert not (tmp_path / "mnist").exists()


def test_failed_download_reports_every_mirror(tmp_path, monkeypatch):
    def offline(url, dest, timeout=None):
        raise urllib.error.URLError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(idx, "download_url", offline)
    with pytest.raises(DataError, match="Network is unreachable") as info:
        FashionMnist(root=str(tmp_path)).load(np.random.default_rng(0))
    message = str(info.value)
    assert f"missing from {tmp_path / 'fashion_mnist'}" in message
    assert all(f"{mirror}train-labels-idx1-ubyte.gz" in message for mirror in FashionMnist.mirrors)
    assert list((tmp_path / "fashion_mnist").iterdir()) == []  # no partial files left behind


def test_download_keeps_only_verified_files(mnist_copy, monkeypatch):
    missing = mnist_copy / "mnist" / "t10k-labels-idx1-ubyte.gz"
    missing.unlink()
    urls = []

    def fake_download(url, dest, timeout=None):
        urls.append(url)
        if len(urls) == 1:  # first mirror serves garbage, second the real file
            dest.write_bytes(b"garbage")
        else:
            shutil.copyfile(SHARED_DATA / "mnist" / url.rsplit("/", 1)[-1], dest)

    monkeypatch.setattr(idx, "download_url", fake_download)
    s = Mnist(root=str(mnist_copy)).load(np.random.default_rng(0))
    assert urls == [m + missing.name for m in Mnist.mirrors]
    assert np.bincount(s.test.y).tolist() == TEST_COUNTS
    assert sorted(p.name for p in missing.parent.iterdir()) == sorted(MNIST_FILES)


def test_real_downloader_fetches_from_a_file_url_mirror(mnist_copy, monkeypatch, capsys):
    missing = mnist_copy / "mnist" / "train-labels-idx1-ubyte.gz"
    missing.unlink()

    class LocalMirror(Mnist):  # a file:// mirror runs the real urllib + tqdm code without a network
        mirrors = ((SHARED_DATA / "mnist").as_uri() + "/",)

    monkeypatch.setattr(idx, "download_url", REAL_DOWNLOAD)
    s = LocalMirror(root=str(mnist_copy), val_size=0).load(np.random.default_rng(0))
    assert missing.read_bytes() == (SHARED_DATA / "mnist" / missing.name).read_bytes()
    assert np.bincount(s.train.y).tolist() == TRAIN_COUNTS
    assert "train-labels-idx1-ubyte.gz" in capsys.readouterr().err  # the progress bar


def test_unwritable_data_folder_gives_a_data_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(idx.tempfile, "mkstemp", refuse)
    with pytest.raises(DataError, match=r"Permission denied[\s\S]*Put these files in"):
        Mnist(root=str(tmp_path)).load(np.random.default_rng(0))


def test_fashion_mnist_verifies_the_published_gz_md5(tmp_path, data_dir):
    shutil.copytree(data_dir / "mnist", tmp_path / "fashion_mnist", ignore=shutil.ignore_patterns("*.md"))
    with pytest.raises(
        DataError, match=r"fashion_mnist/train-images-idx3-ubyte.gz: MD5 .* expected 8d4fb7e6c68d"
    ):
        FashionMnist(root=str(tmp_path), download=False).load(np.random.default_rng(0))


def test_bad_validation_sizes(data_dir):
    with pytest.raises(ConfigError, match="val_size=-1"):
        Mnist(val_size=-1)
    with pytest.raises(ConfigError, match=r"val_size=60000 leaves no training data.*0 to 59999"):
        Mnist(val_size=60000).load(np.random.default_rng(0))


# --------------------------------------------------------------------------- plugin contract


def test_builtin_plugin_registers_every_data_set_with_a_plain_signature():
    pm = pluggy.PluginManager("labnet")
    pm.add_hookspecs(hookspecs)
    pm.register(builtin)
    classes = [cls for result in pm.hook.labnet_datasets() for cls in result]
    assert [cls.name for cls in classes] == ["spiral", "logic_gates", "mnist", "fashion_mnist"]
    for cls in classes:
        params = list(inspect.signature(cls).parameters.values())
        assert params, cls
        for p in params:
            assert p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty, (cls, p.name)
            assert p.annotation is not p.empty, (cls, p.name)
            assert p.default is None or isinstance(p.default, (bool, int, float, str)), (cls, p.name)
        assert "rng" in inspect.signature(cls.load).parameters
