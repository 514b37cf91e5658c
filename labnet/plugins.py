"""The plugin manager, entry-point loading and the registry of components.

Built-ins are listed in ``DEFAULT_PLUGINS`` and registered exactly like third-party
plugins, which come from the ``labnet`` entry-point group. A plugin that fails to
import is recorded as broken (and shown by ``labnet plugins``) instead of taking
the others down.
"""

from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from labnet import __version__, hookspecs
from labnet.errors import ConfigError, LabnetError, PluginError

ENTRY_POINT_GROUP = "labnet"

#: module paths of the built-in plugins, in registration order
DEFAULT_PLUGINS: tuple[str, ...] = (
    "labnet.nn.builtin",
    "labnet.data.builtin",
    "labnet.tracking.mlflow_tracker",
    "labnet.train.health",
    "labnet.studies",
)

#: component kinds and the registration hook that provides each
KINDS: dict[str, str] = {
    "layer": "labnet_layers",
    "optimizer": "labnet_optimizers",
    "loss": "labnet_losses",
    "dataset": "labnet_datasets",
}


@dataclass(frozen=True)
class Provider:
    """Who provides a plugin: its registered name and the distribution it came from."""

    plugin: str
    dist: str
    version: str

    def __str__(self) -> str:
        return f"{self.dist} {self.version}"


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    cls: type
    provider: Provider


@dataclass(frozen=True)
class BrokenPlugin:
    plugin: str
    provider: Provider
    error: str
    traceback: str


@dataclass
class LabnetPluginManager:
    """A pluggy manager plus what labnet knows about each plugin's origin."""

    pm: pluggy.PluginManager
    providers: dict[str, Provider] = field(default_factory=dict)
    broken: list[BrokenPlugin] = field(default_factory=list)

    @property
    def hook(self):
        return self.pm.hook

    def register(self, plugin, name: str, provider: Provider) -> None:
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as err:
            raise PluginError(f"plugin {name!r} from {provider} is invalid: {err}") from err
        self.providers[name] = provider

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self.providers.pop(name, None)

    def call(self, hook_name: str, **kwargs):
        """Call a lifecycle hook; an exception is re-raised as a PluginError naming the plugin."""
        try:
            return getattr(self.pm.hook, hook_name)(**kwargs)
        except LabnetError:  # already says what went wrong (a tracker that cannot log, ...)
            raise
        except Exception as err:
            raise PluginError(f"plugin {self.blame(err)} raised in {hook_name}: {type(err).__name__}: {err}") from err

    def blame(self, err: BaseException) -> str:
        """The registered plugin whose code raised ``err`` (from its traceback), as 'name (dist version)'."""
        modules = {getattr(plugin, "__name__", None): name for name, plugin in self.pm.list_name_plugin()}
        exact = near = None  # the deepest frame in a plugin's own module; else in a module of its package
        tb = err.__traceback__
        while tb is not None:
            module = tb.tb_frame.f_globals.get("__name__", "")
            for plugin_module, name in modules.items():
                if plugin_module == module:
                    exact = name
                elif plugin_module and module.startswith(plugin_module.rsplit(".", 1)[0] + "."):
                    near = name
            tb = tb.tb_next
        culprit = exact or near
        if culprit is None:
            return "(unknown)"
        return f"{culprit!r} ({self.providers.get(culprit, '?')})"

    def distributions(self) -> list[str]:
        """``name==version`` of every distribution that contributed a plugin, sorted."""
        return sorted({f"{p.dist}=={p.version}" for p in self.providers.values()})


#: plugins of this process only, by name (``labnet.register``: components defined in a notebook cell)
_SESSION_PLUGINS: dict[str, tuple[object, Provider]] = {}


def add_session_plugin(plugin, name: str, provider: Provider) -> None:
    """Register ``plugin`` on every manager this process creates from now on (one of the same name is replaced)."""
    _SESSION_PLUGINS[name] = (plugin, provider)


def remove_session_plugin(name: str) -> None:
    _SESSION_PLUGINS.pop(name, None)


def _builtin_provider(module: str) -> Provider:
    return Provider(plugin=module, dist="labnet", version=__version__)


