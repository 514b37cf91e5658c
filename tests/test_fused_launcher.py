"""The fused launcher (hydra/launcher=labnet_fused) end to end: each member of a fused group is a run like any
other (folder, journal, checkpoint, weights, result, MLflow child run), with the results of the basic launcher's
separate runs; a member that diverges fails alone; a re-run skips finished members; jobs that cannot fuse run
alone and say why."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from labnet.record.journal import read_state
from labnet.train.checkpoint import decode_json, load_npz

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FUSED = "hydra/launcher=labnet_fused"


def succeeded(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def job_folders(cwd: Path) -> dict[int, Path]:
    return {int(p.name): p for p in cwd.glob("multirun/*/*/*") if p.is_dir() and p.name.isdigit()}


def results(cwd: Path) -> dict[int, dict]:
    return {job: json.loads((f / "result.json").read_text()) for job, f in job_folders(cwd).items()}


def child_runs(uri: str, experiment: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return client, [r for r in runs if r.data.tags.get("mlflow.parentRunId")]


@pytest.mark.slow
def test_fused_sweep_records_every_member_as_the_basic_launcher_records_its_job(tmp_path, cli):
    grid = [
        "-m",
        "+experiment=mnist_two_layer",
        "optimizer=sgd,adam",
        "optimizer.lr=0.01,0.1",
        "trainer.epochs=2",
        "dataset.val_size=50000",  # 10,000 training images
    ]
    fused, basic = tmp_path / "fused", tmp_path / "basic"
    fused.mkdir(), basic.mkdir()
    out = succeeded(cli(fused, *grid, FUSED, "tracking.uri=sqlite:///mlflow.db")).stdout
    assert "4 jobs: 4 in 1 fused group" in out
    succeeded(cli(basic, *grid, "tracking.uri=sqlite:///mlflow.db"))  # (each folder its own store)

    got, want = results(fused), results(basic)
    assert sorted(got) == sorted(want) == [0, 1, 2, 3]
    for job in want:
        assert got[job]["status"] == want[job]["status"] == "FINISHED"
        assert got[job]["overrides"] == want[job]["overrides"] and got[job]["job"] == job
        assert got[job]["params"] == want[job]["params"]
        assert abs(got[job]["metrics"]["test_accuracy"] - want[job]["metrics"]["test_accuracy"]) <= 0.001, job
        assert len(got[job]["history"]) == 2
        # the member's files are the single run's: same entries, same shapes, a resumable checkpoint
        for name in ("checkpoint.npz", "weights.npz"):
            a, b = load_npz(job_folders(fused)[job] / name), load_npz(job_folders(basic)[job] / name)
            b = {k: v for k, v in b.items() if not k.startswith("plugin/")}  # (plugins' resume state: see docs)
            assert sorted(a) == sorted(b) and all(a[k].shape == b[k].shape for k in b), name
        ckpt = load_npz(job_folders(fused)[job] / "checkpoint.npz")
        assert int(ckpt["epoch"]) == 2 and decode_json(ckpt["run"])["step"] == 200
        assert decode_json(ckpt["params"]) == got[job]["params"]
        start = read_state(job_folders(fused)[job]).start
        assert start["overrides"] == want[job]["overrides"] and start["tags"]["labnet.job"] == str(job)

    for cwd in (fused, basic):
        client, runs = child_runs(f"sqlite:///{cwd / 'mlflow.db'}", "mnist")
        assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs)
        for r in runs:
            assert [m.step for m in client.get_metric_history(r.info.run_id, "val_accuracy")] == [1, 2]
        with next(cwd.glob("multirun/*/*/summary.csv")).open() as f:
            rows = list(csv.DictReader(f))
        assert sorted(int(r["job"]) for r in rows) == [0, 1, 2, 3]
        assert all(r.get("status", "FINISHED") == "FINISHED" for r in rows)  # (a constant column is left out)

    again = succeeded(cli(fused, *grid, FUSED, "tracking.uri=sqlite:///mlflow.db")).stdout
    assert "jobs 0-3 run alone: already finished: skipped" in again
    assert "4 of 4 jobs already finished, skipped" in again
    assert len(child_runs(f"sqlite:///{fused / 'mlflow.db'}", "mnist")[1]) == 4, "nothing trained again"


def test_a_diverging_member_fails_alone_and_the_others_finish(tmp_path, cli):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = succeeded(
        cli(
            tmp_path,
            "-m",
            "optimizer=sgd",
            "optimizer.lr=0.1,1e30,0.5",
            "trainer.epochs=3",
            FUSED,
            f"tracking.uri={uri}",
        )
    )
    assert "3 jobs: 3 in 1 fused group" in proc.stdout
    got = results(tmp_path)
    assert [got[j]["status"] for j in (0, 1, 2)] == ["FINISHED", "FAILED", "FINISHED"]
    assert "diverged" in got[1]["error"] and "job 1" in proc.stderr
    assert len(got[0]["history"]) == len(got[2]["history"]) == 3
    _, runs = child_runs(uri, "spiral")
    status = {r.data.tags["labnet.job"]: r.info.status for r in runs}
    assert status == {"0": "FINISHED", "1": "FAILED", "2": "FINISHED"}
    # a finished member's weights are its own: loading them reproduces its recorded test accuracy
    assert np.isfinite(load_npz(job_folders(tmp_path)[0] / "weights.npz")["0.W"]).all()


def test_float64_member_checkpoints_equal_the_basic_launchers_and_early_stopping_stops_a_member_alone(tmp_path, cli):
    grid = [
        "-m",
        "optimizer=sgd,adam",
        "optimizer.lr=0.001,0.05",
        "trainer.epochs=6",
        "trainer.patience=1",
        "trainer.dtype=float64",
        "tracking=none",
    ]
    fused, basic = tmp_path / "fused", tmp_path / "basic"
    fused.mkdir(), basic.mkdir()
    succeeded(cli(fused, *grid, FUSED))
    succeeded(cli(basic, *grid))
    got, want = results(fused), results(basic)
    assert {len(r["history"]) for r in want.values()} != {6}, "some job stops early (else this proves nothing)"
    for job in want:
        assert len(got[job]["history"]) == len(want[job]["history"]), job
        a = load_npz(job_folders(fused)[job] / "checkpoint.npz")
        b = load_npz(job_folders(basic)[job] / "checkpoint.npz")
        b = {k: v for k, v in b.items() if not k.startswith("plugin/")}  # (plugins' resume state: see docs)
        assert sorted(a) == sorted(b)
        for key in b:
            if b[key].dtype.kind == "f":
                np.testing.assert_allclose(a[key], b[key], rtol=1e-8, atol=1e-10, err_msg=f"job {job} {key}")
            elif key not in ("run_key",):
                assert str(a[key]) == str(b[key]) if b[key].ndim == 0 else np.array_equal(a[key], b[key]), key


def test_jobs_that_cannot_fuse_run_alone_and_say_why(tmp_path, cli):
    proc = succeeded(cli(tmp_path, "-m", "trainer.epochs=1,2", "optimizer.lr=0.01", FUSED, "tracking=none"))
    assert "2 jobs: 0 in 0 fused groups, 2 alone" in proc.stdout
    assert "job 0 runs alone: it differs from the nearest job, 1, in trainer.epochs=1 (job 1: 2)" in proc.stdout
    got = results(tmp_path)
    assert [got[j]["status"] for j in (0, 1)] == ["FINISHED", "FINISHED"]
    assert [len(got[j]["history"]) for j in (0, 1)] == [1, 2]


def test_an_interrupted_fused_sweep_ends_its_members_killed_and_the_same_command_resumes_them(tmp_path, cli, cli_start):
    import signal
    import time

    sweep = ["-m", "optimizer.lr=0.01,0.02", "trainer.epochs=1500", FUSED, "tracking.uri=sqlite:///mlflow.db"]
    proc = cli_start(tmp_path, *sweep)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(tmp_path.glob("multirun/*/*/*/checkpoint.npz"))) < 2:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "fused group interrupted" in err
    first = results(tmp_path)
    assert [first[j]["status"] for j in (0, 1)] == ["KILLED", "KILLED"]
    # (Ctrl-C may land between a member's epoch record and its checkpoint: it resumes from its checkpoint)
    saved = {j: int(load_npz(job_folders(tmp_path)[j] / "checkpoint.npz")["epoch"]) for j in (0, 1)}
    assert all(len(first[j]["history"]) - 1 <= saved[j] <= len(first[j]["history"]) for j in (0, 1))

    again = succeeded(cli(tmp_path, *sweep))
    assert "jobs 0-1 run alone: killed earlier: resumes from its checkpoint" in again.stdout
    assert "resumed from epoch" in again.stdout and "2 trained" in again.stdout
    _, runs = child_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "spiral")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs), "each member continued in its own run"
    latest = max(tmp_path.glob("multirun/*/*"), key=lambda p: p.stat().st_mtime)
    resumed = {int(p.parent.name): json.loads(p.read_text()) for p in latest.glob("*/result.json")}
    assert {j: r["resumed_from_epoch"] for j, r in resumed.items()} == saved
    assert all(len(r["history"]) == 1500 for r in resumed.values())


OPTIMIZER_PLUGIN = """
import labnet


