"""The disk cache of decoded IDX arrays (labnet/data/idx.py): used only while the source file is
unchanged, checked on load, written atomically, and silently skipped where it cannot be written.

Every test has its own empty ``LABNET_CACHE_DIR`` (the ``labnet_cache_dir`` fixture in conftest.py).
Synthetic IDX files are written just before they are read, so the rule "a file changed in the last
2 s is not cached yet" is switched off here except in the test of that rule.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from labnet.data import idx
from labnet.data.idx import IdxFile
from labnet.data.mnist import Mnist
from labnet.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
REAL_SETTLE_NS = idx._SETTLE_NS


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(idx, "_cache", {})  # no arrays from other tests in memory
    monkeypatch.setattr(idx, "_SETTLE_NS", 0)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 0x0000080d (d = ndim), d big-endian uint32 sizes, the data."""
    header = (0x0800 | array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> IdxFile:
    """Write ``array`` as a .gz IDX file; return its spec (with the SHA-256 of the decompressed bytes)."""
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data, compresslevel=1))
    return IdxFile(path.name, array.shape[1:], sha256=hashlib.sha256(data).hexdigest())


def images(seed: int = 0, n: int = 50) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 4, 3), dtype=np.uint8)


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.npy"))


def all_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def count_reads(monkeypatch) -> list[str]:
    """Names of the files :func:`idx.read_idx_file` decompresses from now on."""
    calls: list[str] = []
    real = idx.read_idx_file
    monkeypatch.setattr(idx, "read_idx_file", lambda path, spec: calls.append(path.name) or real(path, spec))
    return calls


def forbid_decompressing(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the .gz was decompressed although the disk cache holds the array")

    monkeypatch.setattr(idx.gzip, "decompress", refuse)
    monkeypatch.setattr(idx, "read_idx_file", refuse)


@pytest.fixture
def source(tmp_path) -> tuple[Path, IdxFile, np.ndarray]:
    array = images()
    path = tmp_path / "data" / "train-images-idx3-ubyte.gz"
    path.parent.mkdir()
    return path, write_idx(path, array), array


# --------------------------------------------------------------------------- warm cache


def test_a_warm_cache_loads_without_decompressing(source, labnet_cache_dir, monkeypatch):
    path, spec, array = source
    first = idx.load_idx(path, spec)
    np.testing.assert_array_equal(first, array)
    [entry] = entries(labnet_cache_dir)
    assert entry.name.startswith("train-images-idx3-ubyte.")
    assert all_files(labnet_cache_dir) == [entry.name]  # no temporary file left

    idx.clear_cache()  # as in a new process
    forbid_decompressing(monkeypatch)
    second = idx.load_idx(path, spec)
    np.testing.assert_array_equal(second, array)
    assert second.dtype == np.uint8 and second.shape == (50, 4, 3)
    assert type(second) is np.ndarray and isinstance(second.base, np.memmap)  # mapped, pages shared
    assert not second.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        second[0, 0, 0] = 1
    assert idx.load_idx(path, spec) is second  # and then the in-memory cache


SCRIPT = """
import gzip, hashlib, os, sys
from pathlib import Path
import numpy as np
from labnet.data import idx
from labnet.data.idx import IdxFile

idx._SETTLE_NS = 0  # the test wrote the file just now
if os.environ.get("FORBID_GZIP"):
    def refuse(*args):
        raise AssertionError("decompressed although the disk cache holds the array")
    gzip.decompress = refuse
path, sha256 = Path(sys.argv[1]), sys.argv[2]
array = idx.load_idx(path, IdxFile(path.name, (28, 28), sha256=sha256))
print(hashlib.sha256(array.tobytes()).hexdigest(), "mapped" if isinstance(array.base, np.memmap) else "decoded")
"""


def run_loader(path: Path, spec: IdxFile, **env: str) -> subprocess.Popen:
    environ = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(path), spec.sha256],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_processes_share_the_cache_and_concurrent_writers_are_harmless(tmp_path, labnet_cache_dir):
    array = np.random.default_rng(1).integers(0, 256, size=(3000, 28, 28), dtype=np.uint8)  # 2.4 MB
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    spec = write_idx(path, array)
    digest = hashlib.sha256(array.tobytes()).hexdigest()
    cold = [run_loader(path, spec) for _ in range(3)]  # started at once: they race to write the entry
    how = []
    for proc in cold:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.split()[0] == digest
        how.append(out.split()[1])
    assert "decoded" in how  # (a late starter may already find the entry)
    [entry] = entries(labnet_cache_dir)
    assert all_files(labnet_cache_dir) == [entry.name]

    warm = run_loader(path, spec, FORBID_GZIP="1")
    out, err = warm.communicate(timeout=120)
    assert warm.returncode == 0, err
    assert out.split() == [digest, "mapped"]
    assert entries(labnet_cache_dir) == [entry]


# --------------------------------------------------------------------------- a changed source


