"""`labnet compare`: a sweep's (or an experiment's) runs side by side, read back from the tracking store.

    labnet compare                         # the latest sweep in ./mlflow.db (or $MLFLOW_TRACKING_URI)
    labnet compare --sweep RUN_ID          # a sweep by its parent run id (or its labnet.sweep_id)
    labnet compare --experiment spiral     # every run of an experiment, sweep parents left out
    labnet compare --format csv|json|markdown --plot objective_vs_lr.png

One row per run: the params that differ between the runs, the objective (``best_<labnet.objective>``),
the final val_accuracy / test_accuracy / train_loss, status and duration; best first, failed runs last.

Reading the store costs a fixed handful of queries, never one per run. Any store is read through
``MlflowClient.search_runs`` (:class:`MlflowStore`), but for a local SQLite file that path spends
4+ CPU seconds importing MLflow and its SQLAlchemy models before the first query, so a SQLite file is
read directly, read-only, with the standard library (:class:`SqliteStore`: the same runs, params, tags
and latest metrics MLflow itself would return; see tests/test_compare.py). If the file's tables do not
look like MLflow's, or with ``--mlflow-client``, the MLflow client is used. The functions at the end
are pure (MLflow ``Run`` objects or plain dicts in, rows and text out) so that tests call them directly.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import re
import sqlite3
import sys
import urllib.request
from pathlib import Path
from typing import Any

from labnet.config import RUN_INVARIANT_PREFIXES
from labnet.errors import LabnetError
from labnet.train.objective import minimizes

FORMATS = ("table", "csv", "json", "markdown")
#: final values of these metrics are shown for every run (test_accuracy only when some run has it)
MAIN_METRICS = ("val_accuracy", "test_accuracy", "train_loss")
IGNORED_PARAM_PREFIXES = RUN_INVARIANT_PREFIXES
MAX_RESULTS = 50_000  # MLflow's upper limit for one search_runs page
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SWEEP_ID_RE = re.compile(r"^[0-9A-Za-z_.-]+$")


class CompareError(LabnetError):
    """A store, sweep, run or experiment that `labnet compare` cannot find or read."""


# -- the command -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="labnet compare",
        description="Compare the runs of a sweep (default: the latest one) or of an experiment, best first.",
    )
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI, or the path of an mlflow.db file (default: $MLFLOW_TRACKING_URI, "
        "else MLflow's default: mlflow.db in the current folder)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sweep", metavar="ID", help="a sweep's parent run id, or its sweep id (tag labnet.sweep_id)")
    which.add_argument("--experiment", metavar="NAME", help="every run of this experiment (sweep parents left out)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw the objective against optimizer.lr into FILE")
    parser.add_argument("--top", type=int, metavar="N", help="show only the best N runs")
    parser.add_argument(
        "--all-params",
        action="store_true",
        help="also show varying params that do not change what a run computes (tracking.*, trainer.threads, ...)",
    )
    parser.add_argument(
        "--mlflow-client",
        action="store_true",
        help="read a SQLite store through MLflow's client too (slower to start; the same result)",
    )
    return parser


def compare_command(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a bad option: argparse's message and exit code 2
    if args.top is not None and args.top < 1:
        parser.error(f"--top {args.top}: must be at least 1")
    if args.plot and not args.plot.lower().endswith(".png"):
        parser.error(f"--plot {args.plot}: the file name must end in .png")
    try:
        return _compare(args)
    except CompareError as err:
        print(f"labnet compare: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labnet compare: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `labnet compare | head`: the reader has all it wanted
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as err:
        if os.environ.get("LABNET_DEBUG") == "1":
            raise
        lines = str(err).strip().splitlines()
        print(f"labnet compare: error: {type(err).__name__}: {lines[0] if lines else ''}", file=sys.stderr)
        print("(set LABNET_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1


def _compare(args: argparse.Namespace) -> int:
    store = open_store(resolve_uri(args.tracking_uri), mlflow_client=args.mlflow_client)
    try:
        if args.experiment:
            title, records = experiment_runs(store, args.experiment)
        elif args.sweep:
            title, records = sweep_runs(store, args.sweep)
        else:
            title, records = latest_sweep_runs(store)
    finally:
        store.close()
    if not records:
        raise CompareError(f"{title} has no runs (yet) in {store.uri}")
    params = varying_params(records, all_params=args.all_params)
    rows = sort_rows(build_rows(records, params))
    shown = rows[: args.top] if args.top else rows
    text = format_rows(shown, params, args.format)
    if args.format == "table":
        print(title_line(title, rows))
    sys.stdout.write(text)
    if args.format == "table":
        for row in shown:
            if row["status"] == "FAILED" and row.get("error"):
                print(f"  {row['run_name']}: {row['error'].strip().splitlines()[0][:160]}")
    sys.stdout.flush()
    if args.plot:
        from labnet.compare_plot import plot_objective

        try:
            path = plot_objective(rows, params, Path(args.plot), title=title)
        except ValueError as err:
            raise CompareError(f"--plot {args.plot}: {err}") from None
        except OSError as err:
            raise CompareError(f"--plot {args.plot}: cannot write the file ({err.strerror or err})") from None
        print(f"labnet compare: wrote {path}", file=sys.stderr)
    return 0


# -- finding the runs ---------------------------------------------------------------------------------------


def latest_sweep_runs(store) -> tuple[str, list[dict[str, Any]]]:
    """The runs of the newest sweep parent run across every experiment."""
    experiments = store.experiments()
    if not experiments:
        raise CompareError(f"the store {store.uri} has no experiments: nothing has been tracked there yet")
    parents = store.newest_sweeps(1)
    if not parents:
        if not store.has_runs():
            raise CompareError(f"the store {store.uri} has no runs yet (experiments: {_names(experiments)})")
        raise CompareError(
            f"the store {store.uri} has no sweeps (python -m labnet -m ...); compare the runs of one experiment "
            f"with --experiment NAME (experiments: {_names(experiments)})"
        )
    return _sweep_title(parents[0], experiments), store.children(parents[0]["run_id"])


def sweep_runs(store, sweep: str) -> tuple[str, list[dict[str, Any]]]:
    """The runs of a sweep given by its parent run id, its sweep id, or its run name ``sweep-<id>``."""
    sweep = sweep.strip()
    experiments = store.experiments()
    run = store.run(sweep) if RUN_ID_RE.match(sweep) else None
    if run is not None:
        children = store.children(run["run_id"])
        if children or _is_sweep_parent(run):
            return _sweep_title(run, experiments), children
        parent = run["tags"].get("mlflow.parentRunId")
        if parent:
            raise CompareError(f"run {sweep} ({run['run_name']}) is one job of a sweep; that sweep: --sweep {parent}")
        raise CompareError(
            f"run {sweep} ({run['run_name']}) is not a sweep (it has no child runs); compare single runs "
            f"with --experiment {experiments.get(run['experiment_id'], 'NAME')}"
        )
    sweep_id = sweep.removeprefix("sweep-")
    if SWEEP_ID_RE.match(sweep_id):
        tagged = store.tagged("labnet.sweep_id", sweep_id)
        parents = [r for r in tagged if _is_sweep_parent(r)]
        if parents:
            parent = max(parents, key=_last_activity)
            return _sweep_title(parent, experiments), store.children(parent["run_id"])
        if tagged:  # jobs whose parent run is gone, or a sweep run again under its first parent run
            return f"sweep {sweep_id}", tagged
    recent = store.newest_sweeps(5)
    known = (
        "latest sweeps: " + ", ".join(f"{p['run_id']} ({p['run_name']})" for p in recent)
        if recent
        else "the store has no sweeps"
    )
    raise CompareError(f"no sweep with run id or sweep id {sweep!r} in {store.uri}; {known}")


def experiment_runs(store, name: str) -> tuple[str, list[dict[str, Any]]]:
    """Every top-level and child run of an experiment (by name, or by id), without sweep parent runs."""
    experiments = store.experiments()
    found = next((i for i, n in experiments.items() if n == name), None)
    if found is None and name in experiments:
        found = name
    if found is None:
        raise CompareError(f"no experiment {name!r} in {store.uri}; experiments: {_names(experiments)}")
    runs = [r for r in store.experiment_runs(found) if not _is_sweep_parent(r)]
    return f"experiment {experiments[found]}", runs


def _names(experiments: dict[str, str]) -> str:
    return ", ".join(sorted(experiments.values())) or "none"


def _is_sweep_parent(record: dict[str, Any]) -> bool:
    return record.get("tags", {}).get("labnet.role") == "sweep"


def _last_activity(record: dict[str, Any]) -> int:
    # a sweep run again continues its old parent run, so the newest sweep is the newest start *or* end
    return max(record.get("start_time") or 0, record.get("end_time") or 0)


def _sweep_title(parent: dict[str, Any], experiments: dict[str, str]) -> str:
    where = f", experiment {experiments[parent['experiment_id']]}" if parent["experiment_id"] in experiments else ""
    name = parent["run_name"] or ""
    return f"{name if name.startswith('sweep') else 'sweep ' + name} (parent run {parent['run_id']}{where})"


# -- reading the store ------------------------------------------------------------------------------------


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
    return f"sqlite:///{Path('mlflow.db').resolve()}"


def resolve_uri(arg: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else MLflow's default; the path of a .db file becomes sqlite:///."""
    uri = arg or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return default_uri()
    if "://" not in uri and (uri.endswith((".db", ".sqlite", ".sqlite3")) or Path(uri).is_file()):
        return f"sqlite:///{Path(uri).expanduser().resolve()}"
    return uri


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    from urllib.parse import unquote

    name = unquote(uri[len("sqlite:///") :].split("?")[0])
    return Path(name).expanduser() if name and name != ":memory:" else None


