"""Shared fixtures: the data folder for every test, a fresh plugin manager per test, and pip-installing
the test plugin packages under tests/plugins/ as a user would (into a folder put on ``sys.path``)."""

from __future__ import annotations

import contextlib
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


def pytest_configure(config):
    """The repository's own modules compiled once, before the test workers start: where ``PYTHONDONTWRITEBYTECODE``
    is set (as on CI here) no process writes them, and each of the ~600 Python processes the tests start would
    compile the labnet modules it imports from source again (~0.2 s of CPU each, measured)."""
    if hasattr(config, "workerinput"):  # (an xdist worker: the controller compiled them)
        return
    import compileall

    for folder in ("labnet", "hydra_plugins", "plugins"):
        compileall.compile_dir(REPO / folder, quiet=1)


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


@pytest.fixture(scope="session")
def ray_head(free_port):
    """A Ray head on 127.0.0.1 for the session (``{"address", "head_dir"}``): started once, ~15 s, for every Ray
    test; they share the xdist group "ray", so one test worker runs them all (tests/test_scaleout_ray.py)."""
    from tests.test_scaleout_ray import started_ray_head

    yield from started_ray_head(free_port)


@pytest.fixture(autouse=True)
def mlflow_tracking_uri_kept():
    """MLflow's process-wide tracking URI as it was before each test (tests that read a store back set it; a later
    in-process run of another test would otherwise track there)."""
    imported = "mlflow" in sys.modules
    before = sys.modules["mlflow.tracking._tracking_service.utils"]._tracking_uri if imported else None
    yield
    if "mlflow.tracking._tracking_service.utils" in sys.modules:
        sys.modules["mlflow.tracking._tracking_service.utils"]._tracking_uri = before


@pytest.fixture(autouse=True)
def signal_handlers_kept():
    """SIGINT and SIGTERM handled and blocked as before each test (restored after it). A test fails when it left
    one ignored or blocked, or handled by labnet's code: processes the test worker starts later would inherit an
    ignored or blocked signal, and a later test in this process would run under the leftover handler."""
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    left = {sig: signal.getsignal(sig) for sig in before}
    for sig, handler in before.items():
        signal.signal(sig, handler)
    now_blocked = signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    leaked = {
        sig.name: handler
        for sig, handler in left.items()
        if handler != before[sig]
        and (handler == signal.SIG_IGN or getattr(handler, "__module__", "").startswith("labnet"))
    }
    assert not leaked, f"the test left signal handlers behind: {leaked}"
    assert now_blocked == blocked, f"the test left signals blocked: {sorted(s.name for s in now_blocked - blocked)}"


# --------------------------------------------------------------------------- MLflow stores

_store_template_folder: list[Path] = []  # (set once per session: pytest-xdist runs a session per worker)


@pytest.fixture(scope="session", autouse=True)
def mlflow_store_template_folder(tmp_path_factory) -> Path:
    """Where the session's empty MLflow store is made, when a test first needs one."""
    folder = tmp_path_factory.mktemp("store-template")
    _store_template_folder[:] = [folder]
    return folder


def empty_store(target: Path) -> str:
    """An empty MLflow SQLite store at ``target`` (kept if it exists); returns its URI.

    MLflow makes a new database by running its ~60 schema migrations, ~4 s each time; the tests copy one made
    once per session instead, which is the same file MLflow would have made. Its ``Default`` experiment's
    artifact folder is set next to the copy, as MLflow would have put it."""
    import sqlite3

    from labnet.tracking.store import create_whole

    if not target.exists():
        (template_folder,) = _store_template_folder
        template = template_folder / "mlflow.db"
        create_whole(f"sqlite:///{template}")  # (labnet's own way of making a store; a no-op once made)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)
        with contextlib.closing(sqlite3.connect(target)) as db, db:
            location = str(target.parent / "mlruns" / "0")
            db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (location,))
    return f"sqlite:///{target}"


# --------------------------------------------------------------------------- the command line, as a user runs it

REPO = Path(__file__).resolve().parents[1]
#: settings from the shell the tests run in that would change what a labnet command does
OUTSIDE_SETTINGS = (
    "LABNET_DEBUG",
    "HYDRA_FULL_ERROR",
    "LABNET_SWEEP_ID",
    "LABNET_SWEEP_DIR",
    "MLFLOW_TRACKING_URI",
    "RAY_ADDRESS",
)