def test_a_changed_source_replaces_its_entry(source, labnet_cache_dir, monkeypatch):
    path, spec, array = source
    unverified = IdxFile(spec.name, spec.item_shape)  # no checksum: any valid content is accepted
    np.testing.assert_array_equal(idx.load_idx(path, unverified), array)
    [old] = entries(labnet_cache_dir)
    other = images(seed=2, n=70)
    path.unlink()
    write_idx(path, other)
    idx.clear_cache()
    calls = count_reads(monkeypatch)
    np.testing.assert_array_equal(idx.load_idx(path, unverified), other)
    assert calls == [path.name]
    [new] = entries(labnet_cache_dir)
    assert new != old  # the entry of the old version is removed, not left to pile up


@pytest.mark.parametrize(
    "change, message",
    [
        ("rewritten with other content", r"SHA-256 of the decompressed IDX data is [0-9a-f]+, expected"),
        ("same size, mtime put back", r"SHA-256 of the decompressed IDX data is [0-9a-f]+, expected"),
        ("truncated", r"not a valid gzip file.*corrupt or truncated"),
        ("short", r"bytes of IDX data, expected 616 for dimensions \(50, 4, 3\)"),
    ],
)
def test_a_changed_source_is_verified_again(source, labnet_cache_dir, monkeypatch, change, message):
    path, spec, array = source
    idx.load_idx(path, spec)
    assert len(entries(labnet_cache_dir)) == 1
    time.sleep(0.05)  # a later change: past the file system's timestamp tick
    data = bytearray(idx_bytes(array))
    data[-1] ^= 0xFF
    if change == "rewritten with other content":
        path.write_bytes(gzip.compress(bytes(data)))
    elif change == "same size, mtime put back":  # as `cp -p` or `touch -r` of a same-sized file would
        before = path.stat()
        gz = gzip.compress(bytes(data), compresslevel=1)
        assert len(gz) == before.st_size
        path.write_bytes(gz)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    elif change == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    else:
        path.write_bytes(gzip.compress(idx_bytes(array)[:-12]))
    for _ in range(2):  # a new process: the in-memory cache is empty, the disk cache holds the old version
        idx.clear_cache()
        calls = count_reads(monkeypatch)
        with pytest.raises(DataError, match=message) as info:
            idx.load_idx(path, spec)
        assert str(path) in str(info.value)
        assert calls == [path.name]
    assert len(entries(labnet_cache_dir)) == 1  # a file that fails verification is never cached


def test_an_entry_serves_only_its_own_spec(source, labnet_cache_dir):
    path, spec, _ = source
    idx.load_idx(path, spec)
    idx.clear_cache()
    wrong_sum = IdxFile(spec.name, spec.item_shape, sha256="0" * 64)
    with pytest.raises(DataError, match=re.escape(f"{path}: SHA-256") + ".* expected 0000000000"):
        idx.load_idx(path, wrong_sum)
    with pytest.raises(DataError, match=re.escape(f"{path}: items of shape (4, 3), expected (3, 4)")):
        idx.load_idx(path, IdxFile(spec.name, (3, 4), sha256=spec.sha256))
    as_labels = IdxFile(spec.name, (), sha256=spec.sha256)
    with pytest.raises(DataError, match=r"magic number is 0x00000803, expected 0x00000801"):
        idx.load_idx(path, as_labels)


def test_a_file_changed_just_now_is_cached_only_once_it_has_settled(source, labnet_cache_dir, monkeypatch):
    path, spec, array = source
    monkeypatch.setattr(idx, "_SETTLE_NS", REAL_SETTLE_NS)
    idx.load_idx(path, spec)
    assert entries(labnet_cache_dir) == []  # rewritten within the same timestamp tick it could keep its stamp
    idx.clear_cache()
    later = time.time_ns() + REAL_SETTLE_NS + 1
    monkeypatch.setattr(idx.time, "time_ns", lambda: later)
    np.testing.assert_array_equal(idx.load_idx(path, spec), array)
    assert len(entries(labnet_cache_dir)) == 1


# --------------------------------------------------------------------------- a damaged entry


