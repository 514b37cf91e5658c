"""What a user finds in `mlflow ui`, read back through MLflow's API: the logged model (signature, input
example, description, input checks), the sweep's parent run (params, description, counts), summary.csv,
the experiment's description, the metric names the charts are drawn from, and the sweep's last line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")

from tests.test_tracking import runs_of  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def logged_models(client, run):
    return client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")


def test_mnist_model_is_a_logged_model_with_signature_example_and_input_checks(tmp_path, store, cli):
    proc = cli(tmp_path, "+experiment=mnist_two_layer", "trainer.epochs=1", f"tracking.uri={store}")
    assert proc.returncode == 0, proc.stderr
    client, (run,) = runs_of(store, "mnist")
    (model,) = logged_models(client, run)
    assert model.name == "model" and str(model.status).endswith("READY")
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id], "the run lists its logged model"
    note = model.tags["mlflow.note.content"]
    assert "(n, 784) float32" in note and "scaled to 0-1" in note and "divided by 255" in note
    assert "(n, 10) probabilities" in note
    linked = {m.key: m.value for m in model.metrics}
    assert linked["val_accuracy"] == pytest.approx(run.data.metrics["val_accuracy"]), "the model shows its metrics"
    assert model.params["optimizer.name"] == "sgd"

    mlflow.set_tracking_uri(store)
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    (inputs,), (outputs,) = info.signature.inputs.inputs, info.signature.outputs.inputs
    assert (inputs.shape, str(inputs.type)) == ((-1, 784), "float32")
    assert (outputs.shape, str(outputs.type)) == ((-1, 10), "float32")
    assert info.metadata["input"]["range"] == [0.0, 1.0]
    example_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{model.model_id}", dst_path=str(tmp_path / "m")))
    example = np.asarray(json.loads((example_dir / "input_example.json").read_text()), dtype=np.float32)
    assert example.shape == (1, 784) and 0 <= example.min() <= example.max() <= 1

    loaded = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")  # the run's URI finds the logged model
    probs = np.asarray(loaded.predict(example))
    assert probs.shape == (1, 10) and probs.sum() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"shape \(n, 784\).*0-255.*got values from 0 to 255"):
        loaded.predict(np.linspace(0, 255, 784, dtype=np.float32)[None])  # raw pixels, not scaled
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"expected shape \(-1, 784\)"):
        loaded.predict(np.zeros((2, 100), np.float32))


def test_model_is_logged_once_however_often_the_run_is_synced(tmp_path, store, cli):
    proc = cli(tmp_path, "trainer.epochs=2", f"tracking.uri={store}")
    assert proc.returncode == 0, proc.stderr
    folder = next(tmp_path.glob("outputs/*/*/journal.jsonl")).parent
    (folder / ".sync.json").unlink()  # as if MLflow had never heard of it: everything is sent again
    again = cli(tmp_path, "sync", str(folder))
    assert again.returncode == 0, again.stderr
    client, (run,) = runs_of(store)
    (model,) = logged_models(client, run)
    mlflow.set_tracking_uri(store)
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    (inputs,) = info.signature.inputs.inputs
    assert inputs.shape == (-1, 2) and "range" not in info.metadata["input"], "spiral points are not scaled"


def test_logging_the_model_does_not_scan_every_installed_distribution(tmp_path, store, cli, monkeypatch):
    """Its one requirement is the labnet logging it; MLflow's check of it read every installed distribution's
    file list (~0.8 s of each syncer's first model)."""
    import importlib_metadata
    from mlflow.utils import requirements_utils

    from labnet import __version__
    from labnet.tracking.mirror import Mirror

    proc = cli(tmp_path, "trainer.epochs=1", f"tracking.uri={store}", "tracking.sync=later")
    assert proc.returncode == 0, proc.stderr
    folder = next(tmp_path.glob("outputs/*/*/journal.jsonl")).parent

    scans = []  # (MLflow turns an error in its check into a warning: the calls are counted instead)
    monkeypatch.setattr(importlib_metadata, "packages_distributions", lambda: scans.append(1) or {})
    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)  # (not scanned earlier in this process)
    assert Mirror().sync(folder).complete
    assert not scans, "every installed distribution scanned"
    client, (run,) = runs_of(store)
    (model,) = logged_models(client, run)
    mlflow.set_tracking_uri(store)
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{model.model_id}", dst_path=str(tmp_path / "m")))
    assert f"labnet=={__version__}" in (model_dir / "requirements.txt").read_text().split()


def test_failed_run_logs_no_model(tmp_path, store, cli):
    proc = cli(tmp_path, "trainer.epochs=3", "optimizer=sgd", "optimizer.lr=1e30", f"tracking.uri={store}")
    assert proc.returncode != 0
    client, (run,) = runs_of(store)
    assert run.info.status == "FAILED"
    assert not logged_models(client, run) and not run.outputs.model_outputs


