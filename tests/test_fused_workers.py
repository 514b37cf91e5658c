"""The fused launcher's groups spread over worker processes (``hydra.launcher.n_jobs``): each member is still a
run like any other (folder, journal, checkpoint, weights, result, MLflow child run under the sweep's parent)
with the weights the in-process launcher gives it, the sweeper gets each job's objective in job order, Ctrl-C
leaves every member KILLED with its checkpoint and the same command finishes each job once; a bad n_jobs is a
config mistake that names the value.

With real processes and signals, bounded in time; spiral data (240 training points), a few epochs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from labnet.fused.members import stack_threads
from labnet.fused.side_by_side import stack_count
from labnet.fused.workers import worker_limit
from labnet.record.journal import read_state
from labnet.train.checkpoint import load_npz

pytest.importorskip("joblib")
mlflow = pytest.importorskip("mlflow")

from tests.conftest import empty_store, labnet_env  # noqa: E402
from tests.test_faults import (  # noqa: E402
    all_runs,
    assert_no_process_left,
    exit_code_of,
    journal,
    journal_epochs,
    metric_steps,
    stop_as_a_user,
    sync,
)

FUSED = "hydra/launcher=labnet_fused"
# optimizer.lr first: the groups (one per batch size) hold jobs 0, 2 and 1, 3, so job order is not unit order
GRID = ("-m", "optimizer.lr=0.01,0.1", "trainer.batch_size=50,100", "trainer.progress=false")

#: labnet's command with a spy on Hydra's sweeper: what its sweep got, as [overrides, return value] in order
SPY = """
import json, os, sys
from hydra.core.plugins import Plugins
from labnet.__main__ import main

instantiate_sweeper = Plugins.instantiate_sweeper

def spying(self, **kwargs):
    sweeper = instantiate_sweeper(self, **kwargs)
    sweep = sweeper.sweep

    def spy(arguments):
        returns = sweep(arguments)
        got = [[list(r.overrides), r.return_value] for batch in returns for r in batch]
        with open("returns.json", "w") as f:
            json.dump({"pid": os.getpid(), "returns": got}, f)
        return returns

    sweeper.sweep = spy
    return sweeper

