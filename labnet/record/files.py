"""Files that are whole or absent, folders that are a run's own, and disk errors that name the path."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
import time
from pathlib import Path

from labnet.errors import LabnetError


class RecordError(LabnetError):
    """A run's record cannot be written: a full disk, a folder that is not writable or is taken."""


def disk_error(path: Path, err: OSError) -> RecordError:
    """A user-facing error for a failed write, naming the path and what to do."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return RecordError(
            f"the disk holding {path} is full ({err.strerror}); free some space there (or point hydra.run.dir "
            "at another disk) and run the same command again: what the run recorded so far is kept"
        )
    return RecordError(f"cannot write {path}: {err.strerror or err}")


@contextlib.contextmanager
def atomic_file(path: Path):
    """A binary file to write ``path`` through: written under a temporary name beside it and renamed into
    place when the block ends, so ``path`` is never half a file; a failed write names the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise disk_error(path, err) from err
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # (mkstemp makes it private; the file is as any other the user writes)
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except OSError as err:
        raise disk_error(path, err) from err
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def unique_folder(base: str) -> str:
    """``base`` plus a short random part, created exclusively: a folder no other run or sweep can take,
    still readable (``outputs/2026-11-29/14-30-05-a3f1``)."""
    for _ in range(100):
        candidate = Path(f"{base}-{secrets.token_hex(2)}")
        candidate.parent.mkdir(parents=True, exist_ok=True)
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return str(candidate)
    raise RecordError(f"no free folder name next to {base} after 100 tries")


def stamp() -> float:
    """Wall-clock seconds, comparable across a sweep's processes and machines."""
    return time.time()


FOLDER_RESOLVER = "labnet.folder"


def register_resolvers() -> None:
    """``${labnet.folder:BASE}`` in ``hydra.run.dir`` / ``hydra.sweep.dir``: a folder of its own for each run
    and sweep. Cached like Hydra's ``${now:...}``, so a sweep's jobs see the folder their sweep was given."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(FOLDER_RESOLVER):
        OmegaConf.register_new_resolver(FOLDER_RESOLVER, unique_folder, use_cache=True)
