"""The book's training studies (experiments/*.yaml with a ``study`` node) at tiny size.

Each experiment runs as users run it (``python -m labnet +experiment=NAME``), shrunk by overrides
to seconds, and must leave its comparison plot and table in the sweep folder. The book's finding
is asserted only where it holds robustly at that size; the full-size numbers are in the README.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from labnet.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def run_study(
    cli, tmp_path: Path, name: str, *overrides: str, tracking: str = "tracking=none"
) -> tuple[Path, list[dict]]:
    """Run the experiment in one process and return its sweep folder and table."""
    joblib = "override /hydra/launcher: joblib" in (REPO / "experiments" / f"{name}.yaml").read_text()
    sequential = ["hydra.launcher.n_jobs=1"] if joblib else []  # joblib runs one job at a time in-process
    # one BLAS thread: on a busy machine two threads per job are several times slower
    proc = cli(tmp_path, f"+experiment={name}", *sequential, "trainer.threads=1", tracking, *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the plot failed" not in proc.stderr, proc.stderr[-3000:]
    (sweep_dir,) = {p.parent for p in tmp_path.glob(f"multirun/*/*/{name}.png")}
    assert (sweep_dir / f"{name}.png").stat().st_size > 10_000
    with (sweep_dir / f"{name}.csv").open() as f:
        return sweep_dir, list(csv.DictReader(f))


def by_label(rows: list[dict]) -> dict[str, dict]:
    return {row["label"]: row for row in rows}


# --------------------------------------------------------------------------- the experiments


def test_optimizer_paths_logged_on_the_parent_run(tmp_path, cli):
    """Full size (30 steps): the SGD path is the book's update written out, and the plot is on the parent run."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir, rows = run_study(cli, tmp_path, "optimizer_paths", tracking=f"tracking.uri={uri}")
    assert [r["label"] for r in rows] == ["SGD", "Momentum", "AdaGrad", "Adam"]
    assert [float(r["lr"]) for r in rows] == [0.95, 0.1, 1.5, 0.3]
    for row in rows:
        assert int(row["steps"]) == 30 and float(row["f_final"]) < 0.2 < 6.45 == float(row["f_start"]), row
    sgd_dir = next(
        d
        for d in sweep_dir.iterdir()
        if (d / ".hydra").is_dir() and "optimizer=sgd" in (d / ".hydra/overrides.yaml").read_text()
    )
    points = np.loadtxt(sgd_dir / "study_points.csv", delimiter=",", skiprows=1)
    x, y, lr = -7.0, 2.0, 0.95
    for _, px, py in points:
        assert (px, py) == pytest.approx((x, y), rel=1e-7, abs=1e-12)
        x, y = x - lr * x / 10, y - lr * 2 * y  # grad f = (x/10, 2y)

    client = MlflowClient(uri)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("optimizer_paths").experiment_id], "tags.`labnet.role` = 'sweep'"
    )
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"optimizer_paths.png", "optimizer_paths.csv", "summary.csv"} <= artifacts
    assert parent.info.status == "FINISHED"


def test_optimizer_compare_mnist_sgd_is_slowest(tmp_path, cli):
    _, rows = run_study(cli,
        tmp_path, "optimizer_compare_mnist", "dataset.train_size=1280", "dataset.val_size=500", "trainer.epochs=4",
        "study.smooth=5", "study.tail=10",
    )  # fmt: skip
    losses = {r["label"]: float(r["final_loss"]) for r in rows}
    assert list(losses) == ["SGD", "Momentum", "AdaGrad", "Adam"] and all(int(r["steps"]) == 40 for r in rows)
    assert max(losses, key=losses.get) == "SGD", losses
    assert losses["SGD"] > 1.5 * max(v for k, v in losses.items() if k != "SGD"), losses


def test_weight_init_compare_std_001_does_not_learn(tmp_path, cli):
    _, rows = run_study(cli,
        tmp_path, "weight_init_compare", "dataset.train_size=1280", "dataset.val_size=500", "trainer.epochs=4",
        "study.smooth=5", "study.tail=10",
    )  # fmt: skip
    rows = by_label(rows)
    assert set(rows) == {"std=0.01", "Xavier", "He"}
    assert float(rows["std=0.01"]["final_loss"]) == pytest.approx(math.log(10), abs=0.02)  # stuck at chance
    assert float(rows["He"]["final_loss"]) < float(rows["std=0.01"]["final_loss"]) - 0.15  # He has started


def test_batchnorm_compare_learns_where_the_plain_net_does_not_and_survives_a_diverged_job(tmp_path, cli):
    _, rows = run_study(cli,
        tmp_path, "batchnorm_compare", "model.init=1.0,0.01", "dataset.train_size=500", "dataset.val_size=500",
        "trainer.epochs=4",
    )  # fmt: skip
    assert len(rows) == 4
    plain_large = next(r for r in rows if r["model.init"] == "1.0" and r["label"].startswith("without"))
    assert plain_large["status"] == "FAILED" and "(diverged)" in plain_large["label"]
    small = {r["label"]: float(r["mean_train_accuracy"]) for r in rows if r["model.init"] == "0.01"}
    assert small["batch norm"] > small["without batch norm"] + 0.1, small


