"""What an MLflow tracking URI names — a SQLite file, a tracking server — read without importing MLflow, and
whether a server answers: the rules the tracker (which writes a store) and `labnet compare` (which reads one)
both apply, kept here once."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from urllib.parse import unquote

SQLITE = "sqlite:///"
SERVER_SCHEMES = ("http://", "https://")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, absolute (``~`` expanded, %-escapes decoded as SQLAlchemy
    decodes them, the query left out); None for any other URI or an in-memory database."""
    if not uri.startswith(SQLITE):
        return None
    name = unquote(uri[len(SQLITE) :].split("?")[0])
    return Path(name).expanduser().resolve() if name and name != ":memory:" else None


def absolute_store_uri(uri: str) -> str:
    """A relative ``sqlite:///file`` made absolute, so jobs running in other folders (Ray) find the same store."""
    if uri.startswith(SQLITE) and not uri[len(SQLITE) :].startswith("/"):
        return SQLITE + str(Path(uri[len(SQLITE) :]).expanduser().resolve())
    return uri


def is_server(uri: str) -> bool:
    return uri.startswith(SERVER_SCHEMES)


def server_problem(uri: str, timeout: float = 5.0) -> str | None:
    """Why the tracking server at ``uri`` cannot be used (its ``/health`` does not answer), or None."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
            response.read()
    except Exception as err:
        return str(err)
    return None
