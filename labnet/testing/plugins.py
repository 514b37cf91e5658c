"""A fresh plugin manager with the plugin under test registered as its entry point would register it, and
``labnet plugins check`` on that plugin's components alone."""

from __future__ import annotations

import types
from importlib import metadata

from labnet.plugins import DEFAULT_PLUGINS, ENTRY_POINT_GROUP, LabnetPluginManager, Provider, get_plugin_manager


def provider_of(module: types.ModuleType) -> Provider:
    """The entry point that names ``module`` when its package is installed; otherwise its top-level package
    name as plugin and distribution, version ``0+local`` (a package generated into a temporary folder)."""
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.value == module.__name__ and ep.dist is not None:
            return Provider(ep.name, ep.dist.name, ep.dist.version)
    top = module.__name__.split(".")[0]
    return Provider(top, top.replace("_", "-"), getattr(module, "__version__", None) or "0+local")


def fresh_manager(*plugins: types.ModuleType, builtins: bool = True) -> LabnetPluginManager:
    """A new manager (never the process's): labnet's built-ins unless ``builtins=False``, no installed entry
    points, then each of ``plugins`` registered under its entry point's name and distribution.

    Leave the built-ins out when you call lifecycle hooks with fake runs: the MLflow tracker and the health
    monitor expect a real one.
    """
    manager = get_plugin_manager(block=() if builtins else DEFAULT_PLUGINS, entry_points=False)
    for module in plugins:
        provider = provider_of(module)
        manager.register(module, provider.plugin, provider)
    manager.pm.check_pending()
    return manager


def check_plugin(*plugins: types.ModuleType):
    """``labnet plugins check`` for the components ``plugins`` provide: a list of
    :class:`~labnet.testing.contracts.CheckResult`, one per check (``[r for r in results if r.failed]`` are
    the failures)."""
    from labnet.plugins import Registry
    from labnet.testing.contracts import run_checks

    registry = Registry(fresh_manager(*plugins))
    ours = {provider_of(m).dist for m in plugins}
    names = [c.name for c in registry.list() if c.provider.dist in ours]
    return run_checks(registry, names) if names else []


def assert_plugin_passes_checks(*plugins: types.ModuleType) -> None:
    """Raise AssertionError listing every failed check of :func:`check_plugin` (and if there is nothing to check)."""
    from labnet.testing.contracts import format_table

    results = check_plugin(*plugins)
    if not results:
        raise AssertionError(f"{', '.join(m.__name__ for m in plugins)} provide no component to check")
    failed = [r for r in results if r.failed]
    if failed:
        raise AssertionError(f"{len(failed)} check(s) failed:\n{format_table(failed)}")