def labnet_env(path: tuple[Path, ...] = (), **extra: str) -> dict[str, str]:
    """The test process's environment with ``path`` and the repository first on PYTHONPATH and nothing of a
    sweep or a store leaking in from outside."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [*map(str, path), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    for key in OUTSIDE_SETTINGS:
        env.pop(key, None)
    env.update(extra)
    return env


#: commands that never open the folder's default store (the rest may: a run, a sweep, `labnet sync`)
NO_STORE_COMMANDS = ("plugins", "plugin", "compare", "--help", "-h")


def store_of(cwd: Path, args: tuple[str, ...]) -> Path | None:
    """The SQLite file a command's runs are tracked in: ``tracking.uri``'s, else the folder's default store;
    None for an untracked run, another kind of store or a command that opens none."""
    if (args and args[0] in NO_STORE_COMMANDS) or "tracking=none" in args:
        return None
    uri = next((a.split("=", 1)[1] for a in args if a.startswith("tracking.uri=")), "sqlite:///mlflow.db")
    return cwd / uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None


def as_a_terminal_starts_it() -> None:
    """(In a command's process, before it runs) SIGINT and SIGTERM at their defaults and unblocked, as a shell
    in a terminal starts a command. A test session started in the background (``pytest &`` in a script) ignores
    SIGINT, every process it starts inherits that, and Python keeps an inherited SIG_IGN: the Ctrl-C a test
    sends would not reach a sweep's launching process (its trainers set their own handlers)."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def labnet_cli(
    cwd: Path,
    *args: str,
    timeout: float = 300,
    path: tuple[Path, ...] = (),
    fresh_store: bool = False,
    interleaved: bool = False,
    **env: str,
) -> subprocess.CompletedProcess:
    """``python -m labnet ARGS`` in ``cwd``, waited for (``path``: folders put first on PYTHONPATH).

    A tracked run finds its SQLite store there, empty (see :func:`empty_store` and :func:`store_of`), unless
    ``fresh_store`` is set: the tests of MLflow's store creation itself set it. ``interleaved``: stderr
    goes into stdout, in the order a terminal shows them."""
    if not fresh_store and (target := store_of(cwd, args)) is not None:
        empty_store(target)
    return subprocess.run(
        [sys.executable, "-m", "labnet", *args],
        cwd=cwd,
        env=labnet_env(path, **env),
        preexec_fn=as_a_terminal_starts_it,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if interleaved else subprocess.PIPE,
        text=True,
        timeout=timeout,
    )


def labnet_start(
    cwd: Path, *args: str, path: tuple[Path, ...] = (), fresh_store: bool = False, **env: str
) -> subprocess.Popen:
    """``python -m labnet ARGS`` in ``cwd``, started in a process group of its own (signals reach it and its
    workers as Ctrl-C in a terminal would), not waited for. The store as in :func:`labnet_cli`."""
    if not fresh_store and (target := store_of(cwd, args)) is not None:
        empty_store(target)
    return subprocess.Popen(
        [sys.executable, "-m", "labnet", *args],
        cwd=cwd,
        env=labnet_env(path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=as_a_terminal_starts_it,
    )


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """``cli(cwd, *args, timeout=..., **env)``: run labnet's command line and wait for it."""
    return labnet_cli


@pytest.fixture(scope="session")
def cli_start() -> Callable[..., subprocess.Popen]:
    """``cli_start(cwd, *args, **env)``: start labnet's command line in a process group of its own."""
    return labnet_start


def labnet_main(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``labnet ARGS`` in this process, through the command line's own entry point (``labnet.__main__.main``),
    with what it prints captured: for cases decided before anything trains (config mistakes), where a new
    Python would cost a second and a half and test nothing more. Hydra's state, the environment, logging and
    the working folder are restored afterwards (as ``labnet.run`` restores them)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from labnet.__main__ import main
    from labnet.api.launch import kept_process_state

    out, err = io.StringIO(), io.StringIO()
    argv, cwd_before = sys.argv[:], os.getcwd()
    try:
        os.chdir(cwd)
        with kept_process_state(), redirect_stdout(out), redirect_stderr(err):
            code = main(list(args))
    finally:
        os.chdir(cwd_before)
        sys.argv[:] = argv
    return subprocess.CompletedProcess(["labnet", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli_in_process(monkeypatch) -> Callable[..., subprocess.CompletedProcess]:
    """``cli_in_process(cwd, *args)``: see :func:`labnet_main` (the environment it changes is restored)."""
    for key in OUTSIDE_SETTINGS:
        monkeypatch.delenv(key, raising=False)
    return labnet_main


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
