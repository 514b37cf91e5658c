"""A team MLflow server on PostgreSQL (scripts/tracking_server.sh): runs, sweeps and artifacts through it, and
what a run does when the server goes away while it is logging.

Needs PostgreSQL's server binaries (Debian: apt-get install postgresql; .ci/run installs them when missing)
and the `server` extra (``pip install -e '.[server]'``). Skipped where they are missing, with how to install
them; never in CI (CI=true), where a missing piece fails the test.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

from labnet.tracking.metric_names import mlflow_metric_name  # noqa: E402

pytestmark = pytest.mark.xdist_group("server")  # one worker: one MLflow server per module

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "tracking_server.sh"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
WARN_EPOCHS = 5000  # spiral: about 2 ms an epoch
EPOCH_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI must run this test: install it in .ci/run)")
    pytest.skip(reason)


def _initdb() -> str | None:
    return shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[::-1]), None)


def _ensure_postgres() -> None:
    if not _initdb():
        _unavailable("PostgreSQL's server binaries (initdb) are not installed: apt-get install postgresql")


def _env(**extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.update(MPLBACKEND="Agg", PYTHON=sys.executable, **extra)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], env=_env(), capture_output=True, text=True, timeout=400)


# (session, not module: pytest-xdist runs other modules' tests between this module's on the same worker, and a module
# fixture was then started twice, ~35 s each with its stop)
@pytest.fixture(scope="session")
def server(tmp_path_factory, free_port):
    """PostgreSQL + `mlflow server` started by the documented script, stopped and deleted afterwards."""
    _ensure_postgres()
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 is missing: pip install -e '.[server]'")
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    started = time.perf_counter()
    proc = _script("start", "--dir", str(folder), "--port", str(port), "--workers", "1")
    if proc.returncode != 0:
        _script("stop", "--dir", str(folder), "--purge")
        pytest.fail(f"tracking_server.sh start failed:\n{proc.stdout}\n{proc.stderr}")
    print(f"PostgreSQL + MLflow server up in {time.perf_counter() - started:.1f} s")
    try:
        yield {
            "url": f"http://127.0.0.1:{port}",
            "dir": folder,
            "db_uri": (folder / "db.uri").read_text().strip(),
            "artifacts": folder / "artifacts",
        }
    finally:
        _script("stop", "--dir", str(folder), "--purge")


def labnet(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "labnet", *args], cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _all_artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _all_artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _same(points: list[tuple[int, float]], expected: list[tuple[int, float]], what: str = "") -> None:
    assert [step for step, _ in points] == [step for step, _ in expected], what
    assert [value for _, value in points] == pytest.approx([value for _, value in expected]), what


def _check_run(client: MlflowClient, run, history: list[dict], server: dict) -> None:
    """Every epoch's metrics, as kept locally, are on the server; every artifact is in the server's store."""
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert set(EPOCH_KEYS) <= set(history[0])
    for key in history[0]:  # every metric of every epoch (the history has one entry per epoch, from 1)
        points = sorted((p.step, p.value) for p in client.get_metric_history(run_id, mlflow_metric_name(key)))
        _same(points, [(epoch, h[key]) for epoch, h in enumerate(history, 1)], key)
    files = _all_artifacts(client, run_id)
    top = {f.split("/")[0] for f in files}
    assert {"config.yaml", "overrides.yaml", "weights.npz", "curves.png", "confusion_matrix.png"} <= top
    assert run.outputs.model_outputs, "the model is a logged model of the run"
    on_disk = server["artifacts"] / run.info.experiment_id / run_id / "artifacts"
    assert {str(p.relative_to(on_disk)) for p in on_disk.rglob("*") if p.is_file()} == files, "proxied to the store"


def test_single_run_and_a_joblib_sweep_land_in_the_team_server(tmp_path, server):
    url = server["url"]
    labnet(tmp_path, "trainer.epochs=4", "tracking.experiment=single", f"tracking.uri={url}")
    client = MlflowClient(url)
    single = client.search_runs([client.get_experiment_by_name("single").experiment_id])
    assert len(single) == 1
    result = json.loads(next(tmp_path.glob("outputs/*/*/result.json")).read_text())
    _check_run(client, single[0], result["history"], server)
    mlflow.set_tracking_uri(url)
    model = mlflow.pyfunc.load_model(f"runs:/{single[0].info.run_id}/model")
    probs = np.asarray(model.predict(np.zeros((5, 2), dtype=np.float32)))
    assert probs.shape == (5, 3)

    proc = labnet(
        tmp_path,
        "-m",
        "trainer.epochs=3",
        "tracking.log_every=4",
        "tracking.experiment=team",
        "optimizer=sgd,adam",
        "optimizer.lr=0.01,0.1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"tracking.uri={url}",
    )
    assert "4 jobs; 4 trained" in proc.stdout
    runs = client.search_runs([client.get_experiment_by_name("team").experiment_id])
    assert len(runs) == 5, "one parent and four children"
    parent = next(r for r in runs if r.data.tags.get("labnet.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and parent.info.status == "FINISHED"
    from labnet.record.result import RunResult

    results = {r.run_id: r for r in (RunResult.read(p.parent) for p in tmp_path.glob("multirun/*/*/*/result.json"))}
    for child in children:
        _check_run(client, child, results[child.info.run_id].history, server)
        # 240 training points / batch 30 = 8 steps an epoch, 24 steps, every 4th logged
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "train_loss_per_step"))
        assert steps == [4, 8, 12, 16, 20, 24]
    assert {"summary.csv", "objective_vs_lr.png"} <= _all_artifacts(client, parent.info.run_id)


def _logged_epochs(db_uri: str, run_id: str) -> list[tuple[int, float]]:
    """Straight from PostgreSQL: the server may be gone."""
    points = MlflowClient(db_uri).get_metric_history(run_id, "val_accuracy")
    return sorted((p.step, p.value) for p in points)


def test_server_stopped_while_runs_log_fail_or_train_on_and_lose_nothing(tmp_path, server):
    # MLflow retries a refused request for about 4 minutes (7 retries with back-off) before it gives up; a run
    # trains on meanwhile. Here it gives up at once, so that the run's reaction is seen within the test.
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    runs = {}
    for mode, epochs in (("fail", 100000), ("warn", WARN_EPOCHS)):
        cwd = tmp_path / mode
        cwd.mkdir()
        args = [f"trainer.epochs={epochs}", "trainer.checkpoint_every=100", f"tracking.on_error={mode}"]
        args.append(f"tracking.experiment=outage_{mode}")
        with (cwd / "stdout.txt").open("w") as out, (cwd / "stderr.txt").open("w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "labnet", *args, f"tracking.uri={server['url']}"],
                cwd=cwd,
                env=_env(**quick),
                stdout=out,
                stderr=err,
            )
        runs[mode] = (cwd, proc)
    client = MlflowClient(server["url"])
    run_ids = {}
    deadline = time.time() + 180
    while len(run_ids) < 2 and time.time() < deadline:  # both have logged a few epochs to the server
        for mode in runs:
            exp = client.get_experiment_by_name(f"outage_{mode}")
            found = client.search_runs([exp.experiment_id]) if exp else []
            if found and len(client.get_metric_history(found[0].info.run_id, "val_accuracy")) >= 2:
                run_ids[mode] = found[0].info.run_id
        time.sleep(0.2)
    assert len(run_ids) == 2, "runs did not start logging"
    pid = int((server["dir"] / "mlflow.pid").read_text())
    os.killpg(pid, signal.SIGTERM)  # the server goes away mid-run (PostgreSQL stays)

    outputs = {}
    for mode, (cwd, proc) in runs.items():
        try:
            proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"on_error={mode}: the run did not end: {(cwd / 'stderr.txt').read_text()[-2000:]}")
        outputs[mode] = (proc.returncode, (cwd / "stderr.txt").read_text(), next(cwd.glob("outputs/*/*")))

    code, err, out_dir = outputs["fail"]
    assert code == 1, err[-3000:]
    assert "labnet: error: MLflow tracking failed" in err and "tracking.on_error=warn" in err
    assert f"labnet sync {out_dir}" in err and "Traceback" not in err
    kept_fail = _journal(out_dir)
    assert (out_dir / "checkpoint.npz").is_file()
    logged = _logged_epochs(server["db_uri"], run_ids["fail"])
    assert 2 <= len(logged) <= len(kept_fail) < 100000, "failed at an epoch end soon after the server went away"

    code, err, out_dir = outputs["warn"]
    assert code == 0, err[-3000:]
    # told while training (an epoch end saw the syncer's failure) or, when the last epoch came first on a busy
    # machine, when the run waited for MLflow at its end: either way the run was warned and trained on
    assert "warning: MLflow tracking failed" in err or (
        "warning: MLflow does not hold this run yet" in err and server["url"] in err
    ), err[-3000:]
    kept_warn = _journal(out_dir)
    assert len(kept_warn) == WARN_EPOCHS, "trained on to the end, every epoch kept in the run's folder"
    assert json.loads((out_dir / "result.json").read_text())["status"] == "FINISHED"
    assert (out_dir / "checkpoint.npz").is_file() and (out_dir / "weights.npz").is_file()
    assert 2 <= len(_logged_epochs(server["db_uri"], run_ids["warn"])) < WARN_EPOCHS, "the server went away mid-run"

    # the server is back: a sync brings MLflow up to date, nothing lost, nothing twice, nothing left RUNNING
    port = server["url"].rsplit(":", 1)[1]
    restarted = _script("start", "--dir", str(server["dir"]), "--port", port, "--workers", "1")
    assert restarted.returncode == 0, restarted.stderr
    for mode, kept in (("fail", kept_fail), ("warn", kept_warn)):
        cwd = runs[mode][0]
        synced = subprocess.run(
            [sys.executable, "-m", "labnet", "sync", "--wait"], cwd=cwd, env=_env(), capture_output=True, text=True
        )
        assert synced.returncode == 0, synced.stderr
        run = MlflowClient(server["url"]).get_run(run_ids[mode])
        assert run.info.status == ("FAILED" if mode == "fail" else "FINISHED")
        _same(_logged_epochs(server["db_uri"], run_ids[mode]), [(e, h["val_accuracy"]) for e, h in enumerate(kept, 1)])


def _journal(folder: Path) -> list[dict]:
    """The per-epoch metrics in a run's journal, epoch 1 first."""
    records = [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines() if line.strip()]
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == list(range(1, len(epochs) + 1))
    return [r["metrics"] for r in epochs]
