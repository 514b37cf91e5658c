"""What a user finds in `mlflow ui`, read back through MLflow's API: the logged model (signature, input
example, description, input checks), the sweep's parent run (params, description, counts), summary.csv,
the experiment's description, the metric names the charts are drawn from, and the sweep's last line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")

from tests.test_tracking import labnet, runs_of  # noqa: E402


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def logged_models(client, run):
    return client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")


def test_mnist_model_is_a_logged_model_with_signature_example_and_input_checks(tmp_path, store):
    proc = labnet(tmp_path, "+experiment=mnist_two_layer", "trainer.epochs=1", f"tracking.uri={store}")
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


def test_model_is_logged_once_however_often_the_run_is_synced(tmp_path, store):
    proc = labnet(tmp_path, "trainer.epochs=2", f"tracking.uri={store}")
    assert proc.returncode == 0, proc.stderr
    folder = next(tmp_path.glob("outputs/*/*/journal.jsonl")).parent
    (folder / ".sync.json").unlink()  # as if MLflow had never heard of it: everything is sent again
    again = labnet(tmp_path, "sync", str(folder))
    assert again.returncode == 0, again.stderr
    client, (run,) = runs_of(store)
    (model,) = logged_models(client, run)
    mlflow.set_tracking_uri(store)
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    (inputs,) = info.signature.inputs.inputs
    assert inputs.shape == (-1, 2) and "range" not in info.metadata["input"], "spiral points are not scaled"


def test_failed_run_logs_no_model(tmp_path, store):
    proc = labnet(tmp_path, "trainer.epochs=3", "optimizer=sgd", "optimizer.lr=1e30", f"tracking.uri={store}")
    assert proc.returncode != 0
    client, (run,) = runs_of(store)
    assert run.info.status == "FAILED"
    assert not logged_models(client, run) and not run.outputs.model_outputs
