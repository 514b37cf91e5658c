"""Checkpoints and weights as ``.npz`` files, never unpickled.

A checkpoint holds the model state (``model/...``), the optimizer state
(``optim/...``), the position in training and the RNG state, so a resumed run
continues bit for bit where the interrupted one stopped.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from labnet.errors import DataError
from labnet.record.files import atomic_file


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` atomically (temporary file, then rename): a crash never leaves half a file."""
    with atomic_file(Path(path)) as f:
        np.savez(f, **arrays)
    return Path(path)


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.npz`` without unpickling; object arrays are refused with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such checkpoint or weights file: {path}")
    with path.open("rb") as f:
        head = f.read(6)
    if not head.startswith(b"PK\x03\x04"):  # an .npz is a zip; numpy would take most other files for a pickle
        what = {
            b"\x80": "a pickle, which labnet never loads (unpickling can run any code)",
            b"\x93": "a single .npy array, not an .npz of named arrays",
        }.get(head[:1], "not a NumPy .npz file")
        raise DataError(f"{path} is {what}; checkpoints and weights are .npz files of numeric arrays (np.savez)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise DataError(
                f"{path} contains object arrays, which would need unpickling; labnet loads only plain "
                "numeric arrays (np.savez of float/int arrays) and refuses pickles for safety"
            ) from None
        raise DataError(f"{path} is not a readable .npz file: {err}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:  # e.g. cut short by a full disk
        raise DataError(f"{path} is not a readable .npz file: {err}") from None


def encode_json(value) -> np.ndarray:
    """A JSON value as a 0-d unicode array: storable in an .npz without pickling."""
    return np.asarray(json.dumps(value))


def decode_json(array: np.ndarray):
    return json.loads(str(array))


def load_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A checkpoint written by labnet's trainer (``trainer.resume``), or a ConfigError saying it is none."""
    state = load_npz(path)
    if "epoch" not in state or "rng" not in state:
        from labnet.errors import ConfigError

        raise ConfigError(f"trainer.resume={path} is not a labnet checkpoint (no epoch / rng entries)")
    return state
