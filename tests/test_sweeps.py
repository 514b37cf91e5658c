"""Sweeps users can trust: re-runs skip finished jobs and resume killed ones, replicates, fail-fast, config limits."""

from __future__ import annotations

import csv
import json
import signal
import time
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def children(uri: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("spiral")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return (
        client,
        [r for r in runs if r.data.tags.get("mlflow.parentRunId")],
        [r for r in runs if r.data.tags.get("labnet.role") == "sweep"],
    )


def test_interrupted_sweep_run_again_skips_finished_and_resumes_killed(tmp_path, cli, cli_start):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = ["-m", "trainer.epochs=3,400", "optimizer.lr=0.01,0.02", f"tracking.uri={uri}"]
    proc = cli_start(tmp_path, *sweep)
    # jobs 0 and 1 are short; interrupt job 2 once it has written a checkpoint
    deadline = time.time() + 300
    while time.time() < deadline and not list(tmp_path.glob("multirun/*/*/2/checkpoint.npz")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    _, first, parents = children(uri)
    assert sorted(r.info.status for r in first) == ["FINISHED", "FINISHED", "KILLED"]
    assert len(parents) == 1

    again = cli(tmp_path, *sweep)
    assert again.returncode == 0, again.stderr
    assert "2 of 4 jobs already finished, skipped" in again.stdout
    assert "1 resumed from epoch" in again.stdout
    client, runs, parents = children(uri)
    assert len(runs) == 4, "exactly one new run: the killed job continued in its own run"
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", "the same command continues its parent run"
    resumed = next(r for r in runs if r.info.run_id == next(x.info.run_id for x in first if x.info.status == "KILLED"))
    epochs = [m.step for m in client.get_metric_history(resumed.info.run_id, "train_loss")]
    assert epochs[-1] == 400 and len(epochs) == len(set(epochs)) == 400, "every epoch logged once"

    forced = cli(tmp_path, "-m", "trainer.epochs=3", "optimizer.lr=0.01", f"tracking.uri={uri}", "sweep.rerun=all")
    assert forced.returncode == 0 and "already finished" not in forced.stdout


def test_replicates_give_distinct_seeds_and_a_mean_per_configuration(tmp_path, cli):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = cli(tmp_path, "-m", "trainer.epochs=2", "optimizer.lr=0.01,0.1", "sweep.replicates=3", f"tracking.uri={uri}")
    assert proc.returncode == 0, proc.stderr
    client, runs, parents = children(uri)
    assert len(runs) == 6
    by_lr: dict[str, list] = {}
    for run in runs:
        by_lr.setdefault(run.data.params["optimizer.lr"], []).append(run)
    assert sorted(by_lr) == ["0.01", "0.1"]
    for members in by_lr.values():
        assert len({r.data.params["seed"] for r in members}) == 3
    summary = Path(client.download_artifacts(parents[0].info.run_id, "summary_by_config.csv", str(tmp_path)))
    rows = {row["optimizer.lr"]: row for row in csv.DictReader(summary.open())}
    for lr, members in by_lr.items():
        values = [r.data.metrics["best_val_accuracy"] for r in members]
        assert float(rows[lr]["objective"]) == pytest.approx(sum(values) / 3)
        assert int(rows[lr]["replicates"]) == 3


def test_fail_fast_launches_nothing_after_the_first_failure(tmp_path, cli):
    proc = cli(
        tmp_path,
        "-m",
        "trainer.epochs=2",
        "optimizer=sgd",
        "optimizer.lr=1e30,0.1,0.2",
        "sweep.fail_fast=true",
        "tracking=none",
    )
    assert proc.returncode == 0, proc.stderr
    assert "FAILED" in proc.stderr and "not run: sweep.fail_fast" in proc.stderr
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("multirun/*/*/*/result.json"))]
    assert [r["status"] for r in results] == ["FAILED", "SKIPPED", "SKIPPED"]
    assert not list(tmp_path.glob("multirun/*/*/1/checkpoint.npz")), "the skipped jobs trained nothing"


@pytest.mark.parametrize(
    ("option", "words"),
    [
        ("sweep.rerun=some", ["sweep.rerun='some'", "missing", "all"]),
        ("sweep.fail_fast=maybe", ["sweep.fail_fast='maybe'", "true or false"]),
    ],
)
def test_bad_sweep_option_stops_the_sweep_before_any_job(tmp_path, option, words, cli):
    """Hydra only warns about an error raised in a callback and launches the jobs anyway; labnet stops the sweep."""
    proc = cli(tmp_path, "-m", "trainer.epochs=1", "optimizer.lr=0.1,0.2", "tracking=none", option)
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.split("labnet: error: ", 1)[1]
    for word in words:
        assert word in message, (word, proc.stderr)
    assert "Traceback" not in proc.stderr and "UserWarning" not in proc.stderr
    assert not list(tmp_path.glob("multirun/*/*/*/result.json")), "no job ran"


