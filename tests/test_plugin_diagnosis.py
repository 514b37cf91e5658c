"""`labnet plugins` and `labnet plugins check` with plugins that do not load: each problem is one line naming
the plugin, its distribution, the hook and the argument, and everything else is still listed (and checked).
A plugin made only of hooks is listed with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import labnet
from labnet.errors import PluginError
from labnet.plugins import Provider, Registry, code_versions, get_plugin_manager

pytestmark = pytest.mark.xdist_group("plugin-diagnosis")  # one worker: plugins pip-installed once

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["labnet-testplugin", "labnet-clashplugin", "labnet-badhook", "labnet-hooksonly"]


@pytest.fixture(scope="module")
def troubled(tmp_path_factory, install_test_plugins):
    with install_test_plugins(PACKAGES, tmp_path_factory.mktemp("troubled")) as target:
        yield target


def test_labnet_plugins_lists_everything_and_one_line_per_problem(troubled, tmp_path, cli):
    result = cli(tmp_path, "plugins", path=(troubled,))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    broken = [line for line in out.splitlines() if line.startswith("BROKEN")]
    assert len(broken) == 2, out
    (bad,) = [line for line in broken if "badhook" in line]
    assert "labnet-badhook 0.3.0" in bad and "labnet_epoch_end" in bad and "'epochs'" in bad, bad
    assert "its arguments: run, epoch, metrics, model, optimizer" in bad, bad
    (clash,) = [line for line in broken if "clashplugin" in line]
    assert "'sgd'" in clash and "labnet-clashplugin 0.2.0" in clash and "labnet_optimizers" in clash, clash
    rows = [line.split() for line in out.splitlines()]
    assert ["layer", "test_scale", "labnet-testplugin"] == [r for r in rows if "test_scale" in r][0][:3]
    assert [r for r in rows if "sgd" in r][0][2] == "labnet", "the first of two clashing names is kept"
    (hooks_only,) = [r for r in rows if r and r[0] == "hooksonly"]
    assert hooks_only[1:] == ["labnet-hooksonly", "0.4.0", "labnet_run_end"], hooks_only


def test_labnet_plugins_json_has_plugins_with_hooks_and_the_problems(troubled, tmp_path, cli):
    result = cli(tmp_path, "plugins", "--json", path=(troubled,))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    plugins = {p["plugin"]: p for p in data["plugins"]}
    assert plugins["hooksonly"]["hooks"] == ["labnet_run_end"]
    assert plugins["testplugin"]["hooks"] == ["labnet_layers", "labnet_optimizers"]
    stages = {b["plugin"]: b["stage"] for b in data["broken"]}
    assert stages == {"badhook": "hooks", "clashplugin": "register"}


def test_labnet_plugins_check_fails_the_problems_in_one_line_and_checks_the_rest(troubled, tmp_path, cli):
    result = cli(tmp_path, "plugins", "check", path=(troubled,))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if line.split()[-1:] == ["FAIL"]]
    assert {line.split()[0] for line in failed} == {"badhook", "clashplugin"}, result.stdout
    assert any(line.split()[0] == "test_scale" and line.endswith("PASS") for line in result.stdout.splitlines())
    detail = result.stdout.split("FAIL: ")[1:]
    assert all("\n    " not in d.split("\n", 1)[0] for d in detail)


def test_python_m_labnet_stops_on_the_bad_hook_with_one_line(troubled, tmp_path, cli):
    result = cli(tmp_path, "trainer.epochs=1", "plugins.block=[clashplugin]", path=(troubled,))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "badhook" in lines[0] and "'epochs'" in lines[0], result.stderr


def test_a_misspelt_hook_suggests_the_right_one():
    class Misspelt:
        @labnet.hookimpl
        def labnet_epoch_ends(self, run):
            pass

    manager = get_plugin_manager(entry_points=False)
    with pytest.raises(
        PluginError,
        match=r"plugin 'm' \(m-dist 1\.0\): unknown hook labnet_epoch_ends; did you mean "
        r"labnet_epoch_end\?",
    ):
        manager.register(Misspelt(), "m", Provider("m", "m-dist", "1.0"))
    assert not manager.pm.has_plugin("m")


def test_registry_problems_are_kept_when_tolerant():
    class Nameless:
        pass

    class Plugin:
        @labnet.hookimpl
        def labnet_layers(self):
            return [Nameless]

        @labnet.hookimpl
        def labnet_optimizers(self):
            raise RuntimeError("no optimizers today")

    manager = get_plugin_manager(entry_points=False)
    manager.register(Plugin(), "odd", Provider("odd", "odd-dist", "2.0"))
    registry = Registry(manager, tolerant=True)
    messages = [p.error for p in registry.problems]
    assert len(messages) == 2 and all(m.startswith("plugin 'odd' (odd-dist 2.0)") for m in messages), messages
    assert "labnet_layers()" in messages[0] and "no `name`" in messages[0]
    assert "labnet_optimizers()" in messages[1] and "no optimizers today" in messages[1]
    assert registry.get("layer", "affine") and registry.get("optimizer", "adam")
    with pytest.raises(PluginError, match="no `name`"):
        Registry(manager)


def test_code_versions_name_labnet_and_every_loaded_plugin():
    manager = get_plugin_manager(entry_points=False)
    manager.register(types_module("cv_plugin"), "cv", Provider("cv", "labnet-cv", "1.2.3"))
    versions = code_versions(manager)
    assert versions == {"labnet": labnet.__version__, "labnet-cv": "1.2.3"}


def types_module(name: str):
    import types

    return types.ModuleType(name)
