"""IDX files (the MNIST format): parse, verify, cache and download them.

Why this module: a corrupt, truncated or wrong data file must give a clear
:class:`~labnet.errors.DataError` naming the file and what was expected, never a NumPy
reshape traceback and never a silently wrong data set.

Verified arrays are cached at two levels, both keyed by the resolved path and the
:class:`IdxFile` (checksums, item shape) and revalidated by the file's size, mtime, ctime
and inode, so a changed file is always read and verified again:

1. in memory per process, so a sweep running many jobs in one process reads each file once;
2. on disk, as an uncompressed ``.npy`` per file in :func:`cache_dir`, memory-mapped
   read-only by later processes (each ``python -m labnet`` run, each sweep worker: they
   share the pages) instead of gunzipping and hashing again (MNIST: 0.24 s, then 0.002 s).
   An entry is written atomically, only after its source verified and once the source has
   not changed for 2 s; on load its header, dtype, item shape and length are checked, and
   one that does not fit is ignored and rewritten. A cache folder that cannot be created or
   written is silently not used.

IDX layout (big-endian): two zero bytes, a type code (``0x08`` = unsigned byte), the
number of dimensions ``d``, then ``d`` uint32 sizes, then the data. Images are
``0x00000803`` (n, rows, cols), labels ``0x00000801`` (n,).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import re
import secrets
import tempfile
import threading
import time
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


#: part of every disk cache key: bump it when the entry format changes, so old entries are never read
CACHE_FORMAT = 1
_STALE_TMP_SECONDS = 3600  # a temporary file this old was left by a writer that died; remove it
#: a file changed less than this ago is not cached on disk yet: written again within the same timestamp
#: tick (coarse clocks, FAT's 2 s) it could keep its stamp, and a stale entry would outlive the process
_SETTLE_NS = 2_000_000_000

Stamp = tuple[int, int, int, int]
_cache: dict[tuple[Path, IdxFile], tuple[Stamp, np.ndarray]] = {}
_cache_lock = threading.Lock()


def cache_dir() -> Path | None:
    """Folder of the disk cache: ``$LABNET_CACHE_DIR``, else ``$XDG_CACHE_HOME/labnet/idx``,
    else ``~/.cache/labnet/idx`` (None when there is no home folder either)."""
    env = os.environ.get("LABNET_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):  # the XDG spec: a relative value is invalid and ignored
        return Path(xdg) / "labnet" / "idx"
    try:
        return Path.home() / ".cache" / "labnet" / "idx"
    except RuntimeError:  # no HOME and no passwd entry
        return None


def _stamp(st: os.stat_result) -> Stamp:
    # ctime and inode as well as mtime and size: a file replaced by one of the same size whose
    # mtime was kept (cp -p, rsync -a, touch -r) still gets a new ctime or inode
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _settled(st: os.stat_result) -> bool:
    """Unchanged for ``_SETTLE_NS``: a later change cannot keep the stamp (ctime cannot be set back)."""
    return time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLE_NS


def _stamp_of(path: Path) -> Stamp | None:
    try:
        return _stamp(path.stat())
    except OSError:
        return None


def _entry_path(folder: Path, resolved: Path, spec: IdxFile, stamp: Stamp) -> tuple[Path, str]:
    """Cache file for this version of the source, and the name prefix all its versions share."""
    source = hashlib.sha256(repr((CACHE_FORMAT, str(resolved), spec)).encode()).hexdigest()[:20]
    version = hashlib.sha256(repr(stamp).encode()).hexdigest()[:12]
    stem = re.sub(r"[^\w.-]", "_", spec.name.removesuffix(".gz"))[:60]
    prefix = f"{stem}.{source}."
    return folder / f"{prefix}{version}.npy", prefix


def _load_entry(entry: Path, spec: IdxFile) -> np.ndarray | None:
    """The cached array, memory-mapped read-only, or None if missing, damaged or not what ``spec`` gives."""
    try:
        array = np.lib.format.open_memmap(entry, mode="r")  # .npy only: never unpickles, never an .npz
        size = entry.stat().st_size
    except (OSError, ValueError, EOFError):  # missing, unreadable, truncated header or data, not an .npy
        return None
    if (
        array.dtype != np.uint8
        or array.ndim != len(spec.item_shape) + 1
        or array.shape[1:] != spec.item_shape
        or not array.flags.c_contiguous
        or size != array.offset + array.nbytes  # trailing bytes: not a file this module wrote
    ):
        return None
    return np.asarray(array)  # a plain read-only ndarray; the mapping lives on as its base


def _store_entry(entry: Path, prefix: str, array: np.ndarray) -> None:
    """Write ``entry`` atomically and remove older versions; any failure just leaves no entry.

    Concurrent writers each write their own temporary file and ``os.replace`` it: readers see
    the old entry, no entry or a whole one, and the last rename wins with identical content.
    No fsync: an entry damaged by a crash fails the checks of :func:`_load_entry` and is rewritten.
    """
    folder = entry.parent
    tmp = folder / f".{entry.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                np.lib.format.write_array(f, array, allow_pickle=False)
            os.replace(tmp, entry)
        finally:
            tmp.unlink(missing_ok=True)
    except (OSError, ValueError):  # read-only or full disk, a file in the way, ...: read the .gz next time too
        return
    now = time.time()
    for old in folder.glob(f"{prefix}*.npy"):  # the prefix is only word characters, dots and dashes
        _remove(old, keep=old == entry)
    for old in folder.glob(f".{prefix}*.tmp"):
        _remove(old, keep=_age(old, now) < _STALE_TMP_SECONDS)


def _age(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except OSError:
        return 0.0


def _remove(path: Path, *, keep: bool) -> None:
    if not keep:
        try:
            path.unlink(missing_ok=True)
        except OSError:  # e.g. mapped by another process on Windows: it goes next time
            pass


def load_idx(path: Path, spec: IdxFile) -> np.ndarray:
    """Verified uint8 array of ``path``, read once per process while the file is unchanged, and
    from the disk cache (:func:`cache_dir`) in later processes until the file changes.

    The returned array is read-only and shared: derive new arrays from it, never modify it.
    """
    try:
        st = path.stat()
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    stamp = _stamp(st)
    resolved = path.resolve()
    key = (resolved, spec)  # errors still name the path the user configured
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        folder = cache_dir()
        entry, prefix = _entry_path(folder, resolved, spec, stamp) if folder else (None, "")
        array = _load_entry(entry, spec) if entry else None
        if array is None:
            array = read_idx_file(path, spec)
            if entry and _settled(st) and _stamp_of(path) == stamp:  # not a file that changed meanwhile
                _store_entry(entry, prefix, array)
        _cache[key] = (stamp, array)
        return array


def clear_cache() -> None:
    """Forget every array cached in memory (e.g. in tests); the disk cache stays (delete its folder)."""
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
