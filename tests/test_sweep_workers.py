"""A sweep's command tells the truth about its jobs: a joblib worker killed outright (SIGKILL, the OOM
killer) fails only its own job, recorded KILLED, while the other jobs go on, and the command exits
non-zero; a re-run resumes exactly that job. A sweep whose every job fails exits non-zero, with 2 when
each failed on a config mistake (as a single run does).

With real processes and signals, bounded in time; afterwards the run folders, the MLflow store (runs per
status, metric points per run: none lost, none duplicated) and the processes left are checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("mlflow")

from tests.test_faults import (  # noqa: E402  (the fault suite's readers of journals, stores and processes)
    all_runs,
    assert_no_process_left,
    journal,
    journal_epochs,
    metric_steps,
    store,
    sync,
)

SPIRAL = ("trainer.progress=false",)
RAY = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("hydra_plugins.hydra_ray_launcher")
if RAY:
    from tests.test_scaleout_ray import RAY_ENV


def children_by_lr(uri: str) -> dict[str, list]:
    runs: dict[str, list] = {}
    for run in all_runs(uri):
        if run.data.tags.get("labnet.role") != "sweep":
            runs.setdefault(run.data.params["optimizer.lr"], []).append(run)
    return runs


def job_folder(cwd: Path, job: int, epochs: int, timeout: float = 180) -> Path:
    """Job ``job``'s folder once its journal holds ``epochs`` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in [p.parent for p in cwd.glob(f"multirun/*/*/{job}/journal.jsonl")]:
            if len(journal_epochs(folder)) >= epochs:
                return folder
        time.sleep(0.05)
    raise AssertionError(f"job {job} under {cwd} did not reach {epochs} epochs in {timeout} s")


