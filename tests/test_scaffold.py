"""`labnet plugin new NAME`: the package it writes passes its own tests and labnet's checks as it is; given a
Lion that applies weight decay twice, `labnet plugins check` fails it by name, and fixed it passes again.

The fast tests import the generated package from its folder; one slow test installs it for real
(``pip install --no-deps -e``) into a throwaway virtualenv that sees this one's packages."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from labnet.cli.plugin_new import new_plugin
from labnet.errors import ConfigError
from labnet.testing import check_plugin

REPO = Path(__file__).resolve().parents[1]
DECOUPLED = "    decoupled_weight_decay = True\n"


@pytest.fixture
def demo(tmp_path):
    """labnet-demo generated into tmp_path, importable from its src/ folder (forgotten afterwards)."""
    folder = new_plugin("demo", tmp_path)
    sys.path.insert(0, str(folder / "src"))
    importlib.invalidate_caches()
    yield folder
    sys.path.remove(str(folder / "src"))
    for name in [m for m in sys.modules if m.split(".")[0] == "labnet_demo"]:
        del sys.modules[name]


def fresh_import(module: str):
    for name in [m for m in sys.modules if m.split(".")[0] == "labnet_demo"]:
        del sys.modules[name]
    importlib.invalidate_caches()
    return importlib.import_module(module)


def by_check(results):
    return {(r.component, r.check): r for r in results}


def test_the_package_has_every_part(demo):
    files = {p.relative_to(demo).as_posix() for p in demo.rglob("*") if p.is_file()}
    assert files == {
        "pyproject.toml",
        "README.md",
        "src/labnet_demo/__init__.py",
        "src/labnet_demo/plugin.py",
        "src/labnet_demo/layers.py",
        "src/labnet_demo/optimizers.py",
        "src/labnet_demo/datasets.py",
        "tests/conftest.py",
        "tests/test_plugin.py",
    }
    pyproject = (demo / "pyproject.toml").read_text()
    assert (
        'name = "labnet-demo"' in pyproject
        and '[project.entry-points.labnet]\ndemo = "labnet_demo.plugin"' in pyproject
    )
    assert "{{" not in "".join(p.read_text() for p in demo.rglob("*") if p.is_file())


def test_its_components_pass_labnet_plugins_check(demo):
    results = check_plugin(fresh_import("labnet_demo.plugin"))
    assert {r.component for r in results} == {"demo_leaky_relu", "demo_lion", "demo_blobs"}
    assert [r for r in results if r.result != "PASS"] == []


def test_its_own_tests_pass(demo):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(demo / "src"), str(REPO)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(demo)],
        capture_output=True,
        text=True,
        env=env,
        cwd=demo,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout


def test_lion_with_weight_decay_applied_twice_fails_and_passes_once_fixed(demo):
    source = demo / "src" / "labnet_demo" / "optimizers.py"
    fixed = source.read_text()
    assert DECOUPLED in fixed
    source.write_text(fixed.replace(DECOUPLED, ""))  # update() decays p, and step() adds wd * p to g as well
    broken = by_check(check_plugin(fresh_import("labnet_demo.plugin")))
    row = broken[("demo_lion", "weight decay")]
    assert row.result == "FAIL" and "applied twice" in row.detail, row
    assert [k for k, r in broken.items() if r.result != "PASS"] == [("demo_lion", "weight decay")]
    source.write_text(fixed)
    assert by_check(check_plugin(fresh_import("labnet_demo.plugin")))[("demo_lion", "weight decay")].result == "PASS"


def test_lion_whose_momentum_never_updates_fails(demo):
    source = demo / "src" / "labnet_demo" / "optimizers.py"
    text = source.read_text()
    source.write_text(
        text.replace("        m *= self.beta2\n        m += np.multiply(g, 1.0 - self.beta2, out=tmp)\n", "")
    )
    row = by_check(check_plugin(fresh_import("labnet_demo.plugin")))[("demo_lion", "state slots")]
    assert row.result == "FAIL" and "slot 'm' never changes" in row.detail, row


@pytest.mark.parametrize("name", ["Demo", "1demo", "my-plugin", "class", "demo_", ""])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="lower-case letters"):
        new_plugin(name, tmp_path)


def test_the_command_refuses_an_existing_folder_with_exit_2(tmp_path):
    from labnet.__main__ import main

    assert main(["plugin", "new", "demo", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "labnet-demo" / "README.md").is_file()
    assert main(["plugin", "new", "demo", "--dir", str(tmp_path)]) == 2


# --------------------------------------------------------------------------- installed for real


def _can_build_without_isolation() -> bool:
    from importlib import metadata

    if importlib.util.find_spec("setuptools") is None:
        return False
    major, minor = (int(x) for x in metadata.version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


@pytest.mark.slow
def test_installed_with_pip_it_passes_labnet_plugins_check_then_fails_with_double_decay(tmp_path):
    """~15 s: a virtualenv without pip that sees this environment's packages through a .pth file; pip installs
    labnet-demo into it (--no-build-isolation when this setuptools can build a wheel by itself)."""
    folder = new_plugin("demo", tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "outer_environment.pth").write_text(
        f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n"
    )
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "-e", str(folder)]
    if _can_build_without_isolation():
        install.insert(-2, "--no-build-isolation")
    result = subprocess.run(install, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr

    def check() -> subprocess.CompletedProcess:
        args = ["plugins", "check", "demo_leaky_relu", "demo_lion", "demo_blobs"]
        return subprocess.run(
            [python, "-m", "labnet", *args], capture_output=True, text=True, cwd=tmp_path, timeout=300
        )

    passed = check()
    assert passed.returncode == 0 and " passed, 0 failed" in passed.stdout, passed.stdout + passed.stderr
    assert "labnet-demo 0.1.0" in passed.stdout
    tests = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        capture_output=True, text=True, cwd=folder, timeout=300,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout + tests.stderr
    source = folder / "src" / "labnet_demo" / "optimizers.py"
    source.write_text(source.read_text().replace(DECOUPLED, ""))
    failed = check()
    assert failed.returncode == 1 and " passed, 1 failed" in failed.stdout, failed.stdout
    assert "FAIL: weight_decay=0.5 over 3 steps: weight decay is applied twice" in failed.stdout
