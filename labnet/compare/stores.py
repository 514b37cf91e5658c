"""Reading a tracking store, behind one interface (experiments, run, children, tagged, newest_sweeps,
experiment_runs, has_runs; each run a record, :mod:`labnet.compare.records`): a local SQLite file read directly
and read-only, without importing MLflow, any other store through MLflow's client. `labnet compare` reads its
runs here, and the studies plugin an earlier job's folder."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from labnet.compare.records import MAX_RESULTS, CompareError, last_activity, record_from_run
from labnet.store_uri import SQLITE, is_server, server_problem, sqlite_path


def default_uri() -> str:
    """MLflow's default tracking URI, worked out without importing MLflow (2+ s): mlflow.db in this folder
    (MLflow 3), or ./mlruns when that holds experiments or MLflow is older than 3 (as MLflow itself decides)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major = int(version("mlflow").split(".")[0])
    except (PackageNotFoundError, ValueError):
        major = 3
    mlruns = Path("mlruns")
    has_mlruns = mlruns.is_dir() and any(
        p.is_dir() and p.name.isdigit() and (p / "meta.yaml").exists() for p in mlruns.iterdir()
    )
    if major < 3 or has_mlruns:
        return mlruns.resolve().as_uri()
    return f"{SQLITE}{Path('mlflow.db').resolve()}"