def check_store(uri: str) -> None:
    """Fail fast, and without creating anything, on a store that does not exist or cannot be reached."""
    path = _sqlite_path(uri)
    if path is not None:
        if not path.is_file() or path.stat().st_size == 0:
            raise CompareError(
                f"no MLflow store at {uri}: {path.resolve()} does not exist, nothing has been tracked there. Run "
                "labnet compare where you trained, or point --tracking-uri (or $MLFLOW_TRACKING_URI) at your store"
            )
    elif uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
                response.read()
        except Exception as err:
            raise CompareError(f"the MLflow tracking server at {uri} cannot be reached ({err})") from None
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
    path = _sqlite_path(uri)
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
        return sorted(found, key=_last_activity, reverse=True)

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
        return sorted(found.values(), key=_last_activity, reverse=True)[:n]

    def experiment_runs(self, experiment_id: str) -> list[dict[str, Any]]:
        return self._search(ids=[experiment_id])

    def has_runs(self) -> bool:
        return bool(self._search(max_results=1))


# -- pure functions: runs -> rows -> text -----------------------------------------------------------------


def record_from_run(run) -> dict[str, Any]:
    """An MLflow ``Run`` (or an already plain dict of the same content) as a plain dict."""
    if isinstance(run, dict):
        return run
    info, data = run.info, run.data
    return {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment_id": info.experiment_id,
        "status": info.status,
        "start_time": info.start_time,
        "end_time": info.end_time,
        "params": dict(data.params),
        "metrics": dict(data.metrics),
        "tags": dict(data.tags),
    }


