"""A FINISHED run's network as an MLflow 3 *logged model*: listed on the experiment's Models tab and the
run's "Logged models", with a signature (input shape and dtype, probabilities per class), an input example,
a description saying how inputs are prepared, and a predict that refuses inputs of the wrong shape or range.

The pyfunc is logged as code (``pyfunc_model.py``), so loading it unpickles nothing. Logging is idempotent:
the background syncer and ``labnet sync`` may both reach a run, and a run keeps one logged model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from labnet import __version__

MODEL_NAME = "model"
INPUT_FILE = "model_input.json"  # (in the run folder: what the model takes, for its pyfunc)
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
NOTE_TAG = "mlflow.note.content"
PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
IMAGE_DATASETS = ("mnist", "fashion_mnist", "mnist_subset")


def input_contract(params: dict[str, Any], spec: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """What the model takes and gives: input shape and dtype, the value range training saw, how to get
    there from raw data, and the number of classes. ``params`` are the run's flat config params."""
    shape = [int(s) for s in spec["input_shape"]]
    dataset = str(params.get("dataset.name", "?"))
    contract: dict[str, Any] = {"shape": shape, "dtype": spec.get("dtype", "float32"), "classes": int(num_classes)}
    if dataset in IMAGE_DATASETS:
        normalized = str(params.get("dataset.normalize", True)).lower() not in ("false", "0")
        pixels = "28x28 grey pixels" + (" flattened row by row" if len(shape) == 1 else "")
        if normalized:
            contract["range"] = [0.0, 1.0]
            contract["preprocessing"] = f"{pixels}, scaled to 0-1 (raw 0-255 values divided by 255)"
        else:
            contract["range"] = [0.0, 255.0]
            contract["preprocessing"] = f"{pixels}, raw values 0-255 as floats (trained with dataset.normalize=false)"
    else:
        contract["preprocessing"] = f"features as the {dataset} data set gives them to training (no scaling)"
    return contract


def shape_text(contract: dict[str, Any]) -> str:
    """e.g. "(n, 784) float32"."""
    return f"(n, {', '.join(map(str, contract['shape']))}) {contract['dtype']}"


def description(contract: dict[str, Any], run_name: str | None, dataset: str) -> str:
    """The logged model's description (markdown, shown on its page in the UI)."""
    lines = [
        f"labnet {__version__} network trained on **{dataset}** by run `{run_name or '?'}`.",
        "",
        f"- **input**: {shape_text(contract)}: {contract['preprocessing']}",
        f"- **output**: (n, {contract['classes']}) probabilities per class (each row sums to 1)",
        '- load: `mlflow.pyfunc.load_model("models:/<model id>").predict(x)`; an input of another shape'
        + (" or outside that range" if "range" in contract else "")
        + " is refused with a message naming what is expected",
    ]
    return "\n".join(lines)


def signature(contract: dict[str, Any]):
    """A tensor-spec signature: batch dimension free (-1), the rest fixed."""
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    dtype = np.dtype(contract["dtype"])
    inputs = Schema([TensorSpec(dtype, (-1, *contract["shape"]))])
    outputs = Schema([TensorSpec(dtype, (-1, contract["classes"]))])
    return ModelSignature(inputs=inputs, outputs=outputs)


def input_example(contract: dict[str, Any]):
    """One input inside the training range (mid-grey for images, zeros otherwise), small enough to show."""
    import numpy as np

    low, high = contract.get("range", (0.0, 0.0))
    return np.full((1, *contract["shape"]), (low + high) / 2, dtype=contract["dtype"])


def existing_model(client, experiment_id: str, run_id: str):
    """The logged model this run already has (a sync that ran before, maybe cut short), else None."""
    found = client.search_logged_models(
        experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'", max_results=10
    )
    named = [m for m in found if m.name == MODEL_NAME]
    ready = [m for m in named if str(m.status).endswith("READY")]
    return (ready or named or [None])[0]


def log_model(client, run_id: str, folder: Path, weights: Path, spec_path: Path, step: int) -> str | None:
    """Log the run's model once; returns its model id. ``step`` is the epoch the weights are from, so the
    model page shows the run's metrics of that epoch."""
    import mlflow
    from mlflow.models import Model

    from labnet.build import model_from_spec
    from labnet.plugins import get_registry
    from labnet.record.journal import read_state
    from labnet.train.checkpoint import load_npz

    run = client.get_run(run_id)
    existing = existing_model(client, run.info.experiment_id, run_id)
    if existing is not None and str(existing.status).endswith("READY"):
        return existing.model_id
    spec = json.loads(spec_path.read_text())
    network = model_from_spec(spec, get_registry(), load_npz(weights))
    start = read_state(folder).start
    params = start.get("params", {})
    contract = input_contract(params, spec, int(network.output_shape[-1]))
    (folder / INPUT_FILE).write_text(json.dumps(contract))
    dataset = str(params.get("dataset.name", "?"))
    if existing is None:  # created here, in the run's experiment (MLflow's own would use the active one)
        existing = client.create_logged_model(
            run.info.experiment_id,
            name=MODEL_NAME,
            source_run_id=run_id,
            params=run.data.params,
            tags={NOTE_TAG: description(contract, start.get("name"), dataset)},
        )
    with _tracking_uri(client), _quiet_mlflow(), _no_requirement_scan():
        Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            model_id=existing.model_id,
            step=step,
            python_model=str(PYFUNC_CODE),
            artifacts={"weights": str(weights), "spec": str(spec_path), "input": str(folder / INPUT_FILE)},
            signature=signature(contract),
            input_example=input_example(contract),
            pip_requirements=[f"labnet=={__version__}"],
            metadata={"labnet_version": __version__, "dataset": dataset, "input": contract},
        )
    return existing.model_id


@contextlib.contextmanager
def _tracking_uri(client):
    """MLflow's model logging goes through its global tracking URI: the client's store for the call."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client._tracking_client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


@contextlib.contextmanager
def _no_requirement_scan():
    """The model's one requirement is ``labnet==<this version>``, met by construction: the labnet logging it.
    MLflow confirms each requirement by mapping every installed distribution to its modules (it reads all their
    file lists: ~0.8 s per process here, more with Ray installed), when it saves the model and again when it
    loads it to check the input example."""
    import mlflow.pyfunc
    from mlflow.utils import environment

    name = "warn_dependency_requirement_mismatches"
    checks = {module: getattr(module, name) for module in (environment, mlflow.pyfunc) if hasattr(module, name)}
    for module in checks:  # (another MLflow without it checks as it does)
        setattr(module, name, lambda requirements: None)
    try:
        yield
    finally:
        for module, check in checks.items():
            setattr(module, name, check)


@contextlib.contextmanager
def _quiet_mlflow():
    """MLflow's INFO/WARNING lines while it logs a model (requirements inference, validation) say nothing
    a user can act on; errors still show."""
    logger = logging.getLogger("mlflow")
    level, progress = logger.level, os.environ.get(PROGRESS_BAR_ENV)
    logger.setLevel(logging.ERROR)
    os.environ[PROGRESS_BAR_ENV] = "false"  # ("Downloading artifacts: 100%" while it checks the example)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # (type hints on predict: the signature says it)
            yield
    finally:
        logger.setLevel(level)
        if progress is None:
            os.environ.pop(PROGRESS_BAR_ENV, None)
        else:
            os.environ[PROGRESS_BAR_ENV] = progress
