"""The plugin contract end to end: real packages under tests/plugins/ are pip-installed and
found through their ``labnet`` entry points; a broken one is reported without taking the
others down; a name clash names both distributions; unknown names list what exists.

The packages are installed with ``pip install --target`` into a temporary folder put on
``sys.path`` (and on ``PYTHONPATH`` for subprocesses), not into the interpreter's
site-packages: the virtualenv is shared, and a clash plugin left there by a concurrent or
killed session would break every other ``get_registry()``. Entry-point discovery
(``importlib.metadata``) reads the same ``*.dist-info`` either way.
"""

from __future__ import annotations

import json
import re
import sys
import types
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import labnet
from labnet.errors import ConfigError, PluginError
from labnet.nn.gradcheck import gradcheck
from labnet.nn.layers import Affine
from labnet.nn.model import Sequential
from labnet.plugins import DEFAULT_PLUGINS, Provider, Registry, get_plugin_manager, get_registry

pytestmark = pytest.mark.xdist_group("plugins")  # one worker: plugins pip-installed once

REPO = Path(__file__).resolve().parents[1]


PLUGIN_SOURCES = Path(__file__).resolve().parent / "plugins"


def project_version(package: str) -> str:
    text = (PLUGIN_SOURCES / package / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.MULTILINE).group(1)


TESTPLUGIN_VERSION = project_version("labnet-testplugin")


# --------------------------------------------------------------------------- installing the packages


@pytest.fixture(scope="session")
def installed_plugins(tmp_path_factory, install_test_plugins):
    """labnet-testplugin and labnet-brokenplugin installed for the whole session; yields their folder."""
    packages = ["labnet-testplugin", "labnet-brokenplugin"]
    with install_test_plugins(packages, tmp_path_factory.mktemp("plugins")) as target:
        yield target


# --------------------------------------------------------------------------- discovery


def test_the_test_plugin_is_found_through_its_entry_point(installed_plugins, pm):
    (ep,) = metadata.entry_points(group="labnet", name="testplugin")
    assert ep.value == "labnet_testplugin.plugin"
    assert pm.pm.has_plugin("testplugin")
    registry = get_registry(pm)
    for kind, name in (("layer", "test_scale"), ("optimizer", "test_sgd_clone")):
        provider = registry.component(kind, name).provider
        assert provider == Provider(plugin="testplugin", dist="labnet-testplugin", version=TESTPLUGIN_VERSION)
    assert f"labnet-testplugin=={TESTPLUGIN_VERSION}" in pm.distributions()
    assert f"labnet=={labnet.__version__}" in pm.distributions()


def test_builtins_are_registered_like_plugins(builtin_components, pm):
    registry = get_registry(pm)
    for kind, names in builtin_components.items():
        for name in names:
            provider = registry.component(kind, name).provider
            assert (provider.dist, provider.version) == ("labnet", labnet.__version__), (kind, name)
            assert provider.plugin in DEFAULT_PLUGINS


def test_the_plugins_layer_passes_gradcheck_and_trains_in_a_model(installed_plugins, pm):
    registry = get_registry(pm)
    scale_cls = registry.get("layer", "test_scale")
    x = np.random.default_rng(0).standard_normal((4, 5))
    errors = gradcheck(scale_cls(), x)
    assert set(errors) == {"input", "s"} and max(errors.values()) < 1e-6, errors

    model = Sequential([Affine(3), scale_cls(init=2.0)]).build((5,), np.random.default_rng(0), np.float64)
    assert "1.s" in model.params and np.shares_memory(model.params["1.s"], model.flat_params)
    dout = np.random.default_rng(1).standard_normal((4, 3))
    h = model.forward(x, train=True) / 2.0
    model.backward(dout)
    assert model.grads["1.s"][0] == pytest.approx(np.sum(dout * h), rel=1e-12)
    np.testing.assert_allclose(model.grads["0.W"], x.T @ (2.0 * dout), rtol=1e-12)

    clone = registry.get("optimizer", "test_sgd_clone")(lr=0.1)
    builtin = registry.get("optimizer", "sgd")(lr=0.1)
    a, b = model.params, {k: v.copy() for k, v in model.params.items()}
    clone.step(a, model.grads)
    builtin.step(b, model.grads)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12)