def test_sweep_into_an_unreachable_server_stops_before_any_job(tmp_path, free_port, cli):
    """At once (MLflow alone would retry the parent run for ~4 minutes), naming the URI and the ways out."""
    uri = f"http://127.0.0.1:{free_port()}"
    started = time.perf_counter()
    proc = cli(tmp_path, "-m", "trainer.epochs=1", "optimizer.lr=0.1,0.2", f"tracking.uri={uri}")
    assert proc.returncode == 1, proc.stderr
    assert time.perf_counter() - started < 60
    message = proc.stderr.split("labnet: error: ", 1)[1]
    assert f"tracking.uri={uri} cannot be reached" in message and "tracking.on_error=warn" in message
    assert "UserWarning" not in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("multirun/*/*/*/result.json")), "no job ran"


def test_sweep_with_on_error_warn_trains_without_the_unreachable_server(tmp_path, free_port, cli):
    uri = f"http://127.0.0.1:{free_port()}"
    proc = cli(
        tmp_path, "-m", "trainer.epochs=1", "optimizer.lr=0.1,0.2", f"tracking.uri={uri}", "tracking.on_error=warn"
    )
    assert proc.returncode == 0, proc.stderr
    assert "the sweep runs without MLflow" in proc.stderr
    assert "2 jobs; 2 trained" in proc.stdout
    for path in tmp_path.glob("multirun/*/*/*/result.json"):
        result = json.loads(path.read_text())
        assert result["status"] == "FINISHED" and result["run_id"] is None
        epochs = [json.loads(line) for line in (path.parent / "journal.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in epochs if r["type"] == "epoch"] == [1], "the metrics are kept in the run's folder"


def test_job_failing_before_training_is_counted_in_the_sweep_report(tmp_path, cli):
    proc = cli(tmp_path, "-m", "trainer.epochs=1", "dataset.val_size=-1,60", "tracking=none")
    assert proc.returncode == 0, proc.stderr
    assert "2 jobs; 1 trained; 1 failed" in proc.stdout
    results = {int(p.parent.name): json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/*/result.json")}
    assert results[0]["status"] == "FAILED" and "dataset.val_size=-1" in results[0]["error"]
    assert results[0]["overrides"] == ["trainer.epochs=1", "dataset.val_size=-1", "tracking=none"]
    assert results[1]["status"] == "FINISHED"


def test_large_and_odd_configs_log_within_mlflow_limits(tmp_path, cli):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # a section of the user's own (unknown top-level keys are refused): a config group in --config-dir
    (tmp_path / "mine" / "odd").mkdir(parents=True)
    extra = "{" + ", ".join(f"k{i}: {i}" for i in range(300)) + "}"
    (tmp_path / "mine" / "odd" / "values.yaml").write_text(
        f"extra: {extra}\nnotes: {'x' * 10_000}\nnothing: null\nnested: {{a: {{b: [1, 2, {{c: 3}}]}}}}\n"
    )
    proc = cli(
        tmp_path, "--config-dir", str(tmp_path / "mine"), "trainer.epochs=1", "+odd=values", f"tracking.uri={uri}"
    )
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("spiral").experiment_id])[0]
    params = run.data.params
    assert run.info.status == "FINISHED"
    assert all(params[f"odd.extra.k{i}"] == str(i) for i in range(300))
    assert len(params["odd.notes"]) <= 6000 and params["odd.notes"].endswith("[truncated]")
    assert "odd.notes" in run.data.tags["labnet.truncated_params"]
    assert params["odd.nothing"] == "None" and params["odd.nested.a.b"] == "[1, 2, {'c': 3}]"


QUIET_PLUGIN = """
import labnet


@labnet.hookimpl
def labnet_epoch_end(run, metrics):
    metrics["quiet"] = 1.0
"""


def test_a_plugin_upgrade_retrains_a_finished_sweep_and_says_why(tmp_path, cli, make_plugin):
    site = make_plugin(tmp_path / "site", "quiet", QUIET_PLUGIN)
    args = ("-m", "optimizer.lr=0.01,0.02", "trainer.epochs=1", "trainer.progress=false")
    first = cli(tmp_path, *args, path=(site,))
    assert first.returncode == 0, first.stderr
    again = cli(tmp_path, *args, path=(site,))
    assert "2 of 2 jobs already finished, skipped" in again.stdout, again.stdout
    info = next(site.glob("*.dist-info"))
    (info / "METADATA").write_text((info / "METADATA").read_text().replace("Version: 0.1", "Version: 0.2"))
    upgraded = cli(tmp_path, *args, path=(site,))
    assert upgraded.returncode == 0, upgraded.stderr
    assert "trained again: the code changed" in upgraded.stdout and "quiet 0.1 -> 0.2" in upgraded.stdout
    assert "2 jobs; 2 trained" in upgraded.stdout
