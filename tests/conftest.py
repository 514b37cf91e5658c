"""Shared fixtures: the data folder for every test, a fresh plugin manager per test, and pip-installing
the test plugin packages under tests/plugins/ as a user would (into a folder put on ``sys.path``)."""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import pytest

from labnet.testing import plugin_manager  # noqa: F401  (the fixture, imported as a plugin's conftest does)

# runs started by the tests return once MLflow holds them (the tests read it back); the tests of the
# background sync itself set LABNET_SYNC=background
os.environ.setdefault("LABNET_SYNC", "wait")

#: ../shared/data next to the repository, as in CI (DESIGN.md, "Data files")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def labnet_data_dir():
    """``LABNET_DATA_DIR`` for the whole session (an existing setting wins), restored afterwards."""
    if "LABNET_DATA_DIR" in os.environ:
        yield Path(os.environ["LABNET_DATA_DIR"])
        return
    os.environ["LABNET_DATA_DIR"] = str(SHARED_DATA)
    try:
        yield SHARED_DATA
    finally:
        os.environ.pop("LABNET_DATA_DIR", None)


_cache_numbers = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def labnet_cache_root(tmp_path_factory):
    """``LABNET_CACHE_DIR`` (the disk cache of decoded IDX arrays) in a temporary folder for the whole
    session, so no test, module fixture or process they start writes to the real ``~/.cache``."""
    root = tmp_path_factory.mktemp("labnet-cache")
    old = os.environ.get("LABNET_CACHE_DIR")
    os.environ["LABNET_CACHE_DIR"] = str(root / "session")
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("LABNET_CACHE_DIR", None)
        else:
            os.environ["LABNET_CACHE_DIR"] = old
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def labnet_cache_dir(labnet_cache_root, monkeypatch):
    """An empty cache folder per test (deleted afterwards): no test finds entries another test wrote."""
    path = labnet_cache_root / f"test-{next(_cache_numbers)}"
    monkeypatch.setenv("LABNET_CACHE_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def builtin_components() -> dict[str, list[str]]:
    """The components labnet itself registers, by kind."""
    return {
        "layer": ["affine", "relu", "sigmoid", "tanh", "softmax", "dropout", "batchnorm", "identity"],
        "loss": ["softmax_cross_entropy", "mse", "sigmoid_binary_cross_entropy"],
        "optimizer": ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"],
        "dataset": ["spiral", "logic_gates", "mnist", "fashion_mnist"],
    }


@pytest.fixture
def pm():
    """A fresh :class:`labnet.plugins.LabnetPluginManager` (built-ins plus installed entry points)."""
    from labnet.plugins import get_plugin_manager

    return get_plugin_manager()


PLUGIN_SOURCES = Path(__file__).resolve().parent / "plugins"


def _builds_without_isolation() -> bool:
    """setuptools is importable and can build a wheel (before 70.1 that needs the `wheel` package)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    major, minor = (int(x) for x in metadata.version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@contextmanager
def installed(packages: list[str], workdir: Path):
    """pip-install ``packages`` (folders under tests/plugins) for this interpreter; remove them on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    target = workdir / "site-packages"
    copies = []
    for package in packages:  # build from copies: no build/ or *.egg-info left in the repository
        copies.append(workdir / package)
        shutil.copytree(PLUGIN_SOURCES / package, copies[-1], ignore=shutil.ignore_patterns("build", "*.egg-info"))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "-q"]
    if _builds_without_isolation():
        cmd += ["--no-build-isolation", "--no-index"]
    cmd += ["--target", str(target), *map(str, copies)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    modules = {p.name for p in target.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", ".egg-info"))}
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.split(".")[0] in modules]:
            del sys.modules[name]
        importlib.invalidate_caches()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def install_test_plugins():
    """``installed(packages, workdir)``: a context manager installing test plugin packages for its duration."""
    return installed


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """Picks a loopback TCP port nothing listens on (bound, then released): for the servers tests start, or
    for a server that is not there."""

    def pick() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    return pick


# --------------------------------------------------------------------------- the command line, as a user runs it

REPO = Path(__file__).resolve().parents[1]


def labnet_env(path: tuple[Path, ...] = (), **extra: str) -> dict[str, str]:
    """The test process's environment with ``path`` and the repository first on PYTHONPATH and nothing of a
    sweep or a store leaking in from outside."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [*map(str, path), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    for key in ("LABNET_DEBUG", "HYDRA_FULL_ERROR", "LABNET_SWEEP_ID", "LABNET_SWEEP_DIR", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    env.update(extra)
    return env


def labnet_cli(
    cwd: Path, *args: str, timeout: float = 300, path: tuple[Path, ...] = (), **env: str
) -> subprocess.CompletedProcess:
    """``python -m labnet ARGS`` in ``cwd``, waited for (``path``: folders put first on PYTHONPATH)."""
    return subprocess.run(
        [sys.executable, "-m", "labnet", *args],
        cwd=cwd,
        env=labnet_env(path, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def labnet_start(cwd: Path, *args: str, path: tuple[Path, ...] = (), **env: str) -> subprocess.Popen:
    """``python -m labnet ARGS`` in ``cwd``, started in a process group of its own (signals reach it and its
    workers as Ctrl-C in a terminal would), not waited for."""
    return subprocess.Popen(
        [sys.executable, "-m", "labnet", *args],
        cwd=cwd,
        env=labnet_env(path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """``cli(cwd, *args, timeout=..., **env)``: run labnet's command line and wait for it."""
    return labnet_cli


@pytest.fixture(scope="session")
def cli_start() -> Callable[..., subprocess.Popen]:
    """``cli_start(cwd, *args, **env)``: start labnet's command line in a process group of its own."""
    return labnet_start


def plugin_folder(folder: Path, name: str, source: str) -> Path:
    """A folder that, on PYTHONPATH, installs the plugin module ``source`` as distribution ``name`` 0.1 (its
    module and a dist-info with the ``labnet`` entry point): a plugin for command-line runs, without pip."""
    folder.mkdir(parents=True, exist_ok=True)
    module = f"{name.replace('-', '_')}_plugin"
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[labnet]\n{name} = {module}\n")
    return folder


@pytest.fixture(scope="session")
def make_plugin() -> Callable[[Path, str, str], Path]:
    """``make_plugin(folder, name, source)``: see :func:`plugin_folder`."""
    return plugin_folder
