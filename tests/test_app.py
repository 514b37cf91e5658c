"""The Hydra app end to end: `python -m labnet [overrides]` in a subprocess, results read back
from the files a run leaves (result.json, weights.npz, checkpoint.npz), multiruns with the
basic, joblib and Optuna launchers/sweepers, derived configs for components without a YAML.

Every run passes ``tracking=none``: these tests are about the app, not the tracker.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-[0-9a-f]{4}$")  # (a short unique part)
SUMMARY = re.compile(r"^labnet: (\S+) finished after (\d+) epochs \((\d+) steps\): (.*)$", re.MULTILINE)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def run_dir(cwd: Path) -> Path:
    """The one output folder of a single run under ``cwd``: outputs/<date>/<time>/."""
    found = sorted((cwd / "outputs").glob("*/*/result.json"))
    assert len(found) == 1, found
    folder = found[0].parent
    assert DATE_TIME.match(folder.relative_to(cwd / "outputs").as_posix()), folder
    return folder


def result_of(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


def sweep_results(cwd: Path) -> tuple[Path, list[dict]]:
    """The one sweep folder under ``cwd`` (multirun/<date>/<time>/) and its jobs' results, by job number."""
    sweeps = sorted({p.parent.parent for p in (cwd / "multirun").glob("*/*/*/result.json")})
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0]
    assert DATE_TIME.match(sweep.relative_to(cwd / "multirun").as_posix()), sweep
    results = {int(p.parent.name): result_of(p.parent) for p in sweep.glob("*/result.json")}
    return sweep, [results[n] for n in sorted(results)]


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# --------------------------------------------------------------------------- a plain run


@pytest.fixture(scope="module")
def basic_run(tmp_path_factory, cli):
    """`python -m labnet tracking=none trainer.epochs=3`: spiral, two_layer, adam (the defaults)."""
    cwd = tmp_path_factory.mktemp("basic")
    proc = ok(cli(cwd, "tracking=none", "trainer.epochs=3"))
    return proc, run_dir(cwd)


def test_run_prints_one_line_summary(basic_run):
    proc, _ = basic_run
    matches = list(SUMMARY.finditer(proc.stdout))
    assert len(matches) == 1, proc.stdout
    name, epochs, steps, metrics = matches[0].groups()
    assert name == "adam-lr0.001-spiral"
    # spiral: 300 points, 60 for validation, batches of 30 -> 8 steps per epoch
    assert (int(epochs), int(steps)) == (3, 24)
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert re.search(rf"\b{key}=\d+\.\d{{4}}\b", metrics), metrics
    assert "Traceback" not in proc.stderr