def resolve_uri(arg: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else MLflow's default; the path of a .db file becomes sqlite:///."""
    uri = arg or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return default_uri()
    if "://" not in uri and (uri.endswith((".db", ".sqlite", ".sqlite3")) or Path(uri).is_file()):
        return f"{SQLITE}{Path(uri).expanduser().resolve()}"
    return uri


def check_store(uri: str) -> None:
    """Fail fast, and without creating anything, on a store that does not exist or cannot be reached."""
    path = sqlite_path(uri)
    if path is not None:
        if not path.is_file() or path.stat().st_size == 0:
            raise CompareError(
                f"no MLflow store at {uri}: {path.resolve()} does not exist, nothing has been tracked there. Run "
                "labnet compare where you trained, or point --tracking-uri (or $MLFLOW_TRACKING_URI) at your store"
            )
    elif is_server(uri):
        if (problem := server_problem(uri)) is not None:
            raise CompareError(f"the MLflow tracking server at {uri} cannot be reached ({problem})")
    elif "://" not in uri or uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        folder = Path(unquote(urlparse(uri).path) if uri.startswith("file:") else uri).expanduser()
        if not folder.is_dir():
            raise CompareError(
                f"no MLflow store at {uri}: {folder} is not a folder; point --tracking-uri at your store"
            )


def open_store(uri: str, mlflow_client: bool = False):
    """The store at ``uri``: read directly when it is a SQLite file with MLflow's tables, else through MLflow."""
    check_store(uri)
    path = sqlite_path(uri)
    if path is not None and not mlflow_client:
        try:
            return SqliteStore(uri, path)
        except SqliteStore.Unsupported:
            pass
    return MlflowStore(uri)


class SqliteStore:
    """MLflow's SQLite store read directly and read-only: a fixed number of queries, no MLflow import.

    It reads what ``MlflowClient.search_runs`` returns for active runs of active experiments: the
    ``runs`` row, every param and tag, and the latest value of every metric (``latest_metrics``).
    """

    class Unsupported(Exception):
        """The file is SQLite but its tables are not (or no longer) the ones this reader knows."""

    TABLES = {
        "runs": {"run_uuid", "name", "status", "start_time", "end_time", "lifecycle_stage", "experiment_id"},
        "experiments": {"experiment_id", "name", "lifecycle_stage"},
        "params": {"key", "value", "run_uuid"},
        "tags": {"key", "value", "run_uuid"},
        "latest_metrics": {"key", "value", "is_nan", "run_uuid"},
    }
    ACTIVE = (
        "r.lifecycle_stage = 'active' AND r.experiment_id IN "
        "(SELECT experiment_id FROM experiments WHERE lifecycle_stage = 'active')"
    )

    def __init__(self, uri: str, path: Path) -> None:
        self.uri = uri
        try:
            self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            for table, needed in self.TABLES.items():
                have = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
                if not needed <= have:
                    raise self.Unsupported(f"table {table} lacks {sorted(needed - have)}")
        except sqlite3.Error as err:
            raise self.Unsupported(str(err)) from None

    def close(self) -> None:
        self.db.close()

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.Error as err:
            raise CompareError(f"cannot read the MLflow store {self.uri}: {err}") from None

    def experiments(self) -> dict[str, str]:
        rows = self._query("SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'")
        return {str(i): n for i, n in rows}

    def _runs(self, where: str, args: tuple = (), order: str = "", limit: int | None = None) -> list[dict[str, Any]]:
        """Runs matching ``where`` (over ``runs r``) with their params, tags and metrics: four queries in all."""
        select = f"SELECT r.run_uuid FROM runs r WHERE {self.ACTIVE} AND ({where}) {order}"
        if limit is not None:
            select += f" LIMIT {int(limit)}"
        rows = self._query(
            f"SELECT run_uuid, name, experiment_id, status, start_time, end_time FROM runs "
            f"WHERE run_uuid IN ({select})",
            args,
        )
        records = {
            run_id: {
                "run_id": run_id,
                "run_name": name,
                "experiment_id": str(experiment_id),
                "status": status,
                "start_time": start,
                "end_time": end,
                "params": {},
                "metrics": {},
                "tags": {},
            }
            for run_id, name, experiment_id, status, start, end in rows
        }
        if not records:
            return []
        for table, field in (("params", "params"), ("tags", "tags")):
            for run_id, key, value in self._query(
                f"SELECT run_uuid, key, value FROM {table} WHERE run_uuid IN ({select})", args
            ):
                records[run_id][field][key] = value
        for run_id, key, value, is_nan in self._query(
            f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({select})", args
        ):
            records[run_id]["metrics"][key] = float("nan") if is_nan else float(value)
        return list(records.values())

    def run(self, run_id: str) -> dict[str, Any] | None:
        found = self._runs("r.run_uuid = ?", (run_id,))
        return found[0] if found else None

    def children(self, parent_run_id: str) -> list[dict[str, Any]]:
        return self.tagged("mlflow.parentRunId", parent_run_id)

    def tagged(self, key: str, value: str) -> list[dict[str, Any]]:
        return self._runs("r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)", (key, value))

    def newest_sweeps(self, n: int) -> list[dict[str, Any]]:
        found = self._runs(
            "r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = 'labnet.role' AND value = 'sweep')",
            order="ORDER BY MAX(COALESCE(r.start_time, 0), COALESCE(r.end_time, 0)) DESC",
            limit=n,
        )
        return sorted(found, key=last_activity, reverse=True)

    def experiment_runs(self, experiment_id: str) -> list[dict[str, Any]]:
        return self._runs("r.experiment_id = ?", (int(experiment_id) if experiment_id.isdigit() else experiment_id,))

    def has_runs(self) -> bool:
        return bool(self._query(f"SELECT 1 FROM runs r WHERE {self.ACTIVE} LIMIT 1"))


class MlflowStore:
    """Any MLflow store, through ``MlflowClient.search_runs``: one query per question, never one per run."""

    def __init__(self, uri: str) -> None:
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = uri
        self.client = MlflowClient(uri)
        self._experiments: dict[str, str] | None = None

    def close(self) -> None:
        pass

    def experiments(self) -> dict[str, str]:
        if self._experiments is None:
            found = self.client.search_experiments(max_results=MAX_RESULTS)
            self._experiments = {e.experiment_id: e.name for e in found}
        return self._experiments

    def _search(self, filter_string: str = "", ids=None, order_by=None, max_results=MAX_RESULTS):
        ids = list(self.experiments()) if ids is None else ids
        if not ids:
            return []
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                ids, filter_string=filter_string, max_results=max_results, order_by=order_by, page_token=token
            )
            runs.extend(record_from_run(r) for r in page)
            token = page.token
            if not token or len(runs) >= max_results:
                return runs

    def run(self, run_id: str) -> dict[str, Any] | None:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        if run.info.lifecycle_stage != "active" or run.info.experiment_id not in self.experiments():
            return None
        return record_from_run(run)

    def children(self, parent_run_id: str) -> list[dict[str, Any]]:
        return self._search(f"tags.mlflow.parentRunId = '{parent_run_id}'")

    def tagged(self, key: str, value: str) -> list[dict[str, Any]]:
        return self._search(f"tags.`{key}` = '{value}'")

    def newest_sweeps(self, n: int) -> list[dict[str, Any]]:
        flt = "tags.`labnet.role` = 'sweep'"
        found = {
            r["run_id"]: r
            for order in ("attributes.start_time DESC", "attributes.end_time DESC")
            for r in self._search(flt, order_by=[order], max_results=n)
        }
        return sorted(found.values(), key=last_activity, reverse=True)[:n]

    def experiment_runs(self, experiment_id: str) -> list[dict[str, Any]]:
        return self._search(ids=[experiment_id])

    def has_runs(self) -> bool:
        return bool(self._search(max_results=1))
