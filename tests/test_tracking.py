"""End-to-end tracking: run labnet as a user would, then read back what MLflow stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def runs_of(uri: str, experiment: str = "spiral"):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} not in {uri}"
    return client, client.search_runs([exp.experiment_id], max_results=1000)


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_single_run_logs_params_metrics_artifacts_and_model(tmp_path, store, cli):
    proc = cli(tmp_path, "trainer.epochs=4", "tracking.log_every=5", f"tracking.uri={store}")
    assert proc.returncode == 0, proc.stderr
    client, runs = runs_of(store)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "adam-lr0.001-spiral"
    params = run.data.params
    assert params["optimizer.lr"] == "0.001" and params["optimizer.name"] == "adam"
    assert params["dataset.name"] == "spiral" and params["model.hidden_sizes"] == "[50]"
    assert "labnet==" in params["labnet.plugins"]
    assert run.data.tags["labnet.version"]
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2, 3, 4]
    # 240 training points / batch 30 = 8 steps per epoch, 32 steps, logged every 5th: 6 points
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss_per_step"))
    assert steps == [5, 10, 15, 20, 25, 30]
    from labnet.record.result import RunResult

    result = RunResult.read(next(tmp_path.glob("outputs/*/*/result.json")).parent)
    assert result.run_id == run.info.run_id, "the folder knows its MLflow run"
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(result.objective)
    assert run.info.end_time - run.info.start_time == pytest.approx(
        1000 * (result.end_time - result.start_time), abs=1000
    ), "MLflow's duration is the run's own"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.yaml", "weights.npz", "curves.png", "confusion_matrix.png"} <= artifacts
    assert run.outputs.model_outputs, "the model is a logged model of the run (MLflow 3), not a run artifact"
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    x = np.random.default_rng(0).standard_normal((7, 2)).astype(np.float32)
    probs = np.asarray(model.predict(x))
    assert probs.shape == (7, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_default_uri_is_mlflows_default_in_the_working_folder(tmp_path, cli):
    proc = cli(tmp_path, "trainer.epochs=2")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "mlflow.db").is_file(), "plain `mlflow ui` in this folder must find the runs"
    _, runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


def test_parallel_joblib_sweep_loses_nothing(tmp_path, store, cli):
    proc = cli(
        tmp_path,
        "-m",
        "trainer.epochs=3",
        "optimizer=sgd,adam",
        "optimizer.lr=0.01,0.1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"tracking.uri={store}",
    )
    assert proc.returncode == 0, proc.stderr
    client, runs = runs_of(store)
    parents = [r for r in runs if r.data.tags.get("labnet.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["labnet.failed_jobs"] == "0"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert {(c.data.params["optimizer.name"], c.data.params["optimizer.lr"]) for c in children} == {
        ("sgd", "0.01"),
        ("sgd", "0.1"),
        ("adam", "0.01"),
        ("adam", "0.1"),
    }
    for child in children:
        assert child.info.status == "FINISHED"
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert len(client.get_metric_history(child.info.run_id, key)) == 3, key
    best = max(c.data.metrics["best_val_accuracy"] for c in children)
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "objective_vs_lr.png"} <= artifacts
    summary = client.download_artifacts(parent.info.run_id, "summary.csv", str(tmp_path))
    lines = Path(summary).read_text().splitlines()
    assert len(lines) == 5 and "optimizer.lr" in lines[0] and "objective" in lines[0]


def test_failed_job_is_failed_in_mlflow_and_the_sweep_goes_on(tmp_path, store, cli):
    proc = cli(tmp_path, "-m", "trainer.epochs=3", "optimizer=sgd", "optimizer.lr=0.1,1e30", f"tracking.uri={store}")
    assert proc.returncode == 0, proc.stderr
    assert "FAILED" in proc.stderr and "optimizer.lr=1e+30" in proc.stderr
    _, runs = runs_of(store)
    children = {r.data.params["optimizer.lr"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert children["0.1"].info.status == "FINISHED"
    failed = children["1e+30"]
    assert failed.info.status == "FAILED"
    assert "diverged" in failed.data.tags["labnet.error"]
    parent = next(r for r in runs if r.data.tags.get("labnet.role") == "sweep")
    assert parent.info.status == "FINISHED" and parent.data.tags["labnet.failed_jobs"] == "1"


def test_unreachable_server_fails_before_training(tmp_path, free_port, cli):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = cli(tmp_path, "trainer.epochs=2", f"tracking.uri={uri}")
    assert proc.returncode != 0
    assert uri in proc.stderr and "cannot be reached" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("outputs/*/*/checkpoint.npz")), "no training before the store is reachable"


def test_unreachable_server_with_on_error_warn_trains_and_keeps_metrics(tmp_path, free_port, cli):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = cli(tmp_path, "trainer.epochs=3", f"tracking.uri={uri}", "tracking.on_error=warn")
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "labnet sync" in proc.stderr
    folder = next(tmp_path.glob("outputs/*/*/journal.jsonl")).parent
    records = [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2, 3], "the run's folder keeps every epoch"
    assert json.loads((folder / "result.json").read_text())["status"] == "FINISHED"


def endless_run(cli_start, cwd: Path, store: str) -> subprocess.Popen:
    """A spiral run that trains until it is stopped, tracked into ``store``."""
    return cli_start(cwd, "trainer.epochs=100000", f"tracking.uri={store}")


def test_interrupted_run_is_killed_in_mlflow(tmp_path, store, cli_start):
    proc = endless_run(cli_start, tmp_path, store)
    deadline = time.time() + 120
    while not list(tmp_path.glob("outputs/*/*/checkpoint.npz")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "labnet resume " in err
    _, runs = runs_of(store)
    assert len(runs) == 1 and runs[0].info.status == "KILLED"
    assert "SIGINT" in runs[0].data.tags["labnet.error"]


def test_killed_training_process_leaves_its_run_killed_not_running(tmp_path, store, cli_start):
    """SIGKILL gives labnet no chance to end its run; the background syncer sees its process gone (the journal's
    lock is free) and ends it KILLED, without any other labnet command."""
    proc = endless_run(cli_start, tmp_path, store)
    client, deadline = MlflowClient(store), time.time() + 120
    run = None
    while time.time() < deadline and run is None:
        exp = client.get_experiment_by_name("spiral")
        found = client.search_runs([exp.experiment_id]) if exp else []
        if found and client.get_metric_history(found[0].info.run_id, "val_accuracy"):
            run = found[0]
        time.sleep(0.2)
    assert run is not None, "the run never logged an epoch"
    proc.kill()
    proc.communicate()
    while time.time() < deadline and client.get_run(run.info.run_id).info.status == "RUNNING":
        time.sleep(0.2)
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED"
    assert "ended without ending its run" in ended.data.tags["labnet.error"]
    assert client.get_metric_history(run.info.run_id, "val_accuracy"), "what was logged is kept"


def test_sweep_summary_reads_jobs_from_mlflow_when_their_files_are_elsewhere(tmp_path, store, cli):
    """Ray jobs on machines without a shared disk leave result.json where they ran: the parent's
    summary and the sweep's report come from the child runs in MLflow instead."""
    proc = cli(
        tmp_path,
        "-m",
        "trainer.epochs=2",
        "optimizer=sgd,adam",
        f"tracking.uri={store}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hydra.sweep.subdir=../elsewhere/${hydra.job.num}",
    )
    assert proc.returncode == 0, proc.stderr
    assert not list((tmp_path / "sweep").glob("*/result.json"))
    assert len(list(tmp_path.glob("elsewhere/*/result.json"))) == 2
    assert "2 jobs; 2 trained" in proc.stdout
    client, runs = runs_of(store)
    (parent,) = [r for r in runs if r.data.tags.get("labnet.role") == "sweep"]
    children = {r.data.tags["labnet.job"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    assert sorted(children) == ["0", "1"]
    best = max(c.data.metrics["best_val_accuracy"] for c in children.values())
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best)
    summary = Path(client.download_artifacts(parent.info.run_id, "summary.csv", str(tmp_path)))
    import csv

    rows = list(csv.DictReader(summary.open()))  # (best first)
    assert sorted((r["job"], r["optimizer.name"], r["run_id"]) for r in rows) == [
        (job, children[job].data.params["optimizer.name"], children[job].info.run_id) for job in ("0", "1")
    ]
    for row in rows:
        assert float(row["objective"]) == pytest.approx(children[row["job"]].data.metrics["best_val_accuracy"])


def test_eval_test_logs_the_test_split_every_epoch_once(tmp_path, store, cli):
    """trainer.eval_test gives the book's per-epoch train/test curves: one test point per epoch, none twice."""
    args = ["+experiment=mnist_two_layer", "trainer.epochs=3", "trainer.eval_test=true", f"tracking.uri={store}"]
    proc = cli(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    client, (run,) = runs_of(store, "mnist")
    history = client.get_metric_history(run.info.run_id, "test_accuracy")
    assert [m.step for m in history] == [1, 2, 3]
    result = json.loads(next(tmp_path.glob("outputs/*/*/result.json")).read_text())
    assert [h["test_accuracy"] for h in result["history"]] == pytest.approx([m.value for m in history])
    assert result["metrics"]["test_accuracy"] == pytest.approx(history[-1].value)


def test_confusion_matrix_picture_shades_cells_by_count(tmp_path):
    from PIL import Image

    from labnet.tracking.plots import plot_confusion

    matrix = np.array([[50, 0, 1], [2, 40, 0], [0, 9, 30]])
    image = Image.open(plot_confusion(matrix, tmp_path / "cm.png", "confusion matrix (test)")).convert("L")
    left, top, cell = 64, 48, 44  # the layout plot_confusion draws (cells of 44 px from (64, 48))

    def shade(i: int, j: int) -> int:  # brightness at a cell's corner, away from its number
        return image.getpixel((left + j * cell + 3, top + i * cell + 3))

    assert shade(0, 0) < shade(1, 1) < shade(2, 2) < shade(2, 1) < shade(1, 0) < shade(0, 1)


def test_syncer_dying_mid_run_loses_nothing(tmp_path, store, cli_start):
    """The background syncer killed while the run trains: the run goes on, and (tracking.sync=wait) a new
    syncer brings MLflow up to date with every epoch before the command returns."""
    proc = cli_start(
        tmp_path, "trainer.epochs=1500", f"tracking.uri={store}", "trainer.progress=false", LABNET_SYNC="wait"
    )
    client, deadline = MlflowClient(store), time.time() + 120
    logged = False
    while time.time() < deadline and not logged:
        exp = client.get_experiment_by_name("spiral")
        found = client.search_runs([exp.experiment_id]) if exp else []
        logged = bool(found and client.get_metric_history(found[0].info.run_id, "val_accuracy"))
        time.sleep(0.2)
    assert logged, "the run never logged an epoch"
    syncers = subprocess.run(["pgrep", "-f", f"labnet.tracking.syncer {tmp_path}"], capture_output=True, text=True)
    for pid in syncers.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    (run,) = client.search_runs([client.get_experiment_by_name("spiral").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == list(range(1, 1501))


def test_a_store_being_made_by_another_program_is_waited_for_and_a_settled_one_is_not(tmp_path):
    """``create_whole`` on a store file another program is migrating waits until its schema is MLflow's whole one
    (opening it earlier would migrate it a second time); an old file nobody writes is not waited for."""
    import sqlite3
    import threading

    from labnet.tracking import store

    head = store._latest_schema()
    path = tmp_path / "mlflow.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("INSERT INTO alembic_version VALUES ('451aebb31d03')")  # (MLflow's first migration)

    def finish_migrating():
        time.sleep(1.0)
        with sqlite3.connect(path) as db:
            db.execute("UPDATE alembic_version SET version_num = ?", (head,))

    other = threading.Thread(target=finish_migrating)
    other.start()
    started = time.monotonic()
    store.create_whole(f"sqlite:///{path}")
    waited = time.monotonic() - started
    other.join()
    assert 0.9 < waited < 10, waited
    assert store._schema_of(path) == head

    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")
    os.utime(path, (time.time() - 3600, time.time() - 3600))  # settled: written an hour ago
    started = time.monotonic()
    store.create_whole(f"sqlite:///{path}")
    assert time.monotonic() - started < 1.0, "an old store is MLflow's to report, not labnet's to wait for"


def test_a_sweeps_store_does_not_become_every_later_sweeps_store(tmp_path, monkeypatch):
    """In a notebook, `labnet.sweep(..., tracking={"uri": A})` and then `labnet.sweep(...)`: the second goes to its
    own default store, not to A (the sweep set MLflow's process-wide tracking URI and left it there)."""
    import atexit

    import mlflow
    from omegaconf import OmegaConf

    from labnet.sweeps.callback import Sweep
    from labnet.tracking import sweep_summary
    from labnet.tracking.store import EXPERIMENT_ENV, PARENT_RUN_ENV
    from tests.conftest import empty_store

    before = f"sqlite:///{tmp_path / 'the_notebooks_own.db'}"
    mlflow.set_tracking_uri(before)  # (what a user set, or another test: conftest restores it afterwards)
    uri = empty_store(tmp_path / "a.db")
    for key in ("MLFLOW_TRACKING_URI", PARENT_RUN_ENV, EXPERIMENT_ENV):
        monkeypatch.setenv(key, "")  # (restored afterwards: the sweep sets them for its jobs)
        monkeypatch.delenv(key)
    cfg = OmegaConf.create({"tracking": {"name": "mlflow", "uri": uri}, "dataset": {"name": "spiral"}})
    sweep = Sweep(id="s1", dir=tmp_path, cfg=cfg)
    try:
        sweep_summary.start_parent_run(sweep)
    finally:
        atexit.unregister(sweep_summary._end_interrupted_parent)
    assert sweep.info["mlflow_uri"] == uri and os.environ["MLFLOW_TRACKING_URI"] == uri  # (the jobs' store)
    os.environ.pop("MLFLOW_TRACKING_URI")  # (as labnet.sweep restores the environment when it returns)
    assert mlflow.get_tracking_uri() == before, "MLflow's process-wide tracking URI is left as it was"