def test_run_writes_result_json(basic_run):
    proc, folder = basic_run
    result = result_of(folder)
    assert result["status"] == "FINISHED"
    # wall-clock start and end (Unix seconds), within the second the file was written
    assert result["start_time"] < result["end_time"] <= (folder / "result.json").stat().st_mtime + 1
    assert result["error"] is None
    assert result["overrides"] == ["tracking=none", "trainer.epochs=3"]
    assert result["objective_metric"] == "val_accuracy"
    metrics = result["metrics"]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert isinstance(metrics[key], float) and np.isfinite(metrics[key]), (key, metrics)
    for key in ("train_accuracy", "val_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert 0.0 <= result["objective"] <= 1.0
    assert result["objective"] >= metrics["val_accuracy"]  # the best over epochs, not the last
    assert result["params"]["trainer.epochs"] == 3
    assert result["params"]["optimizer.name"] == "adam"
    # the summary line prints the same numbers
    assert f"val_accuracy={metrics['val_accuracy']:.4f}" in proc.stdout


def test_run_writes_weights_of_the_two_layer_net(basic_run):
    _, folder = basic_run
    weights = load_npz(folder / "weights.npz")
    # conf/model/two_layer.yaml: hidden 50; spiral: 2 inputs, 3 classes -> affine, relu, affine
    assert {k: v.shape for k, v in weights.items()} == {
        "0.W": (2, 50),
        "0.b": (50,),
        "2.W": (50, 3),
        "2.b": (3,),
    }
    for value in weights.values():
        assert value.dtype == np.float32  # trainer.dtype
        assert np.isfinite(value).all()


def test_run_writes_a_checkpoint_without_pickles(basic_run):
    _, folder = basic_run
    state = load_npz(folder / "checkpoint.npz")
    assert all(v.dtype != object for v in state.values())
    weights = load_npz(folder / "weights.npz")
    assert {f"model/{k}" for k in weights} <= set(state)
    for key, value in weights.items():  # the last checkpoint holds the final weights
        assert np.array_equal(state[f"model/{key}"], value)
    assert any(k.startswith("optim/") for k in state), sorted(state)
    assert int(state["epoch"]) == 3
    rng = json.loads(str(state["rng"]))
    assert rng["bit_generator"] == "PCG64"
    np.random.default_rng().bit_generator.state = rng  # a valid generator state


# --------------------------------------------------------------------------- the experiments


def test_spiral_experiment_reaches_95_percent(tmp_path, cli):
    ok(cli(tmp_path, "tracking=none", "+experiment=spiral"))
    result = result_of(run_dir(tmp_path))
    assert result["status"] == "FINISHED"
    assert result["params"]["trainer.epochs"] == 300
    assert result["objective_metric"] == "train_accuracy"
    assert result["objective"] >= 0.95, result["metrics"]


def test_xor_experiment_learns_all_four_cases(tmp_path, cli):
    ok(cli(tmp_path, "tracking=none", "+experiment=xor"))
    result = result_of(run_dir(tmp_path))
    assert result["metrics"]["train_accuracy"] == 1.0, result["metrics"]


def test_xor_without_hidden_layer_stays_at_three_of_four(tmp_path, cli):
    ok(cli(tmp_path, "tracking=none", "+experiment=xor", "model.hidden_sizes=[]"))
    folder = run_dir(tmp_path)
    result = result_of(folder)
    assert result["objective_metric"] == "train_accuracy"
    assert result["objective"] <= 0.75, result["metrics"]
    assert set(load_npz(folder / "weights.npz")) == {"0.W", "0.b"}  # one affine layer


@pytest.mark.slow
def test_mnist_two_layer_experiment_reaches_97_percent(tmp_path, cli):
    # one BLAS thread: on a busy 2-core machine OpenBLAS threads on these small matrices make the run
    # 5-8x slower (80 s instead of 10 s); the accuracy does not depend on it
    ok(cli(tmp_path, "tracking=none", "+experiment=mnist_two_layer", "trainer.threads=1", timeout=300))
    folder = run_dir(tmp_path)
    result = result_of(folder)
    assert result["status"] == "FINISHED"
    assert result["metrics"]["test_accuracy"] >= 0.97, result["metrics"]
    shapes = {k: v.shape for k, v in load_npz(folder / "weights.npz").items()}
    assert shapes == {"0.W": (784, 50), "0.b": (50,), "2.W": (50, 10), "2.b": (10,)}


# --------------------------------------------------------------------------- multiruns

GRID = ("tracking=none", "trainer.epochs=5", "optimizer=sgd,adam", "optimizer.lr=0.01,0.1")
GRID_JOBS = {("sgd", 0.01), ("sgd", 0.1), ("adam", 0.01), ("adam", 0.1)}


def check_grid(cwd: Path, proc: subprocess.CompletedProcess) -> None:
    sweep, results = sweep_results(cwd)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert [r["job"] for r in results] == [0, 1, 2, 3]
    assert all(r["status"] == "FINISHED" for r in results), results
    jobs = {(r["params"]["optimizer.name"], r["params"]["optimizer.lr"]) for r in results}
    assert jobs == GRID_JOBS
    assert len({tuple(r["overrides"]) for r in results}) == 4
    for r in results:
        name, lr = r["params"]["optimizer.name"], r["params"]["optimizer.lr"]
        assert f"optimizer={name}" in r["overrides"] and f"optimizer.lr={lr}" in r["overrides"]


def test_multirun_grid(tmp_path, cli):
    proc = ok(cli(tmp_path, "-m", *GRID))
    check_grid(tmp_path, proc)
    _, results = sweep_results(tmp_path)
    # Hydra's basic launcher runs the jobs one after another, in job order
    for earlier, later in itertools.pairwise(results):
        assert earlier["start_time"] < earlier["end_time"] <= later["start_time"]


def test_multirun_grid_with_joblib_launcher(tmp_path, cli):
    proc = ok(cli(tmp_path, "-m", *GRID, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"))
    check_grid(tmp_path, proc)
    _, results = sweep_results(tmp_path)
    assert len({r["metrics"]["train_loss"] for r in results}) == 4


def test_optuna_experiment_runs_trials(tmp_path, cli):
    ok(cli(tmp_path, "+experiment=optuna_lr", "tracking=none", "trainer.epochs=3", "hydra.sweeper.n_trials=3"))
    sweep, results = sweep_results(tmp_path)
    assert len(results) == 3
    assert all(r["status"] == "FINISHED" for r in results), results
    lrs = [r["params"]["optimizer.lr"] for r in results]
    assert len(set(lrs)) == 3 and all(1e-4 <= lr <= 1.0 for lr in lrs)
    optimization = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert "best_value" in optimization, optimization
    # the experiment maximises the objective (best val_accuracy) each job returned
    assert optimization["best_value"] == pytest.approx(max(r["objective"] for r in results))


# --------------------------------------------------------------------------- derived configs


class Lion:
    """A component shipped without a YAML: its config comes from this signature."""

    name = "lion"

    def __init__(self, lr: float = 1e-4, beta1: float = 0.9) -> None:
        self.lr, self.beta1 = lr, beta1


class FakeRegistry:
    def __init__(self, components: dict[str, list[type]]) -> None:
        from labnet.plugins import Component, Provider

        provider = Provider("fake", "fake-dist", "0.0")
        self.components = {
            kind: [Component(kind, cls.name, cls, provider) for cls in classes] for kind, classes in components.items()
        }

    def list(self, kind: str | None = None):
        return list(self.components.get(kind, []))


@pytest.fixture
def hydra_compose():
    """Hydra's compose API on labnet's conf/; clears GlobalHydra afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from labnet.config import config_dirs

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dirs()[0]), version_base=None):
        yield lambda overrides: compose("config", overrides=overrides)
    GlobalHydra.instance().clear()


@pytest.fixture
def lion_in_config_store():
    from hydra.core.config_store import ConfigStore

    from labnet.config import config_dirs, register_component_configs

    store = ConfigStore.instance()
    conf = config_dirs()[0]
    added = register_component_configs(FakeRegistry({"optimizer": [Lion, shadow_sgd()]}), [conf])
    try:
        yield added
    finally:
        for entry in added:
            group, name = entry.split("/")
            store.repo.get(group, {}).pop(f"{name}.yaml", None)


def shadow_sgd() -> type:
    """A component named like a built-in that has a YAML (sgd): it must not get a derived node."""
    return type("ShadowSgd", (), {"name": "sgd", "__init__": lambda self, lr=1.0, other=2: None})


def test_default_node_of_builtin_matches_its_yaml_keys():
    from labnet.config import config_dirs, default_node
    from labnet.plugins import get_registry

    registry = get_registry()
    adam = registry.get("optimizer", "adam")
    assert default_node(adam) == {"name": "adam", "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0}
    conf = config_dirs()[0]
    for kind in ("optimizer", "loss", "dataset"):
        for component in registry.list(kind):
            if component.provider.dist != "labnet":  # an installed plugin's component
                continue
            path = conf / kind / f"{component.name}.yaml"
            if not path.exists():  # a built-in that relies on its derived config
                continue
            shipped = yaml.safe_load(path.read_text())
            assert set(shipped) == set(default_node(component.cls)), (kind, component.name)
    assert default_node(Lion) == {"name": "lion", "lr": 1e-4, "beta1": 0.9}


def test_component_without_yaml_gets_a_derived_config(lion_in_config_store, hydra_compose):
    from hydra.errors import ConfigCompositionException

    assert lion_in_config_store == ["optimizer/lion"]  # sgd has a YAML: left alone
    cfg = hydra_compose(["optimizer=lion", "optimizer.lr=0.5"])
    assert dict(cfg.optimizer) == {"name": "lion", "lr": 0.5, "beta1": 0.9}
    assert dict(hydra_compose(["optimizer=sgd"]).optimizer) == {"name": "sgd", "lr": 0.01, "weight_decay": 0.0}
    with pytest.raises(ConfigCompositionException, match="optimizer.lrr"):
        hydra_compose(["optimizer=lion", "optimizer.lrr=0.5"])


# --------------------------------------------------------------------------- CLI


def test_help_exits_quickly(tmp_path, cli):
    proc = ok(cli(tmp_path, "--help", timeout=60))
    assert "optimizer" in proc.stdout and "adam" in proc.stdout
    assert not (tmp_path / "outputs").exists()


BUILTIN_EXPERIMENTS = {"mnist_two_layer", "optuna_lr", "spiral", "sweep_optimizers", "xor"}


def test_experiment_group_lists_the_experiments(hydra_compose):
    from hydra.core.global_hydra import GlobalHydra

    options = GlobalHydra.instance().config_loader().get_group_options("experiment")
    assert BUILTIN_EXPERIMENTS <= set(options), options


def test_help_lists_the_experiments(tmp_path, cli):
    proc = ok(cli(tmp_path, "--help", timeout=60))
    line = next((x.strip() for x in proc.stdout.splitlines() if x.strip().startswith("+experiment:")), "")
    assert BUILTIN_EXPERIMENTS <= {name.strip() for name in line.partition(":")[2].split(",")}, proc.stdout


def test_hydra_help_is_still_reachable(tmp_path, cli):
    proc = ok(cli(tmp_path, "--hydra-help", timeout=120))
    assert "hydra/launcher" in proc.stdout


def test_plugins_lists_builtins(tmp_path, cli):
    proc = ok(cli(tmp_path, "plugins"))
    rows = {tuple(line.split()[:2]) for line in proc.stdout.splitlines() if line.strip()}
    for kind, name in [
        ("optimizer", "sgd"),
        ("optimizer", "adam"),
        ("layer", "affine"),
        ("layer", "relu"),
        ("loss", "softmax_cross_entropy"),
        ("dataset", "mnist"),
        ("dataset", "spiral"),
    ]:
        assert (kind, name) in rows, proc.stdout


# --------------------------------------------------------------------------- early stopping


def test_early_stopping(tmp_path, cli):
    proc = ok(cli(tmp_path, "tracking=none", "trainer.epochs=200", "trainer.patience=3"))
    match = SUMMARY.search(proc.stdout)
    assert match, proc.stdout
    epochs = int(match.group(2))
    assert epochs < 200
    assert "early stopping" in proc.stdout and "did not improve for 3 epochs" in proc.stdout
    folder = run_dir(tmp_path)
    result = result_of(folder)
    assert result["status"] == "FINISHED"
    assert int(load_npz(folder / "checkpoint.npz")["epoch"]) == epochs
    best_epoch = json.loads(str(load_npz(folder / "checkpoint.npz")["run"]))["best_epoch"]
    assert epochs - best_epoch == 3


@pytest.mark.parametrize(
    ("threads", "launcher", "expected"),
    [
        (3, {"n_jobs": 2}, 3),  # trainer.threads wins
        (None, {"n_jobs": 2}, max(1, (os.cpu_count() or 1) // 2)),  # joblib: cores / parallel jobs
        (None, {"ray": {"remote": {"num_cpus": 3}}}, 3),  # Ray: the CPUs the task reserved
        (None, {}, max(1, (os.cpu_count() or 1) - 1)),  # basic launcher: one core stays free
    ],
)
def test_blas_threads_fit_the_launcher(monkeypatch, threads, launcher, expected):
    from omegaconf import OmegaConf

    import labnet.run_policy as app

    monkeypatch.setattr(app, "hydra_runtime", lambda: OmegaConf.create({"launcher": launcher}))
    monkeypatch.setattr(app, "in_multirun", lambda: True)
    assert app.thread_limit(OmegaConf.create({"trainer": {"threads": threads}})) == expected


@pytest.mark.parametrize("threads", [0, -2, "abc", 1.5, True])
def test_bad_thread_count_is_named(threads):
    from omegaconf import OmegaConf

    from labnet.errors import ConfigError
    from labnet.run_policy import thread_limit

    with pytest.raises(ConfigError, match=r"trainer\.threads=.*whole number >= 1, or null"):
        thread_limit(OmegaConf.create({"trainer": {"threads": threads}}))


def test_a_single_run_leaves_a_core_free(monkeypatch):
    from omegaconf import OmegaConf

    import labnet.run_policy as app

    monkeypatch.setattr(app, "hydra_runtime", lambda: None)
    cfg = OmegaConf.create({"trainer": {"threads": None}})
    for cores, threads in ((8, 7), (2, 1), (1, 1)):
        monkeypatch.setattr(os, "cpu_count", lambda cores=cores: cores)
        assert app.thread_limit(cfg) == threads


@pytest.mark.parametrize(("n_jobs", "jobs", "threads"), [(2, 2, 4), (-1, 8, 1), (-2, 7, 1), (-4, 5, 1), (None, 1, 7)])
def test_joblib_n_jobs_counts_as_joblib_does(monkeypatch, n_jobs, jobs, threads):
    """n_jobs=-1 is every core, -2 all but one (joblib's rule): each job then gets one BLAS thread, not cores - 1."""
    from omegaconf import OmegaConf

    import labnet.run_policy as app

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(app, "hydra_runtime", lambda: OmegaConf.create({"launcher": {"n_jobs": n_jobs}}))
    monkeypatch.setattr(app, "in_multirun", lambda: True)
    assert app.parallel_jobs() == jobs
    assert app.thread_limit(OmegaConf.create({"trainer": {"threads": None}})) == threads