def parse_value(text: Any) -> Any:
    """A param as MLflow stores it (a string) back as a number, bool or None where it is one."""
    if not isinstance(text, str):
        return text
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def varying_params(records: list[dict[str, Any]], all_params: bool = False) -> list[str]:
    """Params with more than one value among the runs that have them, sorted by name.

    A param only some runs have (``optimizer.beta1`` exists for adam, not for sgd) varies only if those
    runs disagree on it; bookkeeping params (``tracking.*``, ``trainer.threads``, ...) are left out unless
    ``all_params``.
    """
    values: dict[str, set[str]] = {}
    for record in records:
        for key, value in record.get("params", {}).items():
            values.setdefault(key, set()).add(str(value))
    keys = sorted(k for k, v in values.items() if len(v) > 1)
    if not all_params:
        keys = [k for k in keys if not k.startswith(IGNORED_PARAM_PREFIXES)]
    return keys


def objective_of(record: dict[str, Any]) -> str:
    return record.get("tags", {}).get("labnet.objective") or "val_accuracy"


def lower_is_better(objective: str) -> bool:
    return minimizes(objective)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def build_rows(records: list[dict[str, Any]], params: list[str]) -> list[dict[str, Any]]:
    """One row per run: run name, the given params (as stored, strings), objective, main metrics, status, duration."""
    rows = []
    for record in records:
        metrics, tags = record.get("metrics", {}), record.get("tags", {})
        objective = objective_of(record)
        start, end = record.get("start_time"), record.get("end_time")
        row: dict[str, Any] = {"run_name": record.get("run_name")}
        row.update({k: record.get("params", {}).get(k) for k in params})
        row["objective_metric"] = f"best_{objective}"
        row["objective"] = metrics.get(f"best_{objective}")
        row.update({m: metrics.get(m) for m in MAIN_METRICS})
        row["status"] = record.get("status")
        row["duration_s"] = (end - start) / 1000 if start and end and end >= start else None
        row["run_id"] = record.get("run_id")
        row["error"] = tags.get("labnet.error")
        rows.append(row)
    return rows


