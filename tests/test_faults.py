"""Faults provoked as users meet them, with real processes and signals, and what is left afterwards.

Each test interrupts, kills or starts labnet at the same time as another labnet, then checks the run
folders (the journal parses, the result is whole) and the MLflow store (runs per status, metric
points per run: none lost, none duplicated, each run's weights its own), and that no process of the
test is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

SPIRAL = ("trainer.progress=false",)


def stop_as_a_user(proc: subprocess.Popen, sig: int) -> None:
    """Stop a command started in a process group of its own as its user would: Ctrl-C in a terminal reaches the
    whole process group; SIGTERM (`kill PID`, a process manager) the command's process only."""
    if sig == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(sig)


def exit_code_of(sig: int) -> int:
    """What a labnet command stopped by ``sig`` exits with (as a shell reports a signal: 128 + its number)."""
    return 128 + int(sig)


def store(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=1000) if ids else []


def journal(folder: Path) -> list[dict]:
    """Every line of the run's journal parses (a line cut by a kill may only be the last)."""
    lines = (folder / "journal.jsonl").read_text().splitlines()
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except ValueError:
            assert i == len(lines) - 1, f"line {i + 1} of {folder}/journal.jsonl is cut short"
    return records


def journal_epochs(folder: Path) -> list[int]:
    return [r["epoch"] for r in journal(folder) if r["type"] == "epoch"]


def metric_steps(uri: str, run_id: str, key: str = "val_accuracy") -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def run_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("journal.jsonl"))


