"""The MLflow store a run goes to: its URI, whether it can be reached, and how a new one is created (whole, under
a lock)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sys
from pathlib import Path

from labnet.errors import TrackingError
from labnet.store_uri import SQLITE, absolute_store_uri, is_server, server_problem, sqlite_path

PARENT_RUN_ENV = "LABNET_MLFLOW_PARENT_RUN_ID"
EXPERIMENT_ENV = "LABNET_MLFLOW_EXPERIMENT_ID"


def explicit_uri(tracking_cfg) -> str | None:
    """``tracking.uri``, else ``MLFLOW_TRACKING_URI``; inside a sweep the store its parent run lives in."""
    if os.environ.get(PARENT_RUN_ENV) and os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    uri = tracking_cfg.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or None
    return absolute_store_uri(uri) if uri else None


def experiment_name(cfg) -> str:
    """The MLflow experiment a run goes to: ``tracking.experiment``, else its data set's name."""
    return cfg.tracking.get("experiment") or cfg.dataset.name


def on_error_policy(tracking_cfg) -> str:
    """``tracking.on_error``: ``fail`` (stop the run, or a sweep before its jobs) or ``warn`` (go on without it)."""
    from labnet.errors import ConfigError

    policy = tracking_cfg.get("on_error", "fail")
    if policy not in ("fail", "warn"):
        raise ConfigError(f"tracking.on_error={policy!r}: accepted are fail, warn")
    return policy


def check_reachable(uri: str | None) -> None:
    """Fail fast, before training, on a store that cannot be reached."""
    if not uri:
        return
    if is_server(uri):
        if (problem := server_problem(uri)) is not None:
            raise TrackingError(
                f"the MLflow tracking server at tracking.uri={uri} cannot be reached ({problem}); start it, fix "
                "tracking.uri, or train without it: tracking.on_error=warn (the run is recorded in its folder "
                "and `labnet sync` uploads it later) or tracking=none"
            )
    elif (path := sqlite_path(uri)) is not None:
        folder = path.parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(
                f"tracking.uri={uri}: the folder {folder} does not exist or is not writable; "
                "point tracking.uri at a writable place, or use tracking=none"
            )


def reachable_or_warn(tracking_cfg, uri: str | None, without: str) -> bool:
    """Whether the store at ``uri`` can be reached; if not, a TrackingError (``tracking.on_error=fail``)
    or a warning that what comes next goes on ``without`` MLflow, and False."""
    try:
        check_reachable(uri)
    except TrackingError as err:
        if on_error_policy(tracking_cfg) == "fail":
            raise
        print(f"labnet: warning: {err}; {without}", file=sys.stderr)
        return False
    return True


@contextlib.contextmanager
def store_lock(uri: str):
    """Held while a SQLite store is opened for the first time by a process: MLflow creates and migrates its
    tables on first use, and two processes doing it at once fail ('table experiments already exists')."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def create_whole(uri: str) -> None:
    """Create a missing SQLite store whole or not at all (call under :func:`store_lock`).

    MLflow builds a new database by running its ~60 schema migrations in place, for seconds; a process killed
    meanwhile (Ctrl-C twice, SIGKILL) leaves a file no later process can open ('table ... already exists').
    Built under a temporary name and linked into place, the store is either absent or complete.

    Other programs create the same file in place without labnet's lock: ``python -m labnet && mlflow ui``
    starts the UI while the run's syncer may be building the store. The one that got there first keeps it:
    a store that appeared meanwhile is not replaced (the UI would fail on its vanished file), and a store
    still being made by another program is waited for (opening it would migrate it a second time)."""
    path = sqlite_path(uri)
    if path is None:
        return
    if path.exists():
        wait_until_made(path)
        return
    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in path.parent.glob(f".{path.name}.*.partial*"):  # (a creator killed earlier: the lock is ours)
        stale.unlink(missing_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        # (the artifact root MLflow itself would give the store's Default experiment)
        store = SqlAlchemyStore(f"{SQLITE}{partial}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
        store.engine.dispose()
        try:
            os.link(partial, path)  # (only where no file is: unlike a rename, it never replaces one)
        except FileExistsError:  # another program made it meanwhile: theirs stays
            wait_until_made(path)
    finally:
        partial.unlink(missing_ok=True)


#: how long a store another program is creating is waited for (MLflow's migrations take seconds)
MADE_WAIT_SECONDS = 120.0
SETTLED_SECONDS = 30.0  # a store file unchanged this long is not being made by anyone


def wait_until_made(path: Path, timeout: float = MADE_WAIT_SECONDS) -> None:
    """Return once the SQLite store at ``path`` has MLflow's whole schema, or was last written long ago (an
    older schema is MLflow's to report), or after ``timeout`` (what MLflow then says is reported as usual)."""
    import time

    deadline = time.monotonic() + timeout
    head = None
    while time.monotonic() < deadline:
        try:
            if time.time() - path.stat().st_mtime > SETTLED_SECONDS:
                return
        except OSError:
            return
        if head is None:
            head = _latest_schema()
            if head is None:
                return
        if _schema_of(path) == head:
            return
        time.sleep(0.2)


@functools.cache
def _latest_schema() -> str | None:
    """The schema revision this MLflow creates (None: it cannot say). Once per process: MLflow reads it from its
    ~60 migration scripts (~0.4 s), and a sweep's launching process opens its store several times."""
    try:
        from mlflow.store.db.utils import _get_latest_schema_revision

        return _get_latest_schema_revision()
    except Exception:
        return None


def _schema_of(path: Path) -> str | None:
    """The schema revision a SQLite store is at, read without writing (None: not yet, or not readable)."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None