def sort_key(row: dict[str, Any]) -> tuple:
    """Best first: runs with an objective (higher accuracy / lower loss first), then runs without one, failed last."""
    value = _finite(row.get("objective"))
    failed = row.get("status") == "FAILED"
    if value is None:
        return (1 + failed, 0.0, row.get("run_name") or "", row.get("run_id") or "")
    sign = 1.0 if lower_is_better(row.get("objective_metric", "")) else -1.0
    return (2 if failed else 0, sign * value, row.get("run_name") or "", row.get("run_id") or "")


def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=sort_key)


def columns(rows: list[dict[str, Any]], params: list[str], fmt: str) -> list[str]:
    """The columns a format shows: test_accuracy only when some run has it; machine formats also keep
    objective_metric and error, the human ones name the objective in the header instead."""
    metrics = [m for m in MAIN_METRICS if m != "test_accuracy" or any(r.get(m) is not None for r in rows)]
    if fmt in ("csv", "json"):
        return [
            "run_name",
            *params,
            "objective_metric",
            "objective",
            *metrics,
            "status",
            "duration_s",
            "run_id",
            "error",
        ]
    return ["run_name", *params, "objective", *metrics, "status", "duration_s", "run_id"]


def _objective_header(rows: list[dict[str, Any]]) -> str:
    names = {r.get("objective_metric") for r in rows}
    return names.pop() if len(names) == 1 else "objective"


def _cell(key: str, value: Any, params: list[str]) -> str:
    """A value as the human formats show it: params as stored, metrics with 4 decimals, durations in seconds."""
    if value is None:
        return ""
    if key in params or isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if key == "duration_s":
            return f"{value:.1f}"
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def _is_numeric(key: str, rows: list[dict[str, Any]], params: list[str]) -> bool:
    if key == "run_id":
        return False
    values = [parse_value(r.get(key)) if key in params else r.get(key) for r in rows]
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def format_rows(rows: list[dict[str, Any]], params: list[str], fmt: str = "table") -> str:
    """Rows as an aligned plain-text table, CSV, JSON (a list of objects) or a Markdown table."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    cols = columns(rows, params, fmt)
    if fmt == "json":
        objects = [{c: _json_value(c, r.get(c), params) for c in cols} for r in rows]
        return json.dumps(objects, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(cols)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
        return out.getvalue()
    headers = [_objective_header(rows) if c == "objective" else c for c in cols]
    body = [[_cell(c, r.get(c), params) for c in cols] for r in rows]
    right = [_is_numeric(c, rows, params) for c in cols]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join("---:" if rt else "---" for rt in right) + "|")
        lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(x) for x in column) for column in zip(headers, *body, strict=True)]

    def line(values: list[str]) -> str:
        cells = [v.rjust(w) if rt else v.ljust(w) for v, w, rt in zip(values, widths, right, strict=True)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in body)]) + "\n"


def _json_value(key: str, value: Any, params: list[str]) -> Any:
    if key in params:
        return parse_value(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN / inf are not JSON
    return value


def title_line(title: str, rows: list[dict[str, Any]]) -> str:
    failed = sum(1 for r in rows if r.get("status") == "FAILED")
    objective = _objective_header(rows)
    direction = ""
    if objective != "objective":
        direction = ", lower is better" if lower_is_better(objective) else ", higher is better"
    return (
        f"{title}: {len(rows)} run{'s' if len(rows) != 1 else ''}"
        + (f", {failed} failed" if failed else "")
        + f"; objective {objective}{direction}"
    )
