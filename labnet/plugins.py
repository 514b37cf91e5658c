"""The plugin manager, entry-point loading and the registry of components.

Built-ins are listed in ``DEFAULT_PLUGINS`` and registered exactly like third-party
plugins, which come from the ``labnet`` entry-point group. A plugin that fails to
import is recorded as broken (and shown by ``labnet plugins``) instead of taking
the others down.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
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
    """A plugin left out, wholly or in part: it failed to ``import`` (``stage``), one of its ``hooks`` does not fit
    the specs, or (``register``) a registration hook raised or offered a component that cannot be registered."""

    plugin: str
    provider: Provider
    error: str
    traceback: str
    stage: str = "import"


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
        """Register ``plugin``; a hook that does not fit its spec is a one-line PluginError naming it."""
        problems = hook_problems(self.pm, plugin, name, provider)
        if problems:
            raise PluginError("; ".join(problems))
        try:
            self.pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise PluginError(f"plugin {name!r} ({provider}) is invalid: {first}") from err
        self.providers[name] = provider

    def hooks(self, name: str) -> list[str]:
        """The hooks plugin ``name`` implements, in the order of the specs."""
        plugin = self.pm.get_plugin(name)
        implemented = {impl.name for impl in self.pm.get_hookcallers(plugin) or ()} if plugin is not None else set()
        return [hook for hook in hook_names() if hook in implemented]

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


def hook_names() -> list[str]:
    """Every hook labnet defines, in the order of :mod:`labnet.hookspecs`."""
    return [name for name in vars(hookspecs) if name.startswith("labnet_")]


def hook_problems(pm: pluggy.PluginManager, plugin, name: str, provider: Provider) -> list[str]:
    """One line per hook implementation of ``plugin`` that pluggy would refuse: an unknown hook (with the
    closest known one) or an argument its spec does not have (with the arguments it has)."""
    problems = []
    known = hook_names()
    for attr in dir(plugin):
        impl = getattr(plugin, attr, None)
        if getattr(impl, "labnet_impl", None) is None:
            continue
        where = f"plugin {name!r} ({provider})"
        if attr not in known:
            close = difflib.get_close_matches(attr, known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            problems.append(f"{where}: unknown hook {attr}; {hint}known hooks: {', '.join(known)}")
            continue
        spec = getattr(pm.hook, attr).spec
        try:
            params = inspect.signature(impl).parameters.values()
        except (TypeError, ValueError):
            continue
        takes = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        extra = [arg for arg in takes if arg not in spec.argnames]
        if extra:
            problems.append(
                f"{where}: hook {attr} has no argument {', '.join(map(repr, extra))} "
                f"(its arguments: {', '.join(spec.argnames) or 'none'})"
            )
    return problems


def code_versions(manager: LabnetPluginManager) -> dict[str, str]:
    """``{distribution: version}`` of labnet and of every plugin ``manager`` loaded: the code that trains."""
    versions = {"labnet": __version__}
    versions.update({p.dist: p.version for p in manager.providers.values()})
    return dict(sorted(versions.items()))


#: plugins of this process only, by name (``labnet.register``: components defined in a notebook cell)
_SESSION_PLUGINS: dict[str, tuple[object, Provider]] = {}


def add_session_plugin(plugin, name: str, provider: Provider) -> None:
    """Register ``plugin`` on every manager this process creates from now on (one of the same name is replaced)."""
    _SESSION_PLUGINS[name] = (plugin, provider)


def remove_session_plugin(name: str) -> None:
    _SESSION_PLUGINS.pop(name, None)


def _builtin_provider(module: str) -> Provider:
    return Provider(plugin=module, dist="labnet", version=__version__)


def get_plugin_manager(
    block: tuple[str, ...] | list[str] = (), entry_points: bool = True, tolerant: bool = False
) -> LabnetPluginManager:
    """A fresh plugin manager with the built-ins and every installed entry-point plugin.

    :param block: plugin names (built-in module paths or entry-point names) not to load.
    :param tolerant: an entry-point plugin whose hooks do not fit the specs is left out and recorded in
        ``broken`` (stage ``"hooks"``), as one that fails to import is, instead of raising a PluginError:
        what the diagnosis commands (``labnet plugins``) want.
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
            try:
                manager.register(plugin, ep.name, provider)
            except PluginError as err:
                if not tolerant:
                    raise
                manager.broken.append(BrokenPlugin(ep.name, provider, str(err), "", stage="hooks"))
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
    """Every component the loaded plugins provide, by kind and name.

    A registration hook that raises, a class without a ``name`` and two plugins offering one name are
    PluginErrors; with ``tolerant=True`` (the diagnosis commands) each is one line in ``problems`` instead,
    the first of two clashing components is kept, and the rest of the registry is built.
    """

    def __init__(self, manager: LabnetPluginManager, tolerant: bool = False) -> None:
        self.manager = manager
        self.tolerant = tolerant
        self.problems: list[BrokenPlugin] = []
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
                    message = (
                        f"plugin {plugin_name!r} ({provider}) raised in {hook_name}(): {type(err).__name__}: {err}"
                    )
                    self._problem(plugin_name, provider, message, err)
                    continue
                for classes in results:
                    for cls in classes or ():
                        self._add(kind, cls, plugin_name, provider, hook_name)

    def _problem(self, plugin: str, provider: Provider, message: str, cause: BaseException | None = None) -> None:
        if not self.tolerant:
            raise PluginError(message) from cause
        self.problems.append(BrokenPlugin(plugin, provider, message, "", stage="register"))

    def _add(self, kind: str, cls: type, plugin: str, provider: Provider, hook_name: str) -> None:
        name = getattr(cls, "name", None)
        where = f"plugin {plugin!r} ({provider}), {hook_name}()"
        if not isinstance(name, str) or not name:
            return self._problem(
                plugin,
                provider,
                f"{where}: {kind} class {cls.__module__}.{cls.__qualname__} has no `name` attribute; "
                'give it `name = "..."`, the name users type in configs',
            )
        existing = self.components[kind].get(name)
        if existing is not None and existing.cls is not cls:
            return self._problem(
                plugin,
                provider,
                f"two plugins provide the {kind} {name!r}: {existing.provider} "
                f"({existing.cls.__module__}.{existing.cls.__qualname__}) and {where} "
                f"({cls.__module__}.{cls.__qualname__}); uninstall one of them or block it "
                f"(plugins.block=[{plugin}])",
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


def load_tolerantly() -> tuple[LabnetPluginManager, Registry, list[BrokenPlugin]]:
    """Everything that loads, and the problems of what does not (for the commands that diagnose plugins):
    a LabnetError only when not even the built-ins load."""
    manager = get_plugin_manager(tolerant=True)
    registry = Registry(manager, tolerant=True)
    return manager, registry, [*manager.broken, *registry.problems]
