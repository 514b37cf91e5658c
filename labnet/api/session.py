"""Components defined in a notebook (or any script), registered for this process without packaging them:
``labnet.register(MyLayer)``. They are served by one session plugin that every plugin manager of the
process loads (``labnet.plugins.add_session_plugin``), so runs use them by name, ``labnet plugins``-style
checks see them, and an optimizer, loss or data set gets its config node derived from its constructor
as a plugin's would (``labnet.config.register_component_configs``). Registering a class again under
its name replaces the earlier one (a notebook cell run twice).

Only runs in this process see them: a sweep whose launcher starts other processes (joblib, Ray) does not.
"""

from __future__ import annotations

from typing import Any

from labnet import hookimpl
from labnet.errors import ConfigError, PluginError
from labnet.plugins import KINDS, Provider, add_session_plugin, get_plugin_manager, remove_session_plugin

SESSION_PLUGIN = "session"
SESSION_PROVIDER = Provider(plugin=SESSION_PLUGIN, dist="labnet-session", version="0")


class SessionComponents:
    """The session plugin: the registered classes, by kind and name, through the registration hooks."""

    def __init__(self) -> None:
        self.classes: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}

    @hookimpl
    def labnet_layers(self):
        return list(self.classes["layer"].values())

    @hookimpl
    def labnet_optimizers(self):
        return list(self.classes["optimizer"].values())

    @hookimpl
    def labnet_losses(self):
        return list(self.classes["loss"].values())

    @hookimpl
    def labnet_datasets(self):
        return list(self.classes["dataset"].values())


_components = SessionComponents()


def kind_of(cls: type) -> str:
    """The component kind of a class: by its base class (Layer, Optimizer, Loss), a data set by its ``load``."""
    from labnet.nn.layer import Layer
    from labnet.nn.losses import Loss
    from labnet.nn.optimizers import Optimizer

    for kind, base in (("layer", Layer), ("optimizer", Optimizer), ("loss", Loss)):
        if issubclass(cls, base):
            return kind
    if callable(getattr(cls, "load", None)):
        return "dataset"
    raise ConfigError(
        f"cannot tell what {cls.__qualname__} is: register a subclass of labnet.nn.layer.Layer, "
        "labnet.nn.optimizers.Optimizer or labnet.nn.losses.Loss, a data set class with a load() method, "
        "or say which with kind= (one of: " + ", ".join(KINDS) + ")"
    )


def register(*components: Any, kind: str | None = None) -> list[str]:
    """Register classes (a layer, optimizer, loss or data set) or plugin modules for this session.

    A class is used by its ``name`` (``model.activation=NAME``, ``model.layers=[{type: NAME}]``,
    ``optimizer=NAME``...); a module (or object) with ``@labnet.hookimpl`` functions is registered as a
    plugin named after it. Returns what was registered (``layer/leaky_relu``, ``plugin/my_hooks``).
    Checked at once: a class without a ``name``, or one whose name a plugin already uses, is refused here.
    """
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"kind={kind!r}: accepted are {', '.join(KINDS)}")
    added, undo = [], []
    for component in components:
        if isinstance(component, type):
            component_kind = kind or kind_of(component)
            name = getattr(component, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(
                    f'{component.__qualname__} has no `name`; give it `name = "..."`, the name configs use'
                )
            table = _components.classes[component_kind]
            undo.append((table, name, table.get(name)))
            table[name] = component
            added.append(f"{component_kind}/{name}")
        else:
            name = getattr(component, "__name__", None) or type(component).__name__
            add_session_plugin(component, name, Provider(plugin=name, dist="labnet-session", version="0"))
            undo.append((None, name, None))
            added.append(f"plugin/{name}")
    add_session_plugin(_components, SESSION_PLUGIN, SESSION_PROVIDER)
    try:
        from labnet.plugins import Registry

        Registry(get_plugin_manager())  # a clash, a hook with a wrong signature: said now, not in every run
    except Exception:
        for table, name, previous in reversed(undo):
            if table is None:
                remove_session_plugin(name)
            elif previous is None:
                del table[name]
            else:
                table[name] = previous
        raise
    return added


def registered() -> dict[str, list[str]]:
    """The session's classes by kind (names)."""
    return {kind: sorted(classes) for kind, classes in _components.classes.items() if classes}


def clear() -> None:
    """Forget every component and plugin registered in this session."""
    from labnet import plugins

    for name in list(plugins._SESSION_PLUGINS):
        remove_session_plugin(name)
    for classes in _components.classes.values():
        classes.clear()