def test_sweep_parent_run_names_the_best_job_and_summary_is_best_first(tmp_path, store, cli):
    proc = cli(
        tmp_path, "-m", "trainer.epochs=3", "optimizer=sgd,adam", "optimizer.lr=0.01,0.1", f"tracking.uri={store}"
    )
    assert proc.returncode == 0, proc.stderr
    assert "Creating initial MLflow database tables" not in proc.stdout + proc.stderr, "MLflow's own lines stay out"
    client, runs = runs_of(store)
    (parent,) = [r for r in runs if r.data.tags.get("labnet.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    best = max(children, key=lambda r: r.data.metrics["best_val_accuracy"])
    sweep_id = parent.data.tags["labnet.sweep_id"]

    # the terminal's last lines: the best job and its objective, then the commands to look further
    *_, report, further = proc.stdout.strip().splitlines()
    assert report.startswith(f"labnet: sweep {sweep_id}: 4 jobs; 4 trained; best: job {best.data.tags['labnet.job']} ")
    assert best.info.run_name in report and f"best val_accuracy {best.data.metrics['best_val_accuracy']:.4f}" in report
    assert further == f"labnet: look further: labnet compare --sweep {sweep_id}   mlflow ui"

    # counts are tags, not metrics; what every job shared is the parent's params
    assert set(parent.data.metrics) == {"best_val_accuracy"}
    tags = parent.data.tags
    assert (tags["labnet.jobs"], tags["labnet.finished_jobs"], tags["labnet.failed_jobs"]) == ("4", "4", "0")
    assert tags["labnet.best_run"] == best.info.run_name and tags["labnet.best_run_id"] == best.info.run_id
    params = parent.data.params
    assert params["trainer.epochs"] == "3" and params["dataset.name"] == "spiral"
    assert "optimizer.lr" not in params and "optimizer.name" not in params, "what varies is no shared param"
    note = tags["mlflow.note.content"]
    assert f"**Best: `{best.info.run_name}`**" in note and f"{best.data.metrics['best_val_accuracy']:.4f}" in note
    assert "4 jobs: 4 finished, 0 failed" in note
    assert f"labnet compare --sweep {sweep_id}" in note and "mlflow ui" in note
    overrides = note.split("Overrides:")[1]
    assert all(o in overrides for o in ("optimizer.lr=0.01,0.1", "optimizer=sgd,adam", f"tracking.uri={store}"))

    summary = Path(client.download_artifacts(parent.info.run_id, "summary.csv", str(tmp_path)))
    rows = list(csv.DictReader(summary.open()))
    assert list(rows[0]) == [
        "run_name",
        "optimizer.lr",
        "optimizer.name",
        "objective",
        "val_accuracy",
        "train_loss",
        "job",
        "run_id",
    ], "name first, varying params, objective, main metrics; nothing constant or empty"
    objectives = [float(r["objective"]) for r in rows]
    assert objectives == sorted(objectives, reverse=True), "best first"
    assert rows[0]["run_name"] == best.info.run_name

    experiment = client.get_experiment(parent.info.experiment_id)
    note = experiment.tags["mlflow.note.content"]
    assert "**spiral**" in note and "Spiral arms" in note and "labnet" in note


def test_replicate_summary_of_a_loss_objective_puts_the_lowest_first():
    """The old summary sorted replicate groups highest first whatever the objective."""
    from labnet.tracking.sweep_table import replicate_groups

    rows = [
        {"optimizer.lr": lr, "seed": seed, "sweep.replicate": rep, "objective": value}
        for lr, values in (("0.1", (0.9, 1.1)), ("0.01", (0.2, 0.4)), ("1.0", (float("nan"), float("nan"))))
        for rep, (seed, value) in enumerate(zip((1, 2), values, strict=True))
    ]
    params = ["optimizer.lr", "seed", "sweep.replicate"]
    by_loss = replicate_groups(rows, params, "val_loss")
    assert [g["optimizer.lr"] for g in by_loss] == ["0.01", "0.1", "1.0"]
    assert by_loss[0]["objective"] == pytest.approx(0.3) and by_loss[0]["objective_std"] == pytest.approx(
        0.1414, abs=1e-4
    )
    assert [g["optimizer.lr"] for g in replicate_groups(rows, params, "val_accuracy")] == ["0.1", "0.01", "1.0"]


def test_charts_lead_with_the_main_metrics_and_no_job_log_file_is_left_empty(tmp_path, store, cli):
    proc = cli(tmp_path, "trainer.epochs=2", "tracking.log_every=4", f"tracking.uri={store}")
    assert proc.returncode == 0, proc.stderr
    client, (run,) = runs_of(store)
    names = set(run.data.metrics)
    assert {"train_loss", "val_accuracy", "best_val_accuracy", "train_loss_per_step"} <= names
    # MLflow puts every section named by a prefix before "Model metrics" (unprefixed), "system/..." last
    sections = {n.rsplit("/", 1)[0] for n in names if "/" in n}
    assert sections == {"system"}, sorted(names)
    assert "system/health.layer0_affine.grad_norm" in names
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss_per_step")] == [4, 8, 12, 16]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2], "per epoch"
    folder = next(tmp_path.glob("outputs/*/*/journal.jsonl")).parent
    assert not (folder / "app.log").exists()
