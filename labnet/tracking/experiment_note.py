"""The description of an MLflow experiment labnet creates: what its data set is, and that labnet made it
(the markdown MLflow shows at the top of the experiment's page, tag ``mlflow.note.content``)."""

from __future__ import annotations

from labnet import __version__

NOTE_TAG = "mlflow.note.content"


def dataset_summary(dataset: str) -> str:
    """The first line of the data set's docstring, as its plugin describes it; else its name alone."""
    try:
        from labnet.plugins import get_registry

        doc = get_registry().get("dataset", dataset).__doc__ or ""
    except Exception:  # an unknown or unloadable plugin: the note says less, the run goes on
        doc = ""
    return doc.strip().splitlines()[0].strip() if doc.strip() else ""


def experiment_note(dataset: str | None) -> str:
    summary = dataset_summary(dataset) if dataset else ""
    lines = [
        f"Runs trained on the **{dataset}** data set" + (f": {summary}" if summary else ".") if dataset else "",
        "",
        f"Made by labnet {__version__}, a NumPy deep-learning framework (layers with explicit forward and "
        "backward passes): one MLflow run per training run, mirrored from the run's folder; a sweep's jobs "
        "are nested under its parent run `sweep-<id>`, whose description names the best job.",
        "",
        "Each run's charts are per epoch (`train_loss_per_step`: per optimizer step); its health diagnostics "
        "are under System metrics; its model is on the Models tab. `labnet compare` prints the runs best first.",
    ]
    return "\n".join(lines).strip()
