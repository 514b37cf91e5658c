"""labnet.run / labnet.sweep / labnet.register (labnet.api): the command line's configs, checks, folders
and tracking from Python, read back as data; each call leaves the process as it found it."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

import labnet
from labnet.api.launch import hydra_value, overrides_from
from labnet.errors import PluginError
from labnet.nn.layer import Layer
from labnet.train.metrics import labels_of

QUIET = {"progress": False}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder of its own (outputs/, multirun/, mlflow.db), nothing of a sweep or a store leaking in."""
    monkeypatch.chdir(tmp_path)
    for key in ("LABNET_SWEEP_ID", "LABNET_SWEEP_DIR", "MLFLOW_TRACKING_URI", "LABNET_DEBUG"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


@pytest.fixture
def session():
    """labnet.register's session, emptied after the test (it is the process's)."""
    from labnet.api import session

    yield session
    session.clear()


class LeakyReLU(Layer):
    name = "leaky_relu_test"
    is_activation = True

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x, train=True):
        self.mask = x > 0
        return np.where(self.mask, x, self.alpha * x)

    def backward(self, dout):
        return np.where(self.mask, dout, self.alpha * dout)


def test_keywords_become_the_command_lines_overrides():
    argv = overrides_from(
        ("optimizer=adam",),
        experiment="mnist_two_layer",
        groups={
            "trainer": {"epochs": 3, "eval_test": True, "patience": None},
            "model": {"hidden_sizes": [100, 50], "layers": [{"type": "affine", "units": 10}]},
            "tracking": {"run_name": "my run"},
            "seed": 7,
            "dataset": "mnist",
        },
        launcher="joblib",
    )
    assert argv == [
        "optimizer=adam",
        "+experiment=mnist_two_layer",
        "hydra/launcher=joblib",
        "trainer.epochs=3",
        "trainer.eval_test=true",
        "trainer.patience=null",
        "model.hidden_sizes=[100,50]",
        "model.layers=[{type:affine,units:10}]",
        "tracking.run_name=my run",
        "seed=7",
        "dataset=mnist",
    ]
    assert hydra_value(["it's", "a b"]) == "['it\\'s','a b']"
    assert hydra_value(1e-5) == "1e-05"
    with pytest.raises(labnet.ConfigError, match="overrides are strings"):
        overrides_from((0.1,))


@pytest.mark.parametrize(
    "mistake",
    [
        ["optimizer.lrr=0.1"],  # Hydra refuses it: labnet's message lists the group's keys
        ["+experiment=mnist_two_layr"],  # an unknown experiment: the available ones
        ["optimizer.lr=0"],  # refused by labnet's own checks, at the run's start
        ["+seeed=5"],  # a top-level key nothing reads
    ],
)
def test_a_config_mistake_raises_the_command_lines_message(mistake, workdir, cli):
    proc = cli(workdir, *mistake, "tracking=none")
    assert proc.returncode == 2, proc.stderr
    cli_message = proc.stderr.strip().splitlines()[-1].removeprefix("labnet: error: ")
    with pytest.raises(labnet.ConfigError) as raised:
        labnet.run(*mistake, tracking="none")
    assert str(raised.value) == cli_message


def test_a_run_returns_its_record_and_the_next_starts_clean(workdir):
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    environ, handlers = dict(os.environ), logging.getLogger().handlers[:]
    first = labnet.run(trainer={"epochs": 4, **QUIET}, tracking="none", seed=3)
    assert first.status == "FINISHED" and first.folder.parent.parent == workdir / "outputs"
    assert (first.folder / ".hydra" / "config.yaml").is_file() and (first.folder / "journal.jsonl").is_file()
    assert list(first.history.index) == [1, 2, 3, 4]
    assert first.history["val_accuracy"].iloc[-1] == first.metrics["val_accuracy"]
    # the model from weights.npz and the data split as the run split it give the run's accuracy
    val = first.data.val
    accuracy = float(np.mean(first.model.predict(val.x).argmax(axis=1) == labels_of(val.y)))
    assert accuracy == pytest.approx(first.metrics["val_accuracy"], abs=1e-12)
    assert first.config.seed == 3 and first.config.trainer.epochs == 4
    # the process is as it was: Hydra, environment, logging (the run's app.log is closed and detached)
    assert not GlobalHydra.instance().is_initialized() and not HydraConfig.initialized()
    assert dict(os.environ) == environ and logging.getLogger().handlers == handlers
    second = labnet.run(trainer={"epochs": 2, **QUIET}, tracking="none", seed=3)
    assert second.folder != first.folder and len(second.history) == 2
    assert second.history["train_loss"].tolist() == first.history["train_loss"].tolist()[:2]  # same seed, same run


