"""`labnet compare`: a sweep's (or an experiment's) runs side by side, read back from the tracking store.

    labnet compare                         # the latest sweep in ./mlflow.db (or $MLFLOW_TRACKING_URI)
    labnet compare --sweep RUN_ID          # a sweep by its parent run id (or its labnet.sweep_id)
    labnet compare --experiment spiral     # every run of an experiment, sweep parents left out
    labnet compare --format csv|json|markdown --plot objective_vs_lr.png
    labnet compare --metrics lr,health/grad_norm   # more metrics (final values) as columns

One row per run: the params that differ between the runs, the objective (``best_<labnet.objective>``),
the final val_accuracy / test_accuracy / train_loss, status and duration; best first, failed runs last.

Reading the store (:mod:`labnet.compare.stores`) costs a fixed handful of queries, never one per run.
Any store is read through ``MlflowClient.search_runs`` (``MlflowStore``), but for a local SQLite file
that path spends 4+ CPU seconds importing MLflow and its SQLAlchemy models before the first query, so a
SQLite file is read directly, read-only, with the standard library (``SqliteStore``: the same runs,
params, tags and latest metrics MLflow itself would return; see tests/test_compare.py). If the file's
tables do not look like MLflow's, or with ``--mlflow-client``, the MLflow client is used. This module
parses the arguments, finds the runs asked for and prints them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

from labnet.compare.formats import FORMATS, format_rows, title_line
from labnet.compare.records import CompareError, last_activity
from labnet.compare.rows import build_rows, sort_rows, varying_params
from labnet.compare.stores import default_uri, open_store, resolve_uri

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SWEEP_ID_RE = re.compile(r"^[0-9A-Za-z_.-]+$")


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
        "--metrics",
        type=metric_names,
        default=[],
        metavar="A,B",
        help="also show these metrics' final values as columns (a plugin's own, e.g. lr)",
    )
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


def metric_names(text: str) -> list[str]:
    """``--metrics a,b``: the names, in order, without repeats (argparse reports a ValueError as a usage error)."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"{text!r}: give metric names separated by commas, e.g. lr,train_loss")
    return list(dict.fromkeys(names))


def check_metrics(records: list[dict[str, Any]], wanted: list[str]) -> None:
    """A CompareError for a metric no run logged, listing those that were."""
    logged = sorted({m for record in records for m in record.get("metrics", {})})
    unknown = [m for m in wanted if m not in logged]
    if unknown:
        raise CompareError(
            f"--metrics: no run logged {', '.join(map(repr, unknown))}; the runs logged: {', '.join(logged) or 'none'}"
        )


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


#: how long `labnet compare` waits for runs of its folder that ended but are not in MLflow yet
ARRIVING_SECONDS = 60.0


def wait_for_arriving_runs(uri: str, timeout: float = ARRIVING_SECONDS) -> None:
    """Runs trained in this folder moments ago may still be on their way to MLflow (the background syncer
    mirrors them after the command returned): wait for those that ended, so that `labnet compare` right after
    `python -m labnet` shows them instead of an empty or missing store. A run still training is not waited for
    (MLflow shows it RUNNING), nor one whose sync already failed (the store is down: `labnet sync` says why)."""
    from labnet.record.journal import owner_alive
    from labnet.tracking.mirror import sync_error
    from labnet.tracking.syncer import pending, wait_for

    workdir = Path.cwd()
    default = default_uri()  # (a run registered without tracking.uri goes to MLflow's default store here)
    arriving = [
        folder
        for _, folder, marked in pending(workdir)
        if (marked or default) == uri and folder.is_dir() and not owner_alive(folder) and not sync_error(folder)
    ]
    if not arriving:
        return
    print(f"labnet compare: waiting for {len(arriving)} run(s) of this folder to reach MLflow", file=sys.stderr)
    if not wait_for(workdir, arriving, timeout):
        print(
            "labnet compare: warning: some runs of this folder are not in MLflow yet; `labnet sync --wait` says why",
            file=sys.stderr,
        )


def _compare(args: argparse.Namespace) -> int:
    uri = resolve_uri(args.tracking_uri)
    wait_for_arriving_runs(uri)
    store = open_store(uri, mlflow_client=args.mlflow_client)
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
    check_metrics(records, args.metrics)
    rows = sort_rows(build_rows(records, params, args.metrics))
    shown = rows[: args.top] if args.top else rows
    text = format_rows(shown, params, args.format, args.metrics)
    if args.format == "table":
        print(title_line(title, rows))
    sys.stdout.write(text)
    if args.format == "table":
        for row in shown:
            if row["status"] == "FAILED" and row.get("error"):
                print(f"  {row['run_name']}: {row['error'].strip().splitlines()[0][:160]}")
    sys.stdout.flush()
    if args.plot:
        from labnet.compare.plot import plot_objective

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
            parent = max(parents, key=last_activity)
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


def _sweep_title(parent: dict[str, Any], experiments: dict[str, str]) -> str:
    where = f", experiment {experiments[parent['experiment_id']]}" if parent["experiment_id"] in experiments else ""
    name = parent["run_name"] or ""
    return f"{name if name.startswith('sweep') else 'sweep ' + name} (parent run {parent['run_id']}{where})"