def test_unknown_names_list_every_available_name_with_its_provider(builtin_components, installed_plugins, pm):
    registry = get_registry(pm)
    for kind in builtin_components:
        with pytest.raises(ConfigError) as info:
            registry.get(kind, "lion")
        msg = str(info.value)
        assert "'lion'" in msg and kind in msg
        for component in registry.list(kind):
            dist, version = component.provider.dist, component.provider.version
            assert re.search(rf"\b{re.escape(component.name)} \({re.escape(dist)} {re.escape(version)}\)", msg), (
                f"{component.name} ({dist} {version}) missing from: {msg}"
            )
        for name in builtin_components[kind]:
            assert re.search(rf"\b{name} \(labnet {re.escape(labnet.__version__)}\)", msg), msg
    with pytest.raises(ConfigError) as info:
        registry.get("optimizer", "lion")
    assert f"test_sgd_clone (labnet-testplugin {TESTPLUGIN_VERSION})" in str(info.value)


def test_an_unknown_kind_lists_the_kinds(builtin_components, pm):
    with pytest.raises(ConfigError) as info:
        get_registry(pm).get("scheduler", "cosine")
    for kind in builtin_components:
        assert kind in str(info.value)


def test_a_broken_plugin_is_reported_and_the_others_still_load(installed_plugins, pm):
    broken = {b.plugin: b for b in pm.broken}
    assert "brokenplugin" in broken, pm.broken
    entry = broken["brokenplugin"]
    assert entry.provider.dist == "labnet-brokenplugin"
    assert entry.error.startswith("ImportError:")
    assert "labnet-missing-dependency" in entry.error
    assert "labnet_brokenplugin" in entry.traceback and "raise ImportError" in entry.traceback
    assert not pm.pm.has_plugin("brokenplugin")
    assert pm.pm.has_plugin("testplugin")
    registry = get_registry(pm)
    assert registry.get("layer", "test_scale").__module__ == "labnet_testplugin.plugin"
    assert registry.get("optimizer", "adam").name == "adam"


def test_plugins_can_be_blocked_by_name(installed_plugins):
    manager = get_plugin_manager(block=["testplugin", "brokenplugin"])
    assert not manager.pm.has_plugin("testplugin") and not manager.broken
    with pytest.raises(ConfigError):
        get_registry(manager).get("layer", "test_scale")
    assert get_registry(manager).get("layer", "affine") is Affine


def test_the_pm_fixture_is_a_fresh_manager(pm):
    other = get_plugin_manager()
    assert other is not pm and other.pm is not pm.pm
    pm.register(types.SimpleNamespace(), "only-here", Provider("only-here", "x", "1"))
    assert not other.pm.has_plugin("only-here")


# --------------------------------------------------------------------------- inline plugins


class HalfMse:
    name = "inline_half_mse"


class InlinePlugin:
    @labnet.hookimpl
    def labnet_losses(self):
        return [HalfMse]


def test_an_inline_plugin_registers_and_unregisters(pm):
    plugin = InlinePlugin()
    pm.register(plugin, "inline", Provider("inline", "inline-dist", "1.2"))
    try:
        component = get_registry(pm).component("loss", "inline_half_mse")
        assert component.cls is HalfMse
        assert str(component.provider) == "inline-dist 1.2"
    finally:
        pm.unregister("inline")
    assert "inline" not in pm.providers
    with pytest.raises(ConfigError, match="inline_half_mse"):
        get_registry(pm).get("loss", "inline_half_mse")


class Misspelt:
    @labnet.hookimpl
    def labnet_layerz(self):
        return []


def test_a_misspelt_hook_is_refused_when_registered(pm):
    with pytest.raises(PluginError, match="misspelt-dist 0.1.*unknown hook labnet_layerz; did you mean labnet_layers"):
        pm.register(Misspelt(), "misspelt", Provider("misspelt", "misspelt-dist", "0.1"))
    assert not pm.pm.has_plugin("misspelt")
    pm.pm.check_pending()  # nothing pending: it was never registered


def test_get_plugin_manager_reports_a_misspelt_hook(monkeypatch):
    module = types.ModuleType("labnet_misspelt_plugin")
    module.labnet_layerz = labnet.hookimpl(lambda: [])
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr("labnet.plugins.DEFAULT_PLUGINS", (*DEFAULT_PLUGINS, module.__name__))
    with pytest.raises(PluginError) as info:
        get_plugin_manager(entry_points=False)
    msg = str(info.value)
    assert "labnet_layerz" in msg and "labnet_layers" in msg, msg


def test_a_hookimpl_with_an_argument_the_spec_lacks_names_the_plugin(pm):
    class BadArgs:
        @labnet.hookimpl
        def labnet_epoch_end(self, run, epochs):
            pass

    with pytest.raises(PluginError) as info:
        pm.register(BadArgs(), "badargs", Provider("badargs", "labnet-badargs", "0.1"))
    msg = str(info.value)
    assert "labnet-badargs" in msg and "labnet_epoch_end" in msg and "epochs" in msg, msg
    assert not pm.pm.has_plugin("badargs")