def get_plugin_manager(block: tuple[str, ...] | list[str] = (), entry_points: bool = True) -> LabnetPluginManager:
    """A fresh plugin manager with the built-ins and every installed entry-point plugin.

    :param block: plugin names (built-in module paths or entry-point names) not to load.
    """
    pm = pluggy.PluginManager("labnet")
    pm.add_hookspecs(hookspecs)
    manager = LabnetPluginManager(pm)
    blocked = set(block)
    for module_path in DEFAULT_PLUGINS:
        if module_path in blocked or module_path.rsplit(".", 1)[-1] in blocked:
            continue
        manager.register(importlib.import_module(module_path), module_path, _builtin_provider(module_path))
    if entry_points:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in blocked or pm.has_plugin(ep.name):
                continue
            dist = ep.dist.name if ep.dist else "unknown"
            provider = Provider(plugin=ep.name, dist=dist, version=ep.dist.version if ep.dist else "?")
            try:
                plugin = ep.load()
            except Exception as err:  # a broken plugin must not take the others down
                manager.broken.append(
                    BrokenPlugin(ep.name, provider, f"{type(err).__name__}: {err}", traceback.format_exc())
                )
                continue
            manager.register(plugin, ep.name, provider)
        for name, (plugin, provider) in _SESSION_PLUGINS.items():
            if name not in blocked:
                manager.register(plugin, name, provider)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as err:
        known = ", ".join(sorted(h for h in dir(pm.hook) if h.startswith("labnet_")))
        raise PluginError(f"{err}; known hooks: {known}") from err
    return manager


class Registry:
    """Every component the loaded plugins provide, by kind and name."""

    def __init__(self, manager: LabnetPluginManager) -> None:
        self.manager = manager
        self.components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        for kind, hook_name in KINDS.items():
            for plugin_name, provider in manager.providers.items():
                plugin = manager.pm.get_plugin(plugin_name)
                if plugin is None:
                    continue
                others = [p for name, p in manager.pm.list_name_plugin() if name != plugin_name]
                caller = manager.pm.subset_hook_caller(hook_name, remove_plugins=others)
                try:
                    results = caller()
                except Exception as err:
                    raise PluginError(
                        f"plugin {plugin_name!r} from {provider} raised in {hook_name}(): {type(err).__name__}: {err}"
                    ) from err
                for classes in results:
                    for cls in classes or ():
                        self._add(kind, cls, provider)

    def _add(self, kind: str, cls: type, provider: Provider) -> None:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"{kind} class {cls.__module__}.{cls.__qualname__} from {provider} has no `name` attribute; "
                'give it `name = "..."`, the name users type in configs'
            )
        existing = self.components[kind].get(name)
        if existing is not None and existing.cls is not cls:
            raise PluginError(
                f"two plugins provide the {kind} {name!r}: {existing.provider} "
                f"({existing.cls.__module__}.{existing.cls.__qualname__}) and {provider} "
                f"({cls.__module__}.{cls.__qualname__}); uninstall one of them or block it"
            )
        self.components[kind][name] = Component(kind, name, cls, provider)

    def get(self, kind: str, name: str) -> type:
        """The class registered as ``name`` for ``kind``; unknown names list what exists."""
        return self.component(kind, name).cls

    def component(self, kind: str, name: str) -> Component:
        if kind not in self.components:
            raise ConfigError(f"unknown component kind {kind!r}: accepted are {', '.join(KINDS)}")
        found = self.components[kind].get(name)
        if found is None:
            available = ", ".join(f"{c.name} ({c.provider})" for c in self.list(kind))
            raise ConfigError(f"unknown {kind} {name!r}; available: {available or 'none'}")
        return found

    def list(self, kind: str | None = None) -> list[Component]:
        kinds = [kind] if kind else list(KINDS)
        return [c for k in kinds for c in sorted(self.components[k].values(), key=lambda c: c.name)]


def get_registry(manager: LabnetPluginManager | None = None) -> Registry:
    """The registry of a plugin manager (a fresh default one when none is given)."""
    return Registry(manager or get_plugin_manager())
