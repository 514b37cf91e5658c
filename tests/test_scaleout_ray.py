"""Sweeps on a Ray cluster: a head on 127.0.0.1, labnet's `hydra/launcher=labnet_ray` joining it, MLflow read back.

Needs the `ray` extra (``pip install -e '.[ray]'``: hydra-ray-launcher with Ray 2.x); skipped where it is absent.
The head runs in its own process group, which the teardown ends (``ray stop`` would end every Ray
process of the machine, other people's clusters included).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

mlflow = pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")  # one test worker: one Ray head (conftest.ray_head) for all

REPO = Path(__file__).resolve().parents[1]
INSTALL = "pip install -e '.[ray]' (hydra-ray-launcher 1.2.2 with Ray 2.x)"

if importlib.util.find_spec("ray") is None or importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
    pytest.skip(f"Ray is not installed: {INSTALL}", allow_module_level=True)

RAY_ENV = {
    # on a machine with only loopback, Ray swaps 127.0.0.1 for the host's "external" address unless this is 0, for
    # `ray start` and for the driver alike (with it only on the head, the driver hangs on "Failed to connect to GCS")
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Ray 2.60's `ray start` turns token authentication on by itself when ~/.ray/auth_token exists (a local
    # ray.init writes one), and a driver then needs RAY_AUTH_MODE=token; a loopback test cluster needs none
    "RAY_AUTH_MODE": "disabled",
}


def _ray_cli() -> str:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def _driver_env() -> dict:
    env = {**os.environ, **RAY_ENV, "MPLBACKEND": "Agg"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    return env


def started_ray_head(free_port):
    """`ray start --head` on 127.0.0.1 with 2 CPUs, in a folder of its own (where its workers run): the generator
    behind conftest's session fixture ``ray_head`` (one head for every Ray test, all on one test worker)."""
    installed_only = {k: v for k, v in _driver_env().items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [sys.executable, "-c", "import labnet"], cwd=tempfile.gettempdir(), env=installed_only, capture_output=True
    )
    if probe.returncode != 0:  # workers import labnet from their own environment, never through PYTHONPATH
        pytest.skip("labnet is not installed in this environment (Ray workers need it): pip install -e '.[ray]'")
    # short: Ray's unix sockets live under --temp-dir and their paths must stay under 108 bytes
    base = Path(tempfile.mkdtemp(prefix="lnray"))
    head_dir, temp_dir = base / "head", base / "t"
    head_dir.mkdir()
    port = free_port()
    # the head's environment is its workers': labnet from the installed packages only, the data folder set
    env = {**installed_only, "LABNET_DATA_DIR": os.environ.get("LABNET_DATA_DIR", "")}
    cmd = [
        _ray_cli(),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--ray-client-server-port={free_port()}",
        f"--dashboard-port={free_port()}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    started = time.perf_counter()
    head = subprocess.Popen(
        cmd, cwd=head_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    out, _ = head.communicate(timeout=180)
    if head.returncode != 0:
        _stop_group(head.pid)
        pytest.fail(f"ray start failed ({head.returncode}):\n{out[-3000:]}")
    print(f"ray head on 127.0.0.1:{port} started in {time.perf_counter() - started:.1f} s")
    try:
        yield {"address": f"127.0.0.1:{port}", "head_dir": head_dir}
    finally:
        _stop_group(head.pid)
        shutil.rmtree(base, ignore_errors=True)


def _stop_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM to the head's process group (GCS, raylet, workers), SIGKILL to whatever is left after `grace`."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + grace
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.3)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def succeeded(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _runs(uri: str):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("spiral")
    assert exp is not None, f"no spiral experiment in {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("labnet.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    return client, parents, children


def test_grid_sweep_on_ray_is_one_parent_with_a_finished_child_per_job(tmp_path, ray_head, cli):
    # the defaults a user gets: a relative store and the default sweep folder, both in the driver's folder
    proc = succeeded(
        cli(
            tmp_path,
            "-m",
            "hydra/launcher=labnet_ray",
            f"hydra.launcher.ray.init.address={ray_head['address']}",
            "trainer.epochs=3",
            "optimizer=sgd,adam",
            "optimizer.lr=0.01,0.1",
            "tracking.uri=sqlite:///mlflow.db",
            **RAY_ENV,
        )
    )
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (sweep_dir,) = (tmp_path / "multirun").glob("*/*")
    assert not (ray_head["head_dir"] / "mlflow.db").exists(), "jobs wrote into a store where `ray start` ran"
    assert "Connected to Ray cluster" in proc.stderr + proc.stdout
    assert "4 jobs; 4 trained" in proc.stdout
    client, parents, children = _runs(store)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["labnet.failed_jobs"] == "0"
    assert {(c.data.params["optimizer.name"], c.data.params["optimizer.lr"]) for c in children} == {
        ("sgd", "0.01"),
        ("sgd", "0.1"),
        ("adam", "0.01"),
        ("adam", "0.1"),
    }
    from labnet.record.result import RunResult

    results = {r.run_id: r for r in (RunResult.read(p.parent) for p in sweep_dir.glob("*/result.json"))}
    assert len(results) == 4, "every job wrote result.json into the driver's sweep folder"
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["labnet.sweep_id"] == parent.data.tags["labnet.sweep_id"]
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == [1, 2, 3], key
        result = results[child.info.run_id]
        assert result["status"] == "FINISHED"
        assert child.data.metrics["best_val_accuracy"] == pytest.approx(result["objective"])
        assert Path(child.data.tags["labnet.output_dir"]).parent == sweep_dir
        assert "weights.npz" in {a.path for a in client.list_artifacts(child.info.run_id)}
        # the network is the run's logged model (MLflow 3: its files live with the model, not the run)
        (model,) = client.search_logged_models(
            [child.info.experiment_id], filter_string=f"source_run_id = '{child.info.run_id}'"
        )
        assert model.name == "model" and str(model.status).endswith("READY")
    best = max(c.data.metrics["best_val_accuracy"] for c in children)
    assert parent.data.metrics["best_val_accuracy"] == pytest.approx(best)
    assert {"summary.csv", "objective_vs_lr.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert not list(ray_head["head_dir"].glob("**/result.json")), "nothing written where `ray start` ran"


def test_optuna_sweeper_gets_each_jobs_objective_over_ray(tmp_path, ray_head, cli):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "optuna"
    proc = succeeded(
        cli(
            tmp_path,
            "+experiment=optuna_lr",
            "hydra/launcher=labnet_ray",
            f"hydra.launcher.ray.init.address={ray_head['address']}",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2",
            "trainer.epochs=3",
            f"tracking.uri={store}",
            f"hydra.sweep.dir={sweep_dir}",
            **RAY_ENV,
        )
    )
    _, parents, children = _runs(store)
    assert len(parents) == 1 and len(children) == 2
    assert all(c.info.status == "FINISHED" for c in children)
    best = max(c.data.metrics["best_val_accuracy"] for c in children)
    found = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert found.best_value == pytest.approx(best), proc.stdout[-2000:]