def damage(entry: Path, how: str) -> None:
    good = entry.read_bytes()
    entry.unlink()
    if how == "truncated":
        entry.write_bytes(good[:-10])
    elif how == "header only":
        entry.write_bytes(good[:60])
    elif how == "empty":
        entry.write_bytes(b"")
    elif how == "not npy":
        entry.write_bytes(b"<html>disk full</html>" * 40)
    elif how == "trailing bytes":
        entry.write_bytes(good + b"\0" * 16)
    elif how == "float64":
        np.save(entry, np.zeros((50, 4, 3)))
    elif how == "other item shape":
        np.save(entry, np.zeros((50, 12), np.uint8))
    elif how == "fortran order":
        np.save(entry, np.asfortranarray(np.zeros((50, 4, 3), np.uint8)))
    elif how == "pickled objects":
        with open(entry, "wb") as f:
            np.save(f, np.array([{"x": 1}] * 50, dtype=object), allow_pickle=True)
    elif how == "npz":
        with open(entry, "wb") as f:
            np.savez(f, a=np.zeros((50, 4, 3), np.uint8))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "truncated",
        "header only",
        "empty",
        "not npy",
        "trailing bytes",
        "float64",
        "other item shape",
        "fortran order",
        "pickled objects",
        "npz",
    ],
)
def test_a_damaged_entry_is_ignored_and_rewritten(source, labnet_cache_dir, monkeypatch, capsys, how):
    path, spec, array = source
    idx.load_idx(path, spec)
    [entry] = entries(labnet_cache_dir)
    damage(entry, how)
    idx.clear_cache()
    calls = count_reads(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(idx.load_idx(path, spec), array)
    assert calls == [path.name]  # read and verified from the .gz again
    assert capsys.readouterr() == ("", "")  # nothing for the user to act on
    assert entries(labnet_cache_dir) == [entry] and all_files(labnet_cache_dir) == [entry.name]
    assert entry.stat().st_size == 128 + array.nbytes  # rewritten whole
    idx.clear_cache()
    forbid_decompressing(monkeypatch)
    np.testing.assert_array_equal(idx.load_idx(path, spec), array)


def test_temporary_files_of_dead_writers_are_removed(source, labnet_cache_dir):
    path, spec, _ = source
    idx.load_idx(path, spec)
    [entry] = entries(labnet_cache_dir)
    stale, recent = (labnet_cache_dir / f".{entry.name}.{pid}.00000000.tmp" for pid in (1, 2))
    stale.write_bytes(b"half an array")
    recent.write_bytes(b"another process is writing this one")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    time.sleep(0.05)
    path.write_bytes(path.read_bytes())  # a new version of the source: its entry is written
    idx.clear_cache()
    idx.load_idx(path, spec)
    assert not stale.exists() and recent.exists()
    assert len(entries(labnet_cache_dir)) == 1


# --------------------------------------------------------------------------- no usable cache folder


def test_an_unusable_cache_folder_is_skipped_silently(source, labnet_cache_dir, tmp_path, monkeypatch, capsys):
    path, spec, array = source
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("not a folder")
    cases = {
        "a file in the way": (in_the_way / "cache", None),
        "read-only": (labnet_cache_dir, PermissionError(13, "Permission denied")),
        "disk full": (labnet_cache_dir, OSError(28, "No space left on device")),
    }
    real_open, real_write = os.open, np.lib.format.write_array
    for name, (folder, error) in cases.items():
        monkeypatch.setenv("LABNET_CACHE_DIR", str(folder))
        if isinstance(error, PermissionError):  # as root, chmod alone would not stop the write

            def refuse(file, *args, error=error, **kwargs):
                if Path(file).parent == labnet_cache_dir:
                    raise error
                return real_open(file, *args, **kwargs)

            monkeypatch.setattr(idx.os, "open", refuse)
        elif error is not None:

            def half_written(f, *args, error=error, **kwargs):
                f.write(b"\x93NUMPY partial")
                raise error

            monkeypatch.setattr(np.lib.format, "write_array", half_written)
        for _ in range(2):
            idx.clear_cache()
            calls = count_reads(monkeypatch)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                np.testing.assert_array_equal(idx.load_idx(path, spec), array)
            assert calls == [path.name], name  # read from the .gz each time, as without a cache
        assert capsys.readouterr() == ("", ""), name
        assert all_files(labnet_cache_dir) == [], name  # no entry, no temporary file
        monkeypatch.setattr(idx.os, "open", real_open)
        monkeypatch.setattr(np.lib.format, "write_array", real_write)


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("LABNET_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert idx.cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("LABNET_CACHE_DIR", "")
    assert idx.cache_dir() == tmp_path / "xdg" / "labnet" / "idx"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec: ignored
    assert idx.cache_dir() == tmp_path / "home" / ".cache" / "labnet" / "idx"
    monkeypatch.delenv("LABNET_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert idx.cache_dir() == tmp_path / "home" / ".cache" / "labnet" / "idx"


# --------------------------------------------------------------------------- real MNIST


def test_mnist_from_the_cache_equals_mnist_from_the_gz_files(labnet_cache_dir, monkeypatch):
    if not all((SHARED_MNIST / spec.name).is_file() for spec in Mnist.files.values()):
        pytest.skip(f"MNIST files not found in {SHARED_MNIST}")
    monkeypatch.setattr(idx, "_SETTLE_NS", REAL_SETTLE_NS)  # the shared files are old enough
    paths = {key: SHARED_MNIST / spec.name for key, spec in Mnist.files.items()}
    from_gz = {key: idx.load_idx(paths[key], spec) for key, spec in Mnist.files.items()}
    assert len(entries(labnet_cache_dir)) == 4
    idx.clear_cache()
    forbid_decompressing(monkeypatch)
    for key, spec in Mnist.files.items():
        cached = idx.load_idx(paths[key], spec)
        assert isinstance(cached.base, np.memmap)
        assert cached.dtype == from_gz[key].dtype and cached.shape == from_gz[key].shape
        np.testing.assert_array_equal(cached, from_gz[key])
    monkeypatch.setenv("LABNET_DATA_DIR", str(SHARED_MNIST.parent))
    raw = Mnist(flatten=True, val_size=5000).raw()  # the data set's own checks pass on mapped arrays
    assert raw["train_images"].shape == (60000, 28, 28) and len(raw["test_labels"]) == 10000