def wait_for_epochs(folder_glob, cwd: Path, epochs: int, timeout: float = 60) -> Path:
    """The run folder once its journal holds ``epochs`` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in [p.parent for p in cwd.glob(folder_glob)]:
            if len(journal_epochs(folder)) >= epochs:
                return folder
        time.sleep(0.05)
    raise AssertionError(f"no run under {cwd} reached {epochs} epochs in {timeout} s")


def processes_in(folder: Path) -> list[str]:
    """Processes whose working folder is inside ``folder`` (a test's runs, workers and syncers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == str(folder) or cwd.startswith(str(folder) + os.sep):
            found.append(f"{entry.name}: {cmdline}")
    return found


def assert_no_process_left(folder: Path, timeout: float = 20.0) -> None:
    """Workers and the background syncer end on their own (a syncer lingers a few seconds when idle)."""
    deadline = time.monotonic() + timeout
    while (left := processes_in(folder)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind in {folder}: {left}"


def sync(cli, cwd: Path, *folders: Path) -> subprocess.CompletedProcess:
    proc = cli(cwd, "sync", "--wait", *map(str, folders))
    assert proc.returncode == 0, proc.stderr
    return proc


# --------------------------------------------------------------------------- runs started together


def test_runs_started_together_in_a_fresh_folder_each_keep_their_own_record(tmp_path, cli_start):
    lrs = ["0.01", "0.05", "0.02"]
    procs = [cli_start(tmp_path, "trainer.epochs=3", f"optimizer.lr={lr}", *SPIRAL, fresh_store=True) for lr in lrs]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    folders = run_folders(tmp_path / "outputs")
    assert len(folders) == 3, "each run has a folder of its own"
    runs = all_runs(store(tmp_path))
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    client = MlflowClient(store(tmp_path))
    for run in runs:
        folder = Path(run.data.tags["labnet.output_dir"])
        assert (
            run.data.params["optimizer.lr"]
            == json.loads((folder / "result.json").read_text())["params"]["optimizer.lr"].__str__()
        )
        logged = Path(client.download_artifacts(run.info.run_id, "weights.npz", str(tmp_path / run.info.run_id)))
        with np.load(logged) as a, np.load(folder / "weights.npz") as b:
            assert all(np.array_equal(a[k], b[k]) for k in b.files), "the run's weights artifact is its own"
        assert metric_steps(store(tmp_path), run.info.run_id) == [1, 2, 3]
    assert sorted(r.data.params["optimizer.lr"] for r in runs) == sorted(lrs)
    assert_no_process_left(tmp_path)


#: on PYTHONPATH, stops its process in the middle of MLflow's schema migrations (after the third table a migration
#: creates), where the database is half migrated: with SIGKILL, or, when $PAUSE_UNTIL is set, by pausing until that
#: file exists (having written $PAUSE_UNTIL.paused): a store creation caught half-way, on cue
STOPPED_IN_MIGRATION = """
import importlib
import importlib.abc
import os
import signal
import sys
import time


def stop():
    cue = os.environ.get("PAUSE_UNTIL")
    if not cue:
        os.kill(os.getpid(), signal.SIGKILL)
    open(cue + ".paused", "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists(cue) and time.monotonic() < deadline:
        time.sleep(0.05)


class StopInMigration(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "alembic.operations":
            return None
        sys.meta_path.remove(self)
        module = importlib.import_module(name)
        create_table, made = module.Operations.create_table, []

        def counted(operations, *args, **kwargs):
            table = create_table(operations, *args, **kwargs)
            made.append(table)
            if len(made) == 3:
                stop()
            return table

        module.Operations.create_table = counted
        return module.__spec__


sys.meta_path.insert(0, StopInMigration())
"""


def test_a_store_whose_creation_was_killed_is_made_anew_by_the_next_sync(tmp_path, cli):
    """MLflow builds a new store by migrating it in place: a sync killed meanwhile must not leave a half-made
    database that every later sync fails on ('table registered_models already exists')."""
    trained = cli(tmp_path, "trainer.epochs=3", "tracking.sync=later", *SPIRAL, fresh_store=True)
    assert trained.returncode == 0, trained.stderr
    assert not (tmp_path / "mlflow.db").exists(), "tracking.sync=later opens no store"
    (folder,) = run_folders(tmp_path / "outputs")
    killer = tmp_path / "killer"
    killer.mkdir()
    (killer / "sitecustomize.py").write_text(STOPPED_IN_MIGRATION)
    killed = cli(tmp_path, "sync", "--wait", str(folder), path=(killer,), fresh_store=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = cli(tmp_path, "sync", "--wait", str(folder), fresh_store=True)
    assert again.returncode == 0, again.stderr
    (run,) = all_runs(store(tmp_path))
    assert run.info.status == "FINISHED" and metric_steps(store(tmp_path), run.info.run_id) == [1, 2, 3]
    assert not [*tmp_path.glob(".*partial*")], "the half-made store is gone"


#: another program opening a store as `mlflow ui` does: MLflow creates a missing one in place
OTHER_PROGRAM = """
import sys
from mlflow.tracking import MlflowClient

MlflowClient(sys.argv[1]).create_experiment("made-by-another-program")
"""


def _wait_for_file(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path} did not appear"


def test_a_store_another_program_creates_meanwhile_is_not_replaced(tmp_path, cli, cli_start):
    """`python -m labnet && mlflow ui`: the UI creates the folder's store in place while the run's syncer may be
    building it under another name. The syncer must not rename its store over the UI's (the UI then fails on
    its vanished file, and what it stored is lost): both succeed, and the store holds what each put there."""
    import sys

    trained = cli(tmp_path, "trainer.epochs=3", "tracking.sync=later", *SPIRAL, fresh_store=True)
    assert trained.returncode == 0, trained.stderr
    (folder,) = run_folders(tmp_path / "outputs")
    pauser = tmp_path / "pauser"
    pauser.mkdir()
    (pauser / "sitecustomize.py").write_text(STOPPED_IN_MIGRATION)
    cue = tmp_path / "go"
    sync = cli_start(tmp_path, "sync", "--wait", str(folder), path=(pauser,), fresh_store=True, PAUSE_UNTIL=str(cue))
    _wait_for_file(Path(f"{cue}.paused"))  # the syncer's store is half made
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    other = subprocess.run(
        [sys.executable, "-c", OTHER_PROGRAM, store(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    cue.touch()
    out, err = sync.communicate(timeout=120)
    assert other.returncode == 0, other.stderr[-3000:]
    assert sync.returncode == 0, err[-3000:]
    client = MlflowClient(store(tmp_path))
    assert client.get_experiment_by_name("made-by-another-program") is not None, "the other program's store is kept"
    (run,) = all_runs(store(tmp_path))
    assert run.info.status == "FINISHED" and metric_steps(store(tmp_path), run.info.run_id) == [1, 2, 3]
    assert not [*tmp_path.glob(".*partial*")]


def test_sweeps_started_together_keep_their_jobs_apart(tmp_path, cli_start):
    sweeps = [
        cli_start(tmp_path, "-m", f"optimizer.lr={a},{b}", "trainer.epochs=2", *SPIRAL, fresh_store=True)
        for a, b in (("0.01", "0.02"), ("0.03", "0.04"))
    ]
    for proc in sweeps:
        out, err = proc.communicate(timeout=400)
        assert proc.returncode == 0, err
    sweep_dirs = sorted(p.parent for p in (tmp_path / "multirun").glob("*/*/summary.csv"))
    assert len(sweep_dirs) == 2, "each sweep has a folder of its own"
    for sweep_dir in sweep_dirs:
        lines = (sweep_dir / "summary.csv").read_text().splitlines()
        assert len(lines) == 3
    runs = all_runs(store(tmp_path))
    children = [r for r in runs if r.data.tags.get("labnet.role") != "sweep"]
    assert len(children) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.01", "0.02", "0.03", "0.04"]
    assert_no_process_left(tmp_path)


# --------------------------------------------------------------------------- a run stopped


@pytest.mark.parametrize("when", ["at_start", "mid_run"])
def test_sigkill_leaves_a_killed_run_with_every_journaled_epoch(tmp_path, cli, cli_start, when):
    proc = cli_start(tmp_path, "trainer.epochs=2000", *SPIRAL, LABNET_SYNC="background")
    if when == "at_start":
        deadline = time.monotonic() + 60  # (killed once the run's journal holds its start, before any epoch)
        while not any(p.stat().st_size for p in tmp_path.glob("outputs/*/*/journal.jsonl")):
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.01)
        folder = next(tmp_path.glob("outputs/*/*/journal.jsonl")).parent
    else:
        folder = wait_for_epochs("outputs/*/*/journal.jsonl", tmp_path, 20)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    sync(cli, tmp_path, folder)  # (killed before the tracker registered it, only the folder knows the run)
    epochs = journal_epochs(folder)
    assert journal(folder)[-1]["type"] == "end" and journal(folder)[-1]["status"] == "KILLED"
    runs = all_runs(store(tmp_path))
    assert [r.info.status for r in runs] == ["KILLED"], "never RUNNING forever, never twice"
    assert metric_steps(store(tmp_path), runs[0].info.run_id) == epochs, "every journaled epoch, once"
    sync(cli, tmp_path, folder)  # syncing again changes nothing
    assert metric_steps(store(tmp_path), runs[0].info.run_id) == epochs
    assert len(all_runs(store(tmp_path))) == 1
    assert_no_process_left(tmp_path)


def test_double_ctrl_c_ends_the_run_killed_at_once(tmp_path, cli_start):
    proc = cli_start(tmp_path, "trainer.epochs=5000", *SPIRAL)
    folder = wait_for_epochs("outputs/*/*/journal.jsonl", tmp_path, 10)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "KILLED"
    runs = all_runs(store(tmp_path))
    assert [r.info.status for r in runs] == ["KILLED"]
    assert metric_steps(store(tmp_path), runs[0].info.run_id) == journal_epochs(folder)
    assert time.monotonic() - started < 60
    assert_no_process_left(tmp_path)


def test_sigterm_then_labnet_resume_finishes_the_same_run(tmp_path, cli, cli_start):
    args = ("trainer.epochs=300", "optimizer.lr=0.01", "model.hidden_sizes=[20]", *SPIRAL)
    proc = cli_start(tmp_path, *args, LABNET_SYNC="background")
    folder = wait_for_epochs("outputs/*/*/journal.jsonl", tmp_path, 30)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert f"labnet resume {folder}" in err, "the message gives the command that resumes the run"
    interrupted_at = journal_epochs(folder)[-1]
    resumed = cli(tmp_path, "resume", str(folder))
    assert resumed.returncode == 0, resumed.stderr
    assert journal_epochs(folder) == list(range(1, 301)), "each epoch once, in the run's one journal"
    runs = all_runs(store(tmp_path))
    assert [r.info.status for r in runs] == ["FINISHED"], "the resumed run continues its own MLflow run"
    assert metric_steps(store(tmp_path), runs[0].info.run_id) == list(range(1, 301))
    assert runs[0].data.params["optimizer.lr"] == "0.01" and interrupted_at < 300
    # the same run, uninterrupted, ends with the same weights (resume is exact)
    whole = tmp_path / "whole"
    whole.mkdir()
    assert cli(whole, *args, "tracking=none").returncode == 0
    with np.load(folder / "weights.npz") as a, np.load(next(whole.glob("outputs/*/*/weights.npz"))) as b:
        assert all(np.array_equal(a[k], b[k]) for k in b.files)
    assert_no_process_left(tmp_path)


# --------------------------------------------------------------------------- resume that cannot go wrong


def test_resume_refuses_a_checkpoint_of_another_config_and_one_past_the_epochs(tmp_path, cli):
    assert cli(tmp_path, "trainer.epochs=3", "tracking=none").returncode == 0
    checkpoint = next(tmp_path.glob("outputs/*/*/checkpoint.npz"))
    other = cli(tmp_path, "trainer.epochs=6", "optimizer.lr=0.05", "seed=3", f"trainer.resume={checkpoint}")
    assert other.returncode == 2
    assert "optimizer.lr: 0.001 -> 0.05" in other.stderr and "seed: 0 -> 3" in other.stderr
    past = cli(tmp_path, "trainer.epochs=2", f"trainer.resume={checkpoint}", "tracking=none")
    assert past.returncode == 2 and "after epoch 3" in past.stderr and "trainer.epochs=2" in past.stderr
    done = cli(tmp_path, "trainer.epochs=3", f"trainer.resume={checkpoint}", "tracking=none")
    assert done.returncode == 2, "a finished run has nothing to resume"
    allowed = cli(
        tmp_path,
        "trainer.epochs=5",
        "optimizer.lr=0.05",
        f"trainer.resume={checkpoint}",
        "trainer.resume_allow_changes=true",
    )
    assert allowed.returncode == 0, allowed.stderr
    (run,) = [r for r in all_runs(store(tmp_path))]
    assert run.data.tags["labnet.resume_changes"] == "optimizer.lr: 0.001 -> 0.05"
    assert metric_steps(store(tmp_path), run.info.run_id) == [4, 5]


def test_checkpoint_does_not_grow_with_the_epochs(tmp_path, cli):
    sizes = {}
    for epochs in (5, 200):
        cwd = tmp_path / str(epochs)
        cwd.mkdir()
        assert cli(cwd, f"trainer.epochs={epochs}", "tracking=none").returncode == 0
        sizes[epochs] = next(cwd.glob("outputs/*/*/checkpoint.npz")).stat().st_size
    assert abs(sizes[200] - sizes[5]) < 64, sizes  # (a few digits more in the step count)


# --------------------------------------------------------------------------- a plugin failing at the end


END_FAILS = """
import labnet


@labnet.hookimpl
def labnet_run_end(run, status):
    raise RuntimeError("the end hook broke")
"""


def test_a_plugin_raising_in_run_end_fails_the_run_everywhere(tmp_path, cli, make_plugin):
    site = make_plugin(tmp_path / "site", "end-fails", END_FAILS)
    proc = cli(tmp_path, "trainer.epochs=2", *SPIRAL, path=(site,))
    assert proc.returncode == 1
    assert "'end-fails' (end-fails 0.1) raised in labnet_run_end" in proc.stderr, proc.stderr
    folder = next(tmp_path.glob("outputs/*/*"))
    result = json.loads((folder / "result.json").read_text())
    assert result["status"] == "FAILED" and "the end hook broke" in result["error"]
    assert journal(folder)[-1]["status"] == "FAILED"
    (run,) = all_runs(store(tmp_path))
    assert run.info.status == "FAILED" and "end-fails" in run.data.tags["labnet.error"]
    assert metric_steps(store(tmp_path), run.info.run_id) == [1, 2]
    assert "model" not in {a.path for a in MlflowClient(store(tmp_path)).list_artifacts(run.info.run_id)}


# --------------------------------------------------------------------------- sweeps stopped


def loky_workers(folder: Path) -> list[str]:
    return [p for p in processes_in(folder) if "loky.backend" in p]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stopping_a_joblib_sweep_stops_its_workers_and_the_rerun_resumes_the_killed_jobs(tmp_path, cli, cli_start, sig):
    epochs = 300
    args = (
        "-m",
        "optimizer.lr=0.01,0.02,0.03",
        f"trainer.epochs={epochs}",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *SPIRAL,
    )
    proc = cli_start(tmp_path, *args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        started = [p.parent for p in tmp_path.glob("multirun/*/*/*/journal.jsonl")]
        if len(started) >= 2 and all(len(journal_epochs(f)) >= 5 for f in started):
            break
        time.sleep(0.05)
    stop_as_a_user(proc, sig)
    stopped = time.monotonic()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == exit_code_of(sig), err
    assert "interrupted" in err
    while loky_workers(tmp_path) and time.monotonic() - stopped < 15:
        time.sleep(0.1)
    assert not loky_workers(tmp_path), "no worker left behind"
    sync(cli, tmp_path)
    first = all_runs(store(tmp_path))
    statuses = Counter(r.info.status for r in first if r.data.tags.get("labnet.role") != "sweep")
    assert statuses["RUNNING"] == 0 and statuses["KILLED"] >= 1, statuses
    rerun = cli(tmp_path, *args)
    assert rerun.returncode == 0, rerun.stderr
    assert "resumed from epoch" in rerun.stdout
    runs = [r for r in all_runs(store(tmp_path)) if r.data.tags.get("labnet.role") != "sweep"]
    assert len(runs) == 3, "the killed jobs resumed in their own MLflow runs: one run per job"
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert metric_steps(store(tmp_path), run.info.run_id) == list(range(1, epochs + 1)), run.info.run_name
    assert_no_process_left(tmp_path)


# --------------------------------------------------------------------------- the disk and the store


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB file system of its own (tmpfs), or a skip where mounting is not allowed (not root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_names_the_path_and_keeps_the_record_readable(tmp_path, small_disk, cli):
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (2 * 1024 * 1024 - 400 * 1024))  # ~400 KB left: a few hundred epochs
    uri = store(tmp_path)
    proc = cli(small_disk, "trainer.epochs=100000", f"tracking.uri={uri}", "tracking.sync=later", *SPIRAL)
    assert proc.returncode == 1
    (folder,) = [p.parent for p in small_disk.glob("outputs/*/*/journal.jsonl")]
    assert "is full" in proc.stderr and str(folder) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    epochs = journal_epochs(folder)
    assert len(epochs) > 10 and epochs == list(range(1, len(epochs) + 1))
    for name in ("result.json", "checkpoint.npz", "weights.npz"):
        assert not (folder / name).exists() or (folder / name).stat().st_size > 0, f"{name} is whole or absent"
    filler.unlink()  # space again: the sync brings MLflow up to date
    sync(cli, small_disk)
    (run,) = all_runs(uri)
    assert run.info.status in ("FAILED", "KILLED")
    assert metric_steps(uri, run.info.run_id) == epochs


def test_a_locked_store_does_not_hold_the_run_and_catches_up_after(tmp_path, cli):
    import sqlite3

    assert cli(tmp_path, "trainer.epochs=2", *SPIRAL).returncode == 0  # the store exists
    lock = sqlite3.connect(tmp_path / "mlflow.db", timeout=1)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        proc = cli(tmp_path, "trainer.epochs=5", *SPIRAL, LABNET_SYNC="background")
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - started < 60
    finally:
        lock.rollback()
        lock.close()
    sync(cli, tmp_path)
    runs = all_runs(store(tmp_path))
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    newest = max(runs, key=lambda r: r.info.start_time)
    assert metric_steps(store(tmp_path), newest.info.run_id) == [1, 2, 3, 4, 5]


def test_a_broken_store_file_is_named_and_the_run_is_uploaded_once_it_is_fixed(tmp_path, cli):
    (tmp_path / "mlflow.db").write_bytes(b"this is not a database" * 100)
    proc = cli(tmp_path, "trainer.epochs=3", *SPIRAL, LABNET_SYNC="background")
    assert proc.returncode == 0, proc.stderr  # the run does not wait for MLflow, and its record is whole
    failed = cli(tmp_path, "sync", "--wait")
    assert failed.returncode == 1 and str(tmp_path / "mlflow.db") in failed.stderr, failed.stderr
    (tmp_path / "mlflow.db").rename(tmp_path / "broken.db")
    sync(cli, tmp_path)
    (run,) = all_runs(store(tmp_path))
    assert run.info.status == "FINISHED" and metric_steps(store(tmp_path), run.info.run_id) == [1, 2, 3]


def test_an_experiment_name_mlflow_cannot_take_is_refused_before_training(tmp_path, cli):
    proc = cli(tmp_path, "trainer.epochs=2", f"tracking.experiment={'x' * 1000}")
    assert proc.returncode == 2
    assert "tracking.experiment=" in proc.stderr and "1000 characters" in proc.stderr and "500" in proc.stderr
    assert not list(tmp_path.glob("outputs/*/*/weights.npz")), "nothing trained"


def test_the_syncer_gives_up_on_an_ended_runs_store_that_keeps_failing_and_ends(tmp_path, cli, monkeypatch):
    """A run whose process has ended and whose store keeps failing (a broken file, a server gone for good) is left
    for the next labnet command in its folder or `labnet sync` once it has failed for GIVE_UP_SECONDS: the
    background syncer then ends instead of retrying for ever (it did: each wait between retries counted the run
    as still to follow)."""
    import threading

    from labnet.record.result import SYNC_STATE_FILE
    from labnet.tracking import syncer

    broken = tmp_path / "mlflow.db"  # (named in the run's record: not MLflow's default of this test process)
    proc = cli(tmp_path, "trainer.epochs=1", "tracking.sync=later", f"tracking.uri=sqlite:///{broken}", *SPIRAL)
    assert proc.returncode == 0, proc.stderr
    broken.write_bytes(b"this is not a database" * 100)
    os.utime(broken, (time.time() - 3600, time.time() - 3600))  # (not a store another program is making now)
    monkeypatch.setattr(syncer, "GIVE_UP_SECONDS", 2.0)
    monkeypatch.setattr(syncer, "LINGER_SECONDS", 0.5)
    follower = syncer.Syncer(tmp_path)
    ended = threading.Event()
    threading.Thread(target=lambda: (follower.run(), ended.set()), daemon=True).start()
    assert ended.wait(60), "the syncer kept retrying an ended run's failing store"
    ((_, folder, _),) = syncer.pending(tmp_path)  # the run is left, marked, for the next command
    assert "could not take the run" in json.loads((folder / SYNC_STATE_FILE).read_text())["error"]