@pytest.mark.parametrize(
    "name, label", [("overfit_weight_decay", "weight decay λ=0.1"), ("overfit_dropout", "dropout 0.2")]
)
def test_overfit_studies_table_the_gap(tmp_path, name, label, cli):
    sweep_dir, rows = run_study(
        cli, tmp_path, name, "dataset.train_size=100", "dataset.val_size=300", "trainer.epochs=5"
    )
    assert [r["label"] for r in rows][1] == label and len(rows) == 2
    for row in rows:
        assert int(row["epochs"]) == 5
        assert float(row["gap"]) == pytest.approx(float(row["train_accuracy"]) - float(row["val_accuracy"]), abs=1e-4)


def test_hparam_search_ranks_every_trial(tmp_path, cli):
    _, rows = run_study(cli,
        tmp_path, "hparam_search", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=1", "dataset.train_size=200",
        "trainer.epochs=2",
    )  # fmt: skip
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    accuracies = [float(r["val_accuracy"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    for row in rows:
        assert 1e-6 <= float(row["optimizer.lr"]) <= 1e-2 and 1e-8 <= float(row["model.weight_decay"]) <= 1e-4


# --------------------------------------------------------------------------- the pieces


def test_a_study_with_an_unknown_plot_fails_naming_the_kinds():
    from omegaconf import OmegaConf

    from labnet.studies import study_of

    assert study_of(OmegaConf.create({"seed": 0})) is None
    with pytest.raises(ConfigError, match="study.plot='curves'.*train_loss_curves"):
        study_of(OmegaConf.create({"study": {"plot": "curves"}}))


def test_mnist_subset_draws_a_seeded_training_subset():
    from labnet.studies.components import MnistSubset

    a = MnistSubset(train_size=300, val_size=1000).load(np.random.default_rng(3))
    b = MnistSubset(train_size=300, val_size=1000).load(np.random.default_rng(3))
    assert (len(a.train), len(a.val), len(a.test)) == (300, 1000, 10_000)
    np.testing.assert_array_equal(a.train.x, b.train.x)
    c = MnistSubset(train_size=300, val_size=1000).load(np.random.default_rng(4))
    assert not np.array_equal(a.train.x, c.train.x)
    with pytest.raises(ConfigError, match="train_size=60000"):
        MnistSubset(train_size=60_000).load(np.random.default_rng(0))


def test_a_skipped_job_is_drawn_from_its_earlier_output_folder(tmp_path, monkeypatch):
    from labnet import studies

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "result.json").write_text('{"history": [{"train_loss": 2.0}, {"train_loss": 1.0}]}')
    (earlier / studies.STEPS_FILE).write_text("step,train_loss\n1,2.5\n2,1.5\n")
    monkeypatch.setattr(studies, "_earlier_output_dir", lambda result, sweep: earlier)
    job = studies.load_job({"job": 0, "status": "FINISHED", "skipped": True, "run_id": "r"}, sweep=None)
    assert [h["train_loss"] for h in job.history] == [2.0, 1.0]
    np.testing.assert_array_equal(job.steps, [[1, 2.5], [2, 1.5]])


def test_a_plot_that_fails_is_a_warning_not_the_end_of_the_sweep(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    from labnet import studies
    from labnet.studies import plots as studies_plots
    from labnet.sweeps.callback import Sweep

    def broken(study, jobs, folder):
        raise ValueError("no axes")

    monkeypatch.setitem(studies_plots.PLOTS, "paths", broken)
    sweep = Sweep(id="s", dir=tmp_path, cfg=OmegaConf.create({"study": {"name": "p", "plot": "paths"}}))
    studies.labnet_sweep_end(sweep=sweep, results=[{"job": 0, "status": "FINISHED", "params": {}}])
    assert "study 'p': the plot failed: ValueError: no axes" in capsys.readouterr().err


def test_the_study_reads_a_skipped_jobs_folder_from_the_store_and_logs_its_files_on_the_parent_run(
    tmp_path, monkeypatch
):
    """Through labnet's store reader (labnet.compare.stores) and the tracker's parent-run logging, with no
    MLflow client of its own."""
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    from labnet import studies
    from labnet.studies import plots as studies_plots
    from labnet.sweeps.callback import Sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("studies")
    earlier = client.create_run(experiment, tags={"labnet.output_dir": str(tmp_path / "earlier")})
    parent = client.create_run(experiment, run_name="sweep-s", tags={"labnet.role": "sweep"})
    sweep = Sweep(id="s", dir=tmp_path, cfg=OmegaConf.create({"study": {"name": "p", "plot": "paths"}}))
    sweep.info.update(mlflow_uri=uri, mlflow_parent_run_id=parent.info.run_id)

    assert studies._earlier_output_dir({"run_id": earlier.info.run_id}, sweep) == tmp_path / "earlier"
    assert studies._earlier_output_dir({"run_id": "0" * 32}, sweep) is None  # no such run
    assert studies._earlier_output_dir({"run_id": earlier.info.run_id}, Sweep("s", tmp_path, sweep.cfg)) is None

    def table(study, jobs, folder):
        (folder / "p.csv").write_text("label,job\nsgd,0\n")
        return [folder / "p.csv"]

    monkeypatch.setitem(studies_plots.PLOTS, "paths", table)
    job_dir = tmp_path / "job0"
    (job_dir / "health").mkdir(parents=True)
    (job_dir / "health" / "activations_1.png").write_bytes(b"png")
    result = {"job": 0, "status": "FINISHED", "params": {}, "output_dir": str(job_dir)}
    studies.labnet_sweep_end(sweep=sweep, results=[result])
    logged = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"p.csv", "activations"} <= logged
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "activations/0-job")] == [
        "activations/0-job/activations_1.png"
    ]