def test_a_component_without_a_name_is_refused(pm):
    class Nameless:
        pass

    class Plugin:
        @labnet.hookimpl
        def labnet_optimizers(self):
            return [Nameless]

    pm.register(Plugin(), "nameless", Provider("nameless", "labnet-nameless", "0.1"))
    with pytest.raises(PluginError) as info:
        Registry(pm)
    assert "Nameless" in str(info.value) and "labnet-nameless" in str(info.value)


# --------------------------------------------------------------------------- clashes


def test_a_name_clash_names_both_distributions(tmp_path, install_test_plugins):
    with install_test_plugins(["labnet-clashplugin"], tmp_path / "clash"):
        manager = get_plugin_manager()
        assert manager.pm.has_plugin("clashplugin")
        with pytest.raises(PluginError) as info:
            get_registry(manager)
    msg = str(info.value)
    assert "'sgd'" in msg and "optimizer" in msg
    assert re.search(r"(?<![\w-])labnet(?![\w-])", msg), f"the built-in's distribution missing from: {msg}"
    assert "labnet-clashplugin" in msg
    assert get_registry().get("optimizer", "sgd").__module__ == "labnet.nn.optimizers", "uninstalled again"


# --------------------------------------------------------------------------- `labnet plugins`


def test_labnet_plugins_lists_every_component_with_its_provider(builtin_components, installed_plugins, tmp_path, cli):
    result = cli(tmp_path, "plugins", path=(installed_plugins,))
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]

    def row(name: str) -> list[str]:
        found = [r for r in rows if name in r]
        assert len(found) == 1, f"{name!r}: expected one row in:\n{result.stdout}"
        return found[0]

    for kind, names in builtin_components.items():
        for name in names:
            assert kind in row(name) and "labnet" in row(name), row(name)
    assert {"layer", "labnet-testplugin", TESTPLUGIN_VERSION} <= set(row("test_scale"))
    assert {"optimizer", "labnet-testplugin"} <= set(row("test_sgd_clone"))
    output = result.stdout + result.stderr
    assert "labnet-brokenplugin" in output and "labnet-missing-dependency" in output, output


def test_labnet_plugins_json(builtin_components, installed_plugins, tmp_path, cli):
    result = cli(tmp_path, "plugins", "--json", path=(installed_plugins,))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    listed = {(c["kind"], c["name"]): c["distribution"] for c in data["components"]}
    for kind, names in builtin_components.items():
        for name in names:
            assert listed[(kind, name)] == "labnet"
    assert listed[("layer", "test_scale")] == "labnet-testplugin"
    (broken,) = [b for b in data["broken"] if b["distribution"] == "labnet-brokenplugin"]
    assert "labnet-missing-dependency" in broken["error"]


def test_error_deep_in_a_builtin_plugin_blames_the_plugin_whose_hook_raised(tmp_path, monkeypatch):
    """The MLflow tracker's sweep hook fails inside labnet.tracking.sweep_summary: the tracker is named, not
    another built-in plugin of the `labnet` package."""
    from omegaconf import OmegaConf

    import labnet.tracking.sweep_summary as sweep_summary
    from labnet.plugins import get_plugin_manager
    from labnet.sweeps.callback import Sweep

    def broken_store(client, name, dataset=None):
        raise RuntimeError("the store refused")

    monkeypatch.setattr(sweep_summary, "find_or_create_experiment", broken_store)
    for key in ("MLFLOW_TRACKING_URI", "LABNET_MLFLOW_PARENT_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    cfg = OmegaConf.create(
        {"tracking": {"name": "mlflow", "uri": f"sqlite:///{tmp_path}/mlflow.db"}, "dataset": {"name": "spiral"}}
    )
    manager = get_plugin_manager()
    with pytest.raises(PluginError) as info:
        manager.call("labnet_sweep_start", sweep=Sweep(id="s1", dir=tmp_path, cfg=cfg))
    message = str(info.value)
    assert message.startswith("plugin 'labnet.tracking.mlflow_tracker' (labnet "), message
    assert "labnet_sweep_start" in message and "the store refused" in message


def test_the_tracker_completes_a_sweeps_results_before_the_studies_plot_them():
    """labnet_sweep_end: the MLflow tracker adds the jobs whose results stayed on other machines, so it must
    be called before the studies plugin (pluggy calls the hook implementations from the end of this list)."""
    from labnet.plugins import get_plugin_manager

    manager = get_plugin_manager(entry_points=False)
    order = [impl.plugin_name for impl in reversed(manager.pm.hook.labnet_sweep_end.get_hookimpls())]
    assert order.index("labnet.tracking.mlflow_tracker") < order.index("labnet.studies"), order
