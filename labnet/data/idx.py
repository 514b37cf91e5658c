"""IDX files (the MNIST format): parse, verify, cache and download them.

Why this module: a corrupt, truncated or wrong data file must give a clear
:class:`~labnet.errors.DataError` naming the file and what was expected, never a NumPy
reshape traceback and never a silently wrong data set. Verified arrays are cached in
memory per process (keyed by resolved path and checksum, revalidated by mtime and size)
so a sweep running many jobs in one process reads each file once.

IDX layout (big-endian): two zero bytes, a type code (``0x08`` = unsigned byte), the
number of dimensions ``d``, then ``d`` uint32 sizes, then the data. Images are
``0x00000803`` (n, rows, cols), labels ``0x00000801`` (n,).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import threading
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labnet.errors import DataError

UBYTE = 0x08
DOWNLOAD_TIMEOUT = 10.0  # seconds per connection attempt and per read


@dataclass(frozen=True)
class IdxFile:
    """One expected ``.gz`` IDX file.

    name : file name, e.g. ``"train-images-idx3-ubyte.gz"``
    item_shape : shape of one item, ``(28, 28)`` for images, ``()`` for labels
    sha256 : SHA-256 of the *decompressed* IDX bytes (independent of the gzip wrapper)
    gz_md5 : MD5 of the ``.gz`` file itself, for data sets that only publish that
    """

    name: str
    item_shape: tuple[int, ...]
    sha256: str | None = None
    gz_md5: str | None = None

    @property
    def magic(self) -> int:
        return (UBYTE << 8) | (len(self.item_shape) + 1)


def parse_idx(data: bytes, spec: IdxFile, path: Path) -> np.ndarray:
    """Parse decompressed IDX bytes into a read-only uint8 array of shape (n, *item_shape)."""
    ndim = len(spec.item_shape) + 1
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes after decompression, too short to be an IDX file")
    magic = int.from_bytes(data[:4], "big")
    if magic != spec.magic:
        raise DataError(
            f"{path}: IDX magic number is 0x{magic:08x}, expected 0x{spec.magic:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}); "
            "is this the right file (images vs labels) of the right data set?"
        )
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if dims[1:] != spec.item_shape:
        raise DataError(f"{path}: items of shape {dims[1:]}, expected {spec.item_shape}")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(
            f"{path}: {len(data)} bytes of IDX data, expected {expected} for dimensions {dims} "
            "(the file is truncated or has trailing garbage)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _verify(path: Path, gz: bytes, data: bytes, spec: IdxFile) -> None:
    if spec.sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != spec.sha256:
            raise DataError(
                f"{path}: SHA-256 of the decompressed IDX data is {got}, expected {spec.sha256}. "
                "The file is corrupt or not the official file; delete or replace it."
            )
    if spec.gz_md5 is not None:
        got = hashlib.md5(gz, usedforsecurity=False).hexdigest()
        if got != spec.gz_md5:
            raise DataError(
                f"{path}: MD5 of the .gz file is {got}, expected {spec.gz_md5} (the published "
                "checksum). The file is corrupt or not the official file; delete or replace it."
            )


def read_idx_file(path: Path, spec: IdxFile) -> np.ndarray:
    """Read, decompress, parse and verify one ``.gz`` IDX file (no caching)."""
    try:
        gz = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    try:
        data = gzip.decompress(gz)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{path}: not a valid gzip file ({e}); the file is corrupt or truncated. "
            f"Delete it and download {spec.name} again."
        ) from e
    array = parse_idx(data, spec, path)
    _verify(path, gz, data, spec)
    return array


_cache: dict[tuple[Path, IdxFile], tuple[tuple[int, int], np.ndarray]] = {}
_cache_lock = threading.Lock()


def load_idx(path: Path, spec: IdxFile) -> np.ndarray:
    """Verified uint8 array of ``path``, read once per process while the file is unchanged.

    The returned array is read-only and shared: derive new arrays from it, never modify it.
    """
    try:
        st = path.stat()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    stamp = (st.st_mtime_ns, st.st_size)
    key = (path.resolve(), spec)  # errors still name the path the user configured
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        array = read_idx_file(path, spec)
        _cache[key] = (stamp, array)
        return array


def clear_cache() -> None:
    """Forget every cached array (e.g. in tests)."""
    with _cache_lock:
        _cache.clear()


def download_url(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT) -> None:
    """Stream ``url`` into the file ``dest`` with a tqdm progress bar (raises OSError on failure)."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=url.rsplit("/", 1)[-1]) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                bar.update(len(chunk))


def _fetch_one(folder: Path, spec: IdxFile, mirrors: Sequence[str], downloader: Callable) -> list[str]:
    """Download ``spec`` from the first mirror that gives a valid file; return the failures."""
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + spec.name
        tmp = None
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=folder)
            os.close(fd)
            tmp = Path(tmp_name)
            downloader(url, tmp)
            read_idx_file(tmp, spec)  # never keep a file that does not verify
            os.replace(tmp, folder / spec.name)  # atomic: readers never see a partial file
            return []
        # URLError, timeouts, refused writes are OSErrors; a broken transfer can be an HTTPException
        except (OSError, ValueError, http.client.HTTPException, DataError) as e:
            failures.append(f"{url}: {e}")
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    return failures


def ensure_files(
    folder: Path,
    specs: Sequence[IdxFile],
    mirrors: Sequence[str],
    *,
    title: str,
    download: bool = True,
    downloader: Callable[[str, Path], None] | None = None,
) -> None:
    """Make sure every file of ``specs`` is in ``folder``, downloading missing ones if allowed.

    Raises DataError naming exactly which files belong in which folder when they cannot be had.
    """
    missing = [s for s in specs if not (folder / s.name).is_file()]
    if not missing:
        return
    failures: list[str] = []
    if download:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            failures.append(f"cannot create {folder}: {e.strerror or e}")
        else:
            for spec in missing:
                failures += _fetch_one(folder, spec, mirrors, downloader or download_url)
        missing = [s for s in specs if not (folder / s.name).is_file()]
        if not missing:
            return
    names = ", ".join(s.name for s in missing)
    why = (
        "downloading is off (dataset.download=false)"
        if not download
        else "downloading failed:\n  " + ("\n  ".join(failures))
    )
    raise DataError(
        f"{title} files missing from {folder}: {names}\n"
        f"{why}\n"
        f"Put these files in {folder} (from e.g. {mirrors[0] if mirrors else 'the official site'}), "
        f"or point LABNET_DATA_DIR or dataset.root at a folder whose {folder.name}/ holds them."
    )
