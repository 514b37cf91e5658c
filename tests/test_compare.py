"""`labnet compare`: a real 4-job sweep tracked into a temporary SQLite store, read back and compared."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

from labnet.cli.compare.command import compare_command  # noqa: E402
from labnet.compare.formats import format_rows  # noqa: E402
from labnet.compare.plot import choose_axes  # noqa: E402
from labnet.compare.rows import build_rows, sort_rows, varying_params  # noqa: E402

pytestmark = pytest.mark.xdist_group("compare")  # one worker: its stores are made once per module

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# (session, not module: pytest-xdist runs other modules' tests in between, and a module fixture was made twice)
@pytest.fixture(scope="session")
def sweep(tmp_path_factory, cli):
    """One 4-job sweep (sgd, adam x lr 0.01, 0.1) in a fresh store: its URI, the client, parent and children."""
    folder = tmp_path_factory.mktemp("compare")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    proc = cli(folder, "-m", "trainer.epochs=2", "optimizer=sgd,adam", "optimizer.lr=0.01,0.1", f"tracking.uri={uri}")
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("spiral")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get("labnet.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4
    return {"folder": folder, "uri": uri, "client": client, "parent": parent, "children": children}


def compare_json(capsys, *args: str) -> list[dict]:
    assert compare_command([*args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


# -- end to end -------------------------------------------------------------------------------------------


def test_latest_sweep_lists_every_child_best_first_with_objectives_from_mlflow(sweep, cli):
    proc = cli(sweep["folder"], "compare", "--tracking-uri", sweep["uri"], "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["run_id"] for r in rows} == {c.info.run_id for c in sweep["children"]}
    for row in rows:
        stored = sweep["client"].get_run(row["run_id"]).data.metrics
        assert row["objective_metric"] == "best_val_accuracy"
        assert row["objective"] == pytest.approx(stored["best_val_accuracy"])
        assert row["val_accuracy"] == pytest.approx(stored["val_accuracy"])
        assert row["train_loss"] == pytest.approx(stored["train_loss"])
        assert row["status"] == "FINISHED" and row["duration_s"] > 0
    objectives = [r["objective"] for r in rows]
    assert objectives == sorted(objectives, reverse=True)
    # the params that vary, parsed; the ones equal in every run (seed, epochs) are left out
    assert {(r["optimizer.name"], r["optimizer.lr"]) for r in rows} == {
        ("sgd", 0.01),
        ("sgd", 0.1),
        ("adam", 0.01),
        ("adam", 0.1),
    }
    assert "seed" not in rows[0] and "trainer.epochs" not in rows[0] and "optimizer.beta1" not in rows[0]


def test_default_table_in_the_folder_of_the_runs(sweep, cli):
    proc = cli(sweep["folder"], "compare", "--tracking-uri", sweep["uri"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sweep["parent"].info.run_id in lines[0] and "best_val_accuracy" in lines[0]
    header, rule, *body = lines[1:]
    assert header.split()[:3] == ["run_name", "optimizer.lr", "optimizer.name"]
    assert set(rule.replace(" ", "")) == {"-"}
    assert len(body) == 4
    assert {line.split()[0] for line in body} == {c.info.run_name for c in sweep["children"]}


def test_each_format_parses(sweep, capsys):
    uri = ["--tracking-uri", sweep["uri"]]
    by_json = compare_json(capsys, *uri)

    assert compare_command([*uri, "--format", "csv"]) == 0
    by_csv = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["run_id"] for r in by_csv] == [r["run_id"] for r in by_json]
    assert [float(r["objective"]) for r in by_csv] == pytest.approx([r["objective"] for r in by_json])

    assert compare_command([*uri, "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run_name |") and "best_val_accuracy" in lines[0]
    assert re.fullmatch(r"\|(-{3,}:?\|)+", lines[1])
    assert len(lines) == 2 + 4 and all(line.count("|") == lines[0].count("|") for line in lines)

    assert compare_command([*uri, "--format", "table", "--top", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3 + 2


def test_plot_writes_a_png(sweep, tmp_path, capsys):
    out = tmp_path / "plots" / "objective_vs_lr.png"
    assert compare_command(["--tracking-uri", sweep["uri"], "--plot", str(out)]) == 0
    assert out.stat().st_size > 1000 and out.read_bytes()[:8] == PNG_MAGIC
    assert str(out) in capsys.readouterr().err


def test_sweep_by_parent_run_id_or_sweep_id_gives_the_same_rows(sweep, capsys):
    uri = ["--tracking-uri", sweep["uri"]]
    latest = compare_json(capsys, *uri)
    assert compare_json(capsys, *uri, "--sweep", sweep["parent"].info.run_id) == latest
    assert compare_json(capsys, *uri, "--sweep", sweep["parent"].data.tags["labnet.sweep_id"]) == latest
    assert compare_json(capsys, *uri, "--sweep", sweep["parent"].info.run_name) == latest


def test_experiment_lists_its_runs_without_the_sweep_parent(sweep, capsys):
    rows = compare_json(capsys, "--tracking-uri", sweep["uri"], "--experiment", "spiral")
    assert {r["run_id"] for r in rows} == {c.info.run_id for c in sweep["children"]}


def test_direct_sqlite_reader_matches_mlflows_client(sweep, capsys):
    """The fast SQLite path returns what MlflowClient.search_runs returns, row for row."""
    for args in ([], ["--experiment", "spiral"], ["--sweep", sweep["parent"].info.run_id]):
        fast = compare_json(capsys, "--tracking-uri", sweep["uri"], *args)
        slow = compare_json(capsys, "--tracking-uri", sweep["uri"], "--mlflow-client", *args)
        assert fast == slow, args


def test_direct_sqlite_reader_matches_mlflow_on_odd_runs(tmp_path, capsys):
    """NaN and multi-step metrics, failed, running, deleted runs, a deleted experiment: both readers agree."""
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("odd")
    gone = client.create_experiment("gone")
    parent = client.create_run(exp, run_name="sweep-odd", tags={"labnet.role": "sweep", "labnet.sweep_id": "odd"})
    pid = parent.info.run_id

    def child(name, metrics, status=None, experiment=exp, **params):
        run = client.create_run(experiment, run_name=name, tags={"mlflow.parentRunId": pid})
        for key, value in params.items():
            client.log_param(run.info.run_id, key.replace("_", "."), value)
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, 1000 + s, s) for k, v, s in metrics])
        if status:
            client.set_terminated(run.info.run_id, status=status)
        return run.info.run_id

    child(
        "late-step-wins",
        [("val_accuracy", 0.9, 2), ("val_accuracy", 0.1, 1), ("best_val_accuracy", 0.9, 2)],
        "FINISHED",
        optimizer_lr="0.1",
    )
    child("nan", [("best_val_accuracy", math.nan, 1), ("train_loss", math.inf, 1)], "FINISHED", optimizer_lr="0.01")
    child("failed", [("train_loss", 3.0, 1)], "FAILED", optimizer_lr="10")
    child("running", [("val_accuracy", 0.5, 1)], None, optimizer_lr="0.001")
    client.delete_run(child("deleted", [("best_val_accuracy", 1.0, 1)], "FINISHED", optimizer_lr="1"))
    child("in-deleted-experiment", [("best_val_accuracy", 1.0, 1)], "FINISHED", experiment=gone, optimizer_lr="2")
    client.delete_experiment(gone)
    client.set_terminated(pid, status="FINISHED")
    for args in ([], ["--experiment", "odd"], ["--sweep", "odd"]):
        fast = compare_json(capsys, "--tracking-uri", uri, *args)
        slow = compare_json(capsys, "--tracking-uri", uri, "--mlflow-client", *args)
        assert fast == slow, args
        assert [r["run_name"] for r in fast] == ["late-step-wins", "nan", "running", "failed"]
    assert fast[0]["val_accuracy"] == 0.9 and fast[1]["objective"] is None


def test_a_path_to_the_db_file_is_accepted(sweep, capsys):
    rows = compare_json(capsys, "--tracking-uri", str(sweep["folder"] / "mlflow.db"))
    assert len(rows) == 4


# -- user errors: exit 2, a message, no traceback -------------------------------------------------------------


def test_no_store_in_a_fresh_folder_exits_2_and_creates_nothing(tmp_path, cli):
    proc = cli(tmp_path, "compare")
    assert proc.returncode == 2
    assert "no MLflow store" in proc.stderr and "mlflow.db" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "mlflow.db").exists(), "reading must not create a store"


def test_an_empty_store_exits_2(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()  # creates the tables and the Default experiment, no runs
    assert compare_command(["--tracking-uri", uri]) == 2
    assert "no runs" in capsys.readouterr().err


def test_unknown_sweep_exits_2_naming_it(sweep, cli):
    missing = "0" * 32
    proc = cli(sweep["folder"], "compare", "--tracking-uri", sweep["uri"], "--sweep", missing)
    assert proc.returncode == 2
    assert missing in proc.stderr and sweep["parent"].info.run_id in proc.stderr  # names the sweeps there are
    assert "Traceback" not in proc.stderr


def test_unknown_experiment_exits_2_listing_the_experiments(sweep, capsys):
    assert compare_command(["--tracking-uri", sweep["uri"], "--experiment", "mnits"]) == 2
    err = capsys.readouterr().err
    assert "'mnits'" in err and "spiral" in err


def test_a_job_run_id_points_to_its_sweep(sweep, capsys):
    child = sweep["children"][0].info.run_id
    assert compare_command(["--tracking-uri", sweep["uri"], "--sweep", child]) == 2
    assert f"--sweep {sweep['parent'].info.run_id}" in capsys.readouterr().err


# -- the pure functions -----------------------------------------------------------------------------------------


def record(run_id, params, metrics, status="FINISHED", objective="val_accuracy", start=1000, end=3500, error=None):
    tags = {"labnet.objective": objective}
    if error:
        tags["labnet.error"] = error
    return {
        "run_id": run_id,
        "run_name": run_id,
        "status": status,
        "start_time": start,
        "end_time": end,
        "params": params,
        "metrics": metrics,
        "tags": tags,
    }


def test_varying_params_ignore_equal_partial_and_bookkeeping_params():
    records = [
        record("a", {"optimizer.name": "sgd", "optimizer.lr": "0.1", "seed": "0", "tracking.uri": "x"}, {}),
        record(
            "b",
            {
                "optimizer.name": "adam",
                "optimizer.lr": "0.1",
                "seed": "0",
                "optimizer.beta1": "0.9",
                "tracking.uri": "y",
            },
            {},
        ),
    ]
    assert varying_params(records) == ["optimizer.name"]
    assert varying_params(records, all_params=True) == ["optimizer.name", "tracking.uri"]


def test_rows_sort_best_first_failed_last_and_losses_ascending():
    records = [
        record("failed", {}, {}, status="FAILED", error="diverged"),
        record("good", {}, {"best_val_accuracy": 0.9}),
        record("better", {}, {"best_val_accuracy": 0.95, "test_accuracy": 0.93}),
        record("running", {}, {}, status="RUNNING", end=None),
    ]
    rows = sort_rows(build_rows(records, []))
    assert [r["run_id"] for r in rows] == ["better", "good", "running", "failed"]
    assert rows[0]["duration_s"] == 2.5 and rows[2]["duration_s"] is None
    assert "test_accuracy" in format_rows(rows, [], "csv").splitlines()[0]
    losses = [record(n, {}, {"best_val_loss": v}, objective="val_loss") for n, v in (("a", 0.5), ("b", 0.2))]
    assert [r["run_id"] for r in sort_rows(build_rows(losses, []))] == ["b", "a"]


def test_formats_handle_missing_and_nan_values():
    rows = build_rows([record("nan", {"x": "1"}, {"best_val_accuracy": math.nan}), record("ok", {"x": "2"}, {})], ["x"])
    objects = json.loads(format_rows(rows, ["x"], "json"))
    assert objects[0]["objective"] is None and objects[0]["x"] == 1
    assert "test_accuracy" not in objects[0]
    table = format_rows(rows, ["x"], "table").splitlines()
    assert "nan" in table[2] and len(table) == 4
    with pytest.raises(ValueError, match="xml"):
        format_rows(rows, ["x"], "xml")


def test_extra_metrics_are_columns_in_every_format():
    records = [
        record("a", {}, {"best_val_accuracy": 0.9, "lr": 0.01, "grad_norm": 2.0}),
        record("b", {}, {"best_val_accuracy": 0.8, "lr": 0.1}),
    ]
    rows = sort_rows(build_rows(records, [], ["lr", "grad_norm"]))
    header = format_rows(rows, [], "table", ["lr", "grad_norm"]).splitlines()[0].split()
    assert header[-6:-3] == ["train_loss", "lr", "grad_norm"]
    objects = json.loads(format_rows(rows, [], "json", ["lr", "grad_norm"]))
    assert [(o["lr"], o["grad_norm"]) for o in objects] == [(0.01, 2.0), (0.1, None)]
    assert "lr" not in format_rows(rows, [], "csv").splitlines()[0].split(","), "only when asked for"
    assert format_rows(rows, [], "csv", ["train_loss"]).splitlines()[0].count("train_loss") == 1


def test_compare_metrics_option(sweep, capsys):
    uri = ["--tracking-uri", sweep["uri"]]
    objects = compare_json(capsys, *uri, "--metrics", "val_loss,epoch_seconds")
    assert all(isinstance(o["val_loss"], float) and o["epoch_seconds"] > 0 for o in objects)
    assert compare_command([*uri, "--metrics", "val_loss,nonesuch"]) == 2
    err = capsys.readouterr().err
    assert "no run logged 'nonesuch'; the runs logged: " in err and "val_loss" in err
    with pytest.raises(SystemExit) as usage:
        compare_command([*uri, "--metrics", "val_loss,,x"])
    assert usage.value.code == 2


def test_plot_lines_per_optimizer_else_per_categorical_param():
    def rows(params):
        return build_rows(
            [record(str(i), p, {"best_val_accuracy": 0.5}) for i, p in enumerate(params)], list(params[0])
        )

    by_optimizer = rows(
        [{"optimizer.lr": "0.1", "optimizer.name": "sgd"}, {"optimizer.lr": "1", "optimizer.name": "adam"}]
    )
    assert choose_axes(by_optimizer, ["optimizer.lr", "optimizer.name"]) == ("optimizer.lr", "optimizer.name")
    by_activation = rows(
        [{"optimizer.lr": "0.1", "model.activation": "relu"}, {"optimizer.lr": "1", "model.activation": "tanh"}]
    )
    assert choose_axes(by_activation, ["model.activation", "optimizer.lr"]) == ("optimizer.lr", "model.activation")
    with pytest.raises(ValueError, match="optimizer.lr"):
        choose_axes(rows([{"model.activation": "relu"}, {"model.activation": "tanh"}]), ["model.activation"])


def test_compare_help_is_compares_own(tmp_path, cli):
    """`labnet compare --help` lists compare's options, not the training app's usage."""
    proc = cli(tmp_path, "compare", "--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: labnet compare")
    for option in ("--tracking-uri", "--sweep", "--format", "--plot", "--top"):
        assert option in proc.stdout
    assert "config groups" not in proc.stdout


def test_right_after_a_run_compare_waits_for_it_to_reach_mlflow(tmp_path, cli):
    """`python -m labnet && labnet compare`: the run reaches MLflow after the command returned (the background
    syncer; here not even started: tracking.sync=later). compare waits for a run of its folder that ended, and
    shows it, instead of saying that nothing has been tracked there."""
    trained = cli(tmp_path, "trainer.epochs=2", "trainer.progress=false", "tracking.sync=later", fresh_store=True)
    assert trained.returncode == 0, trained.stderr
    assert not (tmp_path / "mlflow.db").exists()
    shown = cli(tmp_path, "compare", "--experiment", "spiral")
    assert shown.returncode == 0, shown.stderr
    assert "waiting for 1 run(s) of this folder to reach MLflow" in shown.stderr
    assert "adam-lr0.001-spiral" in shown.stdout and "FINISHED" in shown.stdout, shown.stdout