Plugins.instantiate_sweeper = spying
sys.exit(main(sys.argv[1:]))
"""


def job_folders(cwd: Path) -> dict[int, Path]:
    return {int(p.name): p for p in cwd.glob("multirun/*/*/*") if p.is_dir() and p.name.isdigit()}


def results(cwd: Path) -> dict[int, dict]:
    return {job: json.loads((f / "result.json").read_text()) for job, f in job_folders(cwd).items()}


def test_two_groups_on_two_workers_record_each_member_as_the_in_process_launcher_and_return_its_objective(
    tmp_path, cli
):
    args = (*GRID, "trainer.epochs=3", "trainer.dtype=float64", FUSED, "tracking.uri=sqlite:///mlflow.db")
    spread, here = tmp_path / "spread", tmp_path / "here"
    spread.mkdir(), here.mkdir()
    (spread / "spy.py").write_text(SPY)
    uri = empty_store(spread / "mlflow.db")
    proc = subprocess.run(
        [sys.executable, "spy.py", *args, "hydra.launcher.n_jobs=2"],
        cwd=spread,
        env=labnet_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 jobs: 4 in 2 fused groups" in proc.stdout
    assert "fused group of 2: jobs [0, 2]" in proc.stdout and "fused group of 2: jobs [1, 3]" in proc.stdout
    assert "2 units on 2 worker processes (hydra.launcher.n_jobs=2)" in proc.stdout, proc.stdout
    reference = cli(here, *args)  # the same fused groups, in the launching process
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert "worker processes" not in reference.stdout

    got, want = results(spread), results(here)
    assert sorted(got) == sorted(want) == [0, 1, 2, 3]
    pids = {}
    for job in want:
        assert got[job]["status"] == "FINISHED" and got[job]["job"] == job
        assert got[job]["overrides"] == want[job]["overrides"] and got[job]["params"] == want[job]["params"]
        assert len(got[job]["history"]) == 3 and journal_epochs(job_folders(spread)[job]) == [1, 2, 3]
        start = read_state(job_folders(spread)[job]).start
        assert start["overrides"] == want[job]["overrides"] and start["tags"]["labnet.job"] == str(job)
        pids[job] = start["pid"]
        a, b = load_npz(job_folders(spread)[job] / "weights.npz"), load_npz(job_folders(here)[job] / "weights.npz")
        assert sorted(a) == sorted(b)
        for key in b:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-10, atol=1e-12, err_msg=f"job {job} {key}")
        ckpt = load_npz(job_folders(spread)[job] / "checkpoint.npz")
        assert int(ckpt["epoch"]) == 3
    spied = json.loads((spread / "returns.json").read_text())
    assert pids[0] == pids[2] != pids[1] == pids[3], "each group trained in a worker of its own"
    assert spied["pid"] not in pids.values(), "not in the launching process"

    # the sweeper got each job's objective, in job order
    returns = spied["returns"]
    assert [r[0] for r in returns] == [got[j]["overrides"] for j in range(4)]
    assert [r[1] for r in returns] == pytest.approx([got[j]["objective"] for j in range(4)])
    assert len({r[1] for r in returns}) > 1, "the objectives differ (else their order proves nothing)"

    runs = all_runs(uri)
    (parent,) = [r for r in runs if r.data.tags.get("labnet.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(int(r.data.tags["labnet.job"]) for r in children) == [0, 1, 2, 3]
    for run in children:
        job = int(run.data.tags["labnet.job"])
        assert run.info.status == "FINISHED"
        assert float(run.data.params["optimizer.lr"]) == got[job]["params"]["optimizer.lr"]
        assert metric_steps(uri, run.info.run_id) == [1, 2, 3]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_sweep_leaves_its_members_killed_and_the_same_command_finishes_each_job_once(
    tmp_path, cli, cli_start, sig
):
    epochs = 400  # (a spiral epoch takes a few ms: seconds in all, stopped after the first)
    args = (*GRID, f"trainer.epochs={epochs}", "health=off", FUSED, "hydra.launcher.n_jobs=2")
    args += ("tracking.uri=sqlite:///mlflow.db",)
    proc = cli_start(tmp_path, *args, LABNET_SYNC="background")  # (a user's default: ending waits for no store)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(tmp_path.glob("multirun/*/*/*/checkpoint.npz"))) < 4:
        time.sleep(0.1)
    assert len(list(tmp_path.glob("multirun/*/*/*/checkpoint.npz"))) == 4, "every member trains"
    stop_as_a_user(proc, sig)
    stopped = time.monotonic()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == exit_code_of(sig), err[-3000:]
    assert time.monotonic() - stopped < 20, "well within the workers' grace time, resource trackers left alone"
    assert err.count("fused group interrupted") == 2, err[-3000:]  # (each worker's group)
    assert "Traceback" not in err, err[-3000:]
    # the workers were stopped by their launch, and nothing else was left to stop (loky's resource trackers,
    # which ignore SIGINT and end with the command, used to be counted here after the whole grace time)
    assert err.rstrip().endswith("labnet: interrupted"), err[-3000:]
    first = results(tmp_path)
    assert {j: r["status"] for j, r in first.items()} == dict.fromkeys(range(4), "KILLED")
    saved = {}
    for job, folder in job_folders(tmp_path).items():
        assert journal(folder)[-1]["type"] == "end" and journal(folder)[-1]["status"] == "KILLED"
        saved[job] = int(load_npz(folder / "checkpoint.npz")["epoch"])
        # (Ctrl-C may land between a member's epoch record and its checkpoint: it resumes from its checkpoint)
        assert len(first[job]["history"]) - 1 <= saved[job] <= len(first[job]["history"]) < epochs
    assert_no_process_left(tmp_path)
    if sig == signal.SIGTERM:
        return  # (the resume is the same after either signal)

    again = cli(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "jobs 0-3 run alone: killed earlier: resumes from its checkpoint" in again.stdout, again.stdout
    assert "4 units on 2 worker processes" in again.stdout
    assert again.stdout.count("resumed from epoch") == 4, again.stdout
    latest = max(tmp_path.glob("multirun/*/*"), key=lambda p: p.stat().st_mtime)
    resumed = {int(p.parent.name): json.loads(p.read_text()) for p in latest.glob("*/result.json")}
    assert {j: r["resumed_from_epoch"] for j, r in resumed.items()} == saved
    assert all(r["status"] == "FINISHED" and len(r["history"]) == epochs for r in resumed.values())

    sync(cli, tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    children = [r for r in all_runs(uri) if r.data.tags.get("labnet.role") != "sweep"]
    assert Counter(r.info.status for r in children) == {"FINISHED": 4}, "each job continued in its own run"
    assert sorted((r.data.params["optimizer.lr"], r.data.params["trainer.batch_size"]) for r in children) == [
        ("0.01", "100"),
        ("0.01", "50"),
        ("0.1", "100"),
        ("0.1", "50"),
    ]
    for run in children:
        assert metric_steps(uri, run.info.run_id) == list(range(1, epochs + 1)), "every epoch once"
    assert_no_process_left(tmp_path)


def test_a_worker_killed_outright_fails_only_its_own_groups_members(tmp_path, cli_start):
    from tests.test_sweep_workers import writer_of

    epochs = 300
    args = (*GRID, f"trainer.epochs={epochs}", "health=off", FUSED, "hydra.launcher.n_jobs=2", "tracking=none")
    proc = cli_start(tmp_path, *args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(tmp_path.glob("multirun/*/*/*/checkpoint.npz"))) < 4:
        time.sleep(0.1)
    folders = job_folders(tmp_path)
    worker = writer_of((folders[0] / "journal.jsonl").resolve())  # the worker training jobs 0 and 2
    assert worker != proc.pid and writer_of((folders[2] / "journal.jsonl").resolve()) == worker
    os.kill(worker, signal.SIGKILL)  # as the OOM killer does
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 1, err[-3000:]
    assert "Traceback" not in err and "TerminatedWorkerError" not in err, err[-3000:]
    got = results(tmp_path)
    assert {j: r["status"] for j, r in got.items()} == {0: "KILLED", 1: "FINISHED", 2: "KILLED", 3: "FINISHED"}
    for job in (0, 2):
        assert "killed by SIGKILL" in got[job]["error"] and f"job {job} [" in err
        assert journal(folders[job])[-1]["type"] == "end" and journal(folders[job])[-1]["status"] == "KILLED"
        assert (folders[job] / "checkpoint.npz").is_file()
    assert all(len(got[j]["history"]) == epochs for j in (1, 3)), "the other group trained on"
    assert "4 jobs; 2 trained; 2 killed" in out, out
    assert_no_process_left(tmp_path)


@pytest.mark.parametrize(
    ("grid", "n_jobs", "line"),
    [
        (("optimizer.lr=0.1", "trainer.batch_size=50,100"), "1", "2 units, one after another, in this process"),
        (("optimizer.lr=0.1,0.2",), "2", "one unit: it runs in this process"),
    ],
    ids=["n_jobs=1", "one-unit"],
)
def test_without_two_units_and_two_workers_the_units_run_in_the_launching_process(
    tmp_path, cli_in_process, grid, n_jobs, line
):
    args = ("-m", *grid, "trainer.epochs=1", FUSED, f"hydra.launcher.n_jobs={n_jobs}", "tracking=none")
    proc = cli_in_process(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    assert f"labnet:   {line} (hydra.launcher.n_jobs={n_jobs})" in proc.stdout, proc.stdout
    got = results(tmp_path)
    assert [got[j]["status"] for j in sorted(got)] == ["FINISHED", "FINISHED"]
    assert {read_state(f).start["pid"] for f in job_folders(tmp_path).values()} == {os.getpid()}


@pytest.mark.parametrize("value", ["0", "-99", "x", "2.5"])
def test_a_bad_n_jobs_is_a_config_mistake_that_names_the_value(tmp_path, cli_in_process, value):
    proc = cli_in_process(
        tmp_path, "-m", "optimizer.lr=0.1,0.2", FUSED, f"hydra.launcher.n_jobs={value}", "tracking=none"
    )
    assert proc.returncode == 2, proc.stderr
    message = proc.stderr.split("labnet: error: ", 1)[1]
    assert message.startswith(f"hydra.launcher.n_jobs={value if value[0] in '-0123456789' else repr(value)}:")
    assert "accepted are null or 1" in message and "worker processes >= 2" in message, message
    assert not list(tmp_path.glob("multirun/*/*/*/journal.jsonl")), "nothing ran"


def test_worker_counts_and_the_cores_they_share(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [worker_limit(v) for v in (None, 1, 3, -1, -2, -8)] == [1, 1, 3, 8, 7, 1]
    for bad in (0, -9, "2", True, 1.0):
        with pytest.raises(Exception, match=r"hydra.launcher.n_jobs=.*: accepted are .*this machine has 8 cores"):
            worker_limit(bad)
    # a group's stacks: the cores shared among the workers, at most one per member; stacks x workers x threads
    assert stack_count(None, 12) == 8 and stack_count(None, 12, workers=2) == 4 and stack_count(None, 3, 2) == 3
    assert stack_count(6, 12, workers=4) == 1 and stack_count(2, 12, workers=4) == 1
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"trainer": {"threads": None}})
    assert stack_threads(cfg, 4, workers=2) == 1 and stack_threads(cfg, 1, workers=2) == 4
    assert stack_threads(cfg, 2, workers=1) == 4
    assert stack_threads(OmegaConf.create({"trainer": {"threads": 3}}), 4, workers=2) == 3  # (asked for)
