"""docs/tutorial.ipynb executed in a real Jupyter kernel, its key outputs checked; and labnet.run in a kernel
behaving as in a terminal: interrupting the kernel (Ctrl-C) writes the checkpoint, the next run starts clean."""

from __future__ import annotations

import queue
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"
CELL_SECONDS = 300
#: what must not reach a cell: MLflow's log lines and progress bars, tqdm's warning about missing widgets
NOISE = ("INFO mlflow", "Downloading artifacts", "alembic", "IProgress not found")


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernel as Jupyter starts one: matplotlib's inline backend (no MPLBACKEND=Agg), labnet's own notebook
    default for tracking.sync (no LABNET_SYNC), in a folder of its own."""
    for key in ("MPLBACKEND", "LABNET_SYNC", "LABNET_SWEEP_ID", "LABNET_SWEEP_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def outputs_of(cell) -> str:
    """A cell's text: its streams, results (plain text) and errors."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif output["output_type"] in ("execute_result", "display_data"):
            parts.append(output["data"].get("text/plain", ""))
        elif output["output_type"] == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
    return "".join(parts)


def cell_with(nb, source_part: str):
    return next(c for c in nb.cells if c.cell_type == "code" and source_part in c.source)


def test_the_tutorial_runs_in_a_kernel_and_shows_the_books_numbers(kernel_env):
    nb = nbformat.read(TUTORIAL, as_version=4)
    start = time.monotonic()
    nbclient.NotebookClient(
        nb, timeout=CELL_SECONDS, kernel_name="python3", resources={"metadata": {"path": str(kernel_env)}}
    ).execute()
    print(f"tutorial executed in {time.monotonic() - start:.0f} s")

    assert "0.5*SSE = 0.0975   cross-entropy = 0.5108" in outputs_of(cell_with(nb, "sse, ce = losses(y, t)"))
    assert "0.5*SSE = 0.5975   cross-entropy = 2.3026" in outputs_of(cell_with(nb, "y_wrong"))
    errors = [float(e) for e in re.findall(r"largest relative error (\S+)", outputs_of(cell_with(nb, "gradcheck(")))]
    assert len(errors) == 5 and max(errors) < 1e-6
    assert "price 715" in outputs_of(cell_with(nb, "class MulLayer"))
    assert "apple 2.2, apples 110, orange 3.3, oranges 165, tax 650" in outputs_of(cell_with(nb, "class MulLayer"))

    mnist = outputs_of(cell_with(nb, 'experiment="mnist_two_layer", trainer'))
    accuracy, run_id = re.search(r"test accuracy (\S+)   MLflow run ([0-9a-f]{32})", mnist).groups()
    assert float(accuracy) > 0.88  # two epochs of the book's net (18 give 0.97)
    predicted = re.search(r"(\S+) of 10000 test images right", outputs_of(cell_with(nb, "result.model.predict")))
    assert predicted.group(1) == accuracy  # the model read back from the run's weights.npz
    assert "unknown key 'optimizer.lrr' in optimizer (sgd)" in outputs_of(cell_with(nb, "lrr"))
    assert "1100 steps" in mnist and "epoch 2/2" in mnist  # the terminal's progress lines, in the cell

    history = cell_with(nb, "result.history[")
    assert len(re.findall(r"^\d ", outputs_of(history), re.MULTILINE)) == 2  # one row per epoch
    sweep = cell_with(nb, "labnet.sweep(")
    assert "6 jobs; 6 trained" in outputs_of(sweep)
    assert outputs_of(sweep).count("-spiral") >= 6 + 6 and "text/html" in sweep.outputs[-1]["data"]
    for plot in ("result.plot()", "sweep.plot()"):
        assert "image/png" in cell_with(nb, plot).outputs[-1]["data"], plot

    assert "LeakyReLU(alpha=0.01)" in outputs_of(cell_with(nb, 'model={"activation": "leaky_relu"}'))
    ids = outputs_of(cell_with(nb, "sweep jobs:"))
    assert run_id in ids and len(re.findall(r"[0-9a-f]{32}", ids)) == 1 + 6 + 1
    for cell in nb.cells:
        if cell.cell_type == "code":
            text = outputs_of(cell)
            assert not any(noise in text for noise in NOISE), text
            assert not any(o["output_type"] == "error" for o in cell.outputs), text


def _execute(client, manager, code: str, interrupt_after: float | None = None, timeout: float = 180) -> str:
    """Run ``code`` in the kernel and return its output; interrupt the kernel after ``interrupt_after`` s."""
    msg_id = client.execute(code)
    start, interrupted, out = time.monotonic(), False, []
    while time.monotonic() - start < timeout:
        if interrupt_after is not None and not interrupted and time.monotonic() - start > interrupt_after:
            manager.interrupt_kernel()  # what Jupyter's "interrupt the kernel" (Ctrl-C) does: SIGINT
            interrupted = True
        try:
            msg = client.get_iopub_msg(timeout=0.5)
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            out.append(f"{content['ename']}: {content['evalue']}\n")
        elif kind == "execute_result":
            out.append(content["data"]["text/plain"] + "\n")
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out)
    raise TimeoutError(f"no answer from the kernel in {timeout} s: {''.join(out)[-2000:]}")


def test_interrupting_the_kernel_checkpoints_the_run_and_the_next_run_starts_clean(kernel_env):
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", cwd=str(kernel_env))
    try:
        _execute(client, manager, "import labnet")
        out = _execute(
            client,
            manager,
            "run = labnet.run(trainer={'epochs': 100000, 'progress': False}, tracking='none')",
            interrupt_after=8,
        )
        assert "Interrupted: interrupted by SIGINT; resume it with: labnet resume" in out, out
        folder = Path(re.search(r"labnet resume (\S+)", out).group(1))
        assert (folder / "checkpoint.npz").is_file()
        from labnet.record.result import RunResult

        record = RunResult.read(folder)
        assert record.status == "KILLED" and len(record.history) >= 1
        out = _execute(
            client,
            manager,
            "from hydra.core.global_hydra import GlobalHydra\n"
            "import os, signal\n"
            "before = signal.getsignal(signal.SIGINT)\n"
            "run = labnet.run(trainer={'epochs': 2, 'progress': False}, tracking='none')\n"
            "print(run.status, len(run.history), GlobalHydra.instance().is_initialized(),\n"
            "      signal.getsignal(signal.SIGINT) is before, 'LABNET_SYNC' in os.environ)",
        )
        # the handler the trainer installed for the run is gone again: the kernel's own Ctrl-C is back
        assert out.strip().splitlines()[-1] == "FINISHED 2 False True False", out
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