@labnet.hookimpl
def labnet_epoch_end(run, metrics, optimizer):
    metrics["seen_lr"] = float(optimizer.lr)
    metrics["seen_steps"] = float(optimizer.step_count)
"""


def test_a_plugins_epoch_end_gets_each_members_optimizer_as_a_single_run_gets_its_own(tmp_path, cli, make_plugin):
    """``labnet_epoch_end``'s ``optimizer`` (hookspecs: its lr and step count) reaches a fused member's hooks as a
    single job's: it was not passed, so a plugin asking for it failed in fused sweeps (and pluggy warned)."""
    site = make_plugin(tmp_path / "site", "seer", OPTIMIZER_PLUGIN)
    args = ("-m", "optimizer.lr=0.01,0.02", "trainer.epochs=2", "trainer.progress=false", "tracking=none")
    seen = {}
    for launcher in (FUSED, "hydra/launcher=basic"):
        cwd = tmp_path / launcher.split("=")[1]
        cwd.mkdir()
        proc = succeeded(cli(cwd, *args, launcher, path=(site,)))
        assert "cannot be found in this hook call" not in proc.stderr, proc.stderr
        seen[launcher] = {job: (r["metrics"]["seen_lr"], r["metrics"]["seen_steps"]) for job, r in results(cwd).items()}
    assert seen[FUSED] == seen["hydra/launcher=basic"]
    assert [lr for lr, _ in seen[FUSED].values()] == [0.01, 0.02]