def test_a_sweep_reads_back_as_the_compare_table_and_leaves_no_parent_run_behind(workdir):
    from labnet.compare.formats import columns
    from labnet.compare.stores import SqliteStore

    sweep = labnet.sweep("optimizer=sgd,adam", "optimizer.lr=0.01,0.1", trainer={"epochs": 3})
    table = sweep.table
    assert len(table) == 4 and len(sweep.jobs) == 4
    assert list(table.columns) == columns(sweep.rows, ["optimizer.lr", "optimizer.name"], "csv")
    assert set(table["optimizer.name"]) == {"sgd", "adam"} and set(table["optimizer.lr"]) == {0.01, 0.1}
    assert table["objective"].tolist() == sorted(table["objective"], reverse=True)  # best first
    assert (table["status"] == "FINISHED").all()
    store = SqliteStore("sqlite:///mlflow.db", workdir / "mlflow.db")
    try:
        for run_id, objective in zip(table["run_id"], table["objective"], strict=True):
            assert store.run(run_id)["metrics"]["best_val_accuracy"] == pytest.approx(objective)
        parents = store.newest_sweeps(1)
    finally:
        store.close()
    assert sweep.plot().axes[0].get_xlabel().startswith("optimizer.lr")
    # a run after the sweep is a run of its own, not a child of the sweep's parent run
    after = labnet.run(trainer={"epochs": 1, **QUIET})
    records = [json.loads(line) for line in (after.folder / "journal.jsonl").read_text().splitlines()]
    mlflow_record = next(r for r in records if r["type"] == "mlflow")
    assert parents and mlflow_record["parent_run_id"] is None
    assert after.run_id is not None  # tracking.sync=wait in a notebook call: MLflow holds it on return


def test_a_registered_layer_is_used_by_name_and_a_clash_is_refused(workdir, session):
    assert labnet.register(LeakyReLU) == ["layer/leaky_relu_test"]
    run = labnet.run(model={"activation": "leaky_relu_test"}, trainer={"epochs": 2, **QUIET}, tracking="none")
    assert [type(layer) for layer in run.model.layers][1] is LeakyReLU

    class Clash(LeakyReLU):
        name = "relu"

    with pytest.raises(PluginError, match="two plugins provide the layer 'relu'"):
        labnet.register(Clash)
    assert session.registered() == {"layer": ["leaky_relu_test"]}  # the clash was not kept
    session.clear()
    with pytest.raises(labnet.ConfigError, match="leaky_relu_test"):
        labnet.run(model={"activation": "leaky_relu_test"}, tracking="none")


def test_a_registered_optimizer_gets_a_config_node_from_its_constructor(workdir, session):
    from labnet.nn.optimizers import SGD

    class HalfSGD(SGD):
        """SGD at half the learning rate: its config node comes from the constructor (lr, weight_decay)."""

        name = "half_sgd"

        def __init__(self, lr: float = 0.2, weight_decay: float = 0.0) -> None:
            super().__init__(lr=lr / 2, weight_decay=weight_decay)

    labnet.register(HalfSGD)
    half = labnet.run(optimizer="half_sgd", trainer={"epochs": 2, **QUIET}, tracking="none")
    sgd = labnet.run("optimizer=sgd", "optimizer.lr=0.1", trainer={"epochs": 2, **QUIET}, tracking="none")
    assert half.config.optimizer.lr == 0.2
    assert half.history["train_loss"].tolist() == sgd.history["train_loss"].tolist()


def test_joblib_sweeps_one_after_another_keep_their_jobs_apart(workdir):
    """joblib reuses its worker processes, which keep the environment they started with: the second sweep's
    jobs must not run as jobs of the first (its id and folder, its MLflow parent run)."""

    def sweep_ids(lrs: str) -> set[str]:
        sweep = labnet.sweep(
            f"optimizer.lr={lrs}", "hydra.launcher.n_jobs=2", launcher="joblib", tracking="none", trainer={"epochs": 1}
        )
        starts = [json.loads((job.folder / "journal.jsonl").read_text().splitlines()[0]) for job in sweep.jobs]
        assert len(starts) == 2
        return {start["tags"]["labnet.sweep_id"] for start in starts}

    first, second = sweep_ids("0.01,0.02"), sweep_ids("0.03,0.04")
    assert len(first) == 1 and len(second) == 1 and first != second