def writer_of(path: Path) -> int:
    """The process that holds ``path`` open (a job's journal: the worker training that job)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if any(os.readlink(fd) == str(path) for fd in (entry / "fd").iterdir()):
                    return int(entry.name)
            except OSError:
                continue
    raise AssertionError(f"no process holds {path} open")


def test_a_killed_joblib_worker_fails_only_its_own_job_and_the_rerun_resumes_it(tmp_path, cli, cli_start):
    epochs = 600
    args = (
        "-m",
        "optimizer.lr=0.01,0.02,0.03",
        f"trainer.epochs={epochs}",
        "hydra/launcher=joblib",  # (the spelling of the README)
        "hydra.launcher.n_jobs=2",
        *SPIRAL,
    )
    proc = cli_start(tmp_path, *args)
    folder = job_folder(tmp_path, 1, 10)
    worker = writer_of((folder / "journal.jsonl").resolve())
    assert worker != proc.pid, "the job runs in a worker process"
    os.kill(worker, signal.SIGKILL)  # as the OOM killer does
    out, err = proc.communicate(timeout=300)

    assert proc.returncode == 1, err
    assert "TerminatedWorkerError" not in err and "Traceback" not in err, err
    assert f"job 1 [optimizer.lr=0.02 trainer.epochs={epochs} trainer.progress=False] KILLED" in err
    assert "killed by SIGKILL" in err and "run the same command again" in err
    assert "3 jobs; 2 trained; 1 killed" in out, out
    results = {int(p.parent.name): json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/*/result.json")}
    assert {job: r["status"] for job, r in results.items()} == {0: "FINISHED", 1: "KILLED", 2: "FINISHED"}
    assert "SIGKILL" in results[1]["error"]
    killed_at = journal_epochs(folder)
    assert journal(folder)[-1]["type"] == "end" and journal(folder)[-1]["status"] == "KILLED"
    assert killed_at == list(range(1, len(killed_at) + 1)) and len(killed_at) < epochs
    with np.load(folder / "checkpoint.npz", allow_pickle=False) as state:  # (a SIGKILL may land between an
        saved = int(state["epoch"])  # epoch's journal record and its checkpoint: the run resumes from the checkpoint)
    assert killed_at[-1] - 1 <= saved <= killed_at[-1]
    assert_no_process_left(tmp_path)

    sync(cli, tmp_path)
    uri = store(tmp_path)
    runs = children_by_lr(uri)
    assert {lr: [r.info.status for r in rs] for lr, rs in runs.items()} == {
        "0.01": ["FINISHED"],
        "0.02": ["KILLED"],
        "0.03": ["FINISHED"],
    }
    assert metric_steps(uri, runs["0.02"][0].info.run_id) == killed_at, "every journaled epoch, once"
    for lr in ("0.01", "0.03"):
        assert metric_steps(uri, runs[lr][0].info.run_id) == list(range(1, epochs + 1))

    rerun = cli(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert "2 of 3 jobs already finished, skipped" in rerun.stdout, rerun.stdout
    assert f"1 resumed from epoch {saved}" in rerun.stdout, rerun.stdout
    sync(cli, tmp_path)
    again = children_by_lr(uri)
    assert {lr: [r.info.run_id for r in rs] for lr, rs in again.items()} == {
        lr: [r.info.run_id for r in rs] for lr, rs in runs.items()
    }, "the killed job resumed in its own MLflow run; the finished ones were not trained again"
    assert Counter(r.info.status for rs in again.values() for r in rs) == {"FINISHED": 3}
    assert metric_steps(uri, again["0.02"][0].info.run_id) == list(range(1, epochs + 1))
    assert_no_process_left(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "code", "words"),
    [
        (("trainer.epochs=-1",), 2, ["every job failed on a config mistake", "trainer.epochs=-1", ">= 1"]),
        (
            ("+optimizer.foo=1", "trainer.epochs=1"),
            2,
            ["every job failed on a config mistake", "unknown key optimizer.foo", "valid keys: lr"],
        ),
        (("optimizer=sgd", "trainer.epochs=2", "optimizer.lr=1e30,1e31"), 1, ["every job failed", "lr=1e+30"]),
    ],
    ids=["bad-value", "unknown-key", "diverged"],
)
def test_a_sweep_whose_every_job_fails_exits_non_zero(tmp_path, cli, overrides, code, words):
    lrs = () if any(o.startswith("optimizer.lr=") for o in overrides) else ("optimizer.lr=0.1,0.2",)
    proc = cli(tmp_path, "-m", *lrs, *overrides, "tracking=none", *SPIRAL)
    assert proc.returncode == code, proc.stderr
    assert "2 jobs; 0 trained; 2 failed" in proc.stdout, proc.stdout
    message = proc.stderr.split("labnet: error: ", 1)[1]
    for word in words:
        assert word in message, (word, proc.stderr)
    assert "Traceback" not in proc.stderr
    results = [json.loads(p.read_text()) for p in tmp_path.glob("multirun/*/*/*/result.json")]
    assert [r["status"] for r in results] == ["FAILED", "FAILED"]
    assert {r["config_mistake"] for r in results} == {code == 2}


def test_labnet_sweep_raises_the_command_lines_error_when_every_job_fails_on_a_config_mistake(tmp_path, monkeypatch):
    import labnet

    monkeypatch.chdir(tmp_path)
    with pytest.raises(labnet.ConfigError, match=r"every job failed on a config mistake: trainer.epochs=-1: must be"):
        labnet.sweep("optimizer.lr=0.1,0.2", trainer={"epochs": -1}, tracking="none")
    with pytest.raises(labnet.ConfigError, match=r"sweep.rerun='some': accepted are missing"):  # (before any job)
        labnet.sweep("optimizer.lr=0.1,0.2", sweep={"rerun": "some"}, tracking="none")


@pytest.mark.skipif(not RAY, reason="Ray is not installed: pip install -e '.[ray]'")
@pytest.mark.xdist_group("ray")  # (the test worker that runs the Ray head)
def test_ctrl_c_on_a_ray_sweep_stops_every_job_and_the_rerun_resumes_them(tmp_path, cli, cli_start, ray_head):
    epochs = 600
    args = (
        "-m",
        "hydra/launcher=labnet_ray",
        f"hydra.launcher.ray.init.address={ray_head['address']}",
        "optimizer.lr=0.01,0.02,0.03",  # 3 jobs on 2 CPUs: the third waits for one
        f"trainer.epochs={epochs}",
        *SPIRAL,
    )
    proc = cli_start(tmp_path, *args, **RAY_ENV)
    started = [job_folder(tmp_path, job, 10) for job in (0, 1)]
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal
    stopped = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and time.monotonic() - stopped < 60
    for folder in started:
        end = journal(folder)[-1]
        assert end["type"] == "end" and end["status"] == "KILLED", folder
        # stopped as Ctrl-C stops a run (Ray interrupts the task), not SIGKILLed by Ray: the run wrote its end
        # and a checkpoint of the step it was at itself
        assert "interrupted by SIGINT" in end["error"], end
        assert json.loads((folder / "result.json").read_text())["status"] == "KILLED"
        assert (folder / "checkpoint.npz").is_file()
    epochs_at_stop = {folder: journal_epochs(folder) for folder in started}
    time.sleep(1.0)
    assert {f: journal_epochs(f) for f in started} == epochs_at_stop, "no job trains on after the command ended"
    assert not list(ray_head["head_dir"].glob(".labnet/pending/*")), "the jobs' runs belong to the command's folder"
    assert_no_process_left(tmp_path)  # (the MLflow syncer of this folder ends once it has mirrored the jobs)

    sync(cli, tmp_path)
    uri = store(tmp_path)
    runs = children_by_lr(uri)
    assert {lr: [r.info.status for r in rs] for lr, rs in runs.items()} == {"0.01": ["KILLED"], "0.02": ["KILLED"]}
    for folder in started:
        lr = json.loads((folder / "result.json").read_text())["params"]["optimizer.lr"]
        assert metric_steps(uri, runs[str(lr)][0].info.run_id) == epochs_at_stop[folder], "every epoch, once"

    rerun = cli(tmp_path, *args, **RAY_ENV)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.count("1 resumed from epoch") == 2, rerun.stdout
    sync(cli, tmp_path)
    again = children_by_lr(uri)
    assert {lr: len(rs) for lr, rs in again.items()} == {"0.01": 1, "0.02": 1, "0.03": 1}, "one MLflow run per job"
    for lr in ("0.01", "0.02"):
        assert again[lr][0].info.run_id == runs[lr][0].info.run_id, "the killed job resumed in its own run"
    for rs in again.values():
        assert rs[0].info.status == "FINISHED"
        assert metric_steps(uri, rs[0].info.run_id) == list(range(1, epochs + 1))
    assert_no_process_left(tmp_path)


@pytest.mark.skipif(not RAY, reason="Ray is not installed: pip install -e '.[ray]'")
@pytest.mark.xdist_group("ray")  # (the test worker that runs the Ray head)
def test_sigterm_to_a_ray_sweeps_command_alone_stops_its_jobs_as_ctrl_c_does(tmp_path, cli_start, ray_head):
    """A process manager's SIGTERM reaches the command only (Ray's workers are not its children): the command
    interrupts the jobs through Ray as Ctrl-C does (each run ends KILLED itself, with its checkpoint), exits 143,
    and neither a job nor its worker trains on."""
    args = (
        "-m",
        "hydra/launcher=labnet_ray",
        f"hydra.launcher.ray.init.address={ray_head['address']}",
        "optimizer.lr=0.01,0.02",
        "trainer.epochs=600",
        *SPIRAL,
    )
    proc = cli_start(tmp_path, *args, **RAY_ENV)
    started = [job_folder(tmp_path, job, 10) for job in (0, 1)]
    proc.send_signal(signal.SIGTERM)  # (the command's process only, not its group)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    for folder in started:
        end = journal(folder)[-1]
        assert end["type"] == "end" and end["status"] == "KILLED", folder
        assert "interrupted by SIGINT" in end["error"], end  # (Ray interrupts a task as Ctrl-C does)
        assert (folder / "checkpoint.npz").is_file()
    epochs_at_stop = {folder: journal_epochs(folder) for folder in started}
    time.sleep(1.0)
    assert {f: journal_epochs(f) for f in started} == epochs_at_stop, "no job trains on after the command ended"
    assert_no_process_left(tmp_path)
