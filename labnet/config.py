"""From composed config to components: where configs live, config nodes derived from
constructors, and validation that names the bad key and the accepted ones."""

from __future__ import annotations

import inspect
import types
import typing
from pathlib import Path
from typing import Any

from labnet.errors import ConfigError

#: config keys that never change what a run computes (how it is tracked, resumed, threaded, swept):
#: left out of a job's config hash and of the params `labnet compare` shows
RUN_INVARIANT_PREFIXES = (
    "tracking.",
    "trainer.resume",
    "trainer.progress",
    "trainer.threads",
    "sweep.rerun",
    "sweep.fail_fast",
    "sweep.replicates",
    "plugins.",
)

#: model keys only the generated MLP reads: a non-empty ``model.layers`` replaces them, so they are left out of
#: the params (and the config hash) of such a run instead of being logged as if they were used
MLP_ONLY_KEYS = ("hidden_sizes", "activation", "use_batchnorm", "dropout")

#: config groups that name a registered component, by component kind
COMPONENT_GROUPS: dict[str, str] = {"optimizer": "optimizer", "loss": "loss", "dataset": "dataset"}


def check_flag(key: str, value: Any) -> bool:
    """A config flag as given, or a ConfigError naming ``key`` (``bool("maybe")`` would be True)."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: must be true or false")
    return value


def check_whole(key: str, value: Any, minimum: int, otherwise: str = "") -> int:
    """A whole-number config value >= ``minimum``, or a ConfigError naming ``key`` (``otherwise``: what else
    is accepted, e.g. " or null")."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r}: must be a whole number >= {minimum}{otherwise}")
    return value


def config_dirs() -> tuple[Path, Path]:
    """``(conf, experiments)``: inside the installed package (wheel) or at the checkout's top level."""
    package = Path(__file__).resolve().parent
    if (package / "conf").is_dir():
        return package / "conf", package / "experiments"
    return package.parent / "conf", package.parent / "experiments"


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    params = inspect.signature(cls.__init__).parameters
    return {k: p for k, p in params.items() if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def default_node(cls: type) -> dict[str, Any]:
    """A config node for a component with no YAML: ``name`` plus its constructor's defaults
    (``???``, Hydra's mandatory value, for parameters without one)."""
    node: dict[str, Any] = {"name": cls.name}
    for key, param in constructor_parameters(cls).items():
        default = param.default
        node[key] = "???" if default is inspect.Parameter.empty else default
    return node


def _type_ok(value: Any, annotation: Any, default: Any) -> bool:
    """Loose type check of a config value against an annotation (or the default's type)."""
    if value is None:
        return (
            default is None or annotation is Any or "None" in str(annotation) or annotation is inspect.Parameter.empty
        )
    allowed: tuple = ()
    origin = typing.get_origin(annotation)
    if annotation not in (inspect.Parameter.empty, Any):
        args = typing.get_args(annotation) if origin in (typing.Union, types.UnionType) else (annotation,)
        allowed = tuple(typing.get_origin(a) or a for a in args if a is not type(None))
    elif default is not None and default is not inspect.Parameter.empty:
        allowed = (type(default),)
    if not allowed or any(a is Any for a in allowed):
        return True
    if bool in allowed:
        if isinstance(value, bool):
            return True
        allowed = tuple(a for a in allowed if a is not bool)
    elif isinstance(value, bool):
        return False
    if float in allowed and isinstance(value, int):
        return True
    if (list in allowed or tuple in allowed) and isinstance(value, (list, tuple)):
        return True
    return isinstance(value, tuple(a for a in allowed if isinstance(a, type)))


def build_component(cls: type, kind: str, options: dict[str, Any], where: str | None = None) -> Any:
    """Instantiate ``cls`` from config ``options``, rejecting unknown keys and wrong types by name."""
    where = where or kind
    params = constructor_parameters(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    valid = ", ".join(params) or "(none)"
    kwargs = {}
    for key, value in options.items():
        if key == "name":
            continue
        if key not in params:
            raise ConfigError(f"unknown key {where}.{key} for {kind} {cls.name!r}; valid keys: {valid}")
        if value == "???":
            raise ConfigError(f"{where}.{key} for {kind} {cls.name!r} has no value: set {where}.{key}=...")
        param = params[key]
        if not _type_ok(
            value, hints.get(key, param.annotation if not isinstance(param.annotation, str) else Any), param.default
        ):
            expected = hints.get(key) or type(param.default)
            expected = getattr(expected, "__name__", str(expected).replace("typing.", ""))
            raise ConfigError(
                f"{where}.{key}={value!r} has the wrong type for {kind} {cls.name!r}: expected {expected}"
            )
        kwargs[key] = value
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise ConfigError(
            f"{kind} {cls.name!r} needs {', '.join(f'{where}.{k}' for k in missing)}; valid keys: {valid}"
        )
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"cannot build {kind} {cls.name!r} from {where}={kwargs}: {err}") from err


def register_component_configs(registry, config_dirs_: list[Path]) -> list[str]:
    """Put a derived config node in Hydra's ConfigStore for every component without a YAML.

    Returns the ``group/name`` entries it added.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    added = []
    for kind, group in COMPONENT_GROUPS.items():
        for component in registry.list(kind):
            if any((d / group / f"{component.name}.yaml").is_file() for d in config_dirs_):
                continue
            store.store(group=group, name=component.name, node=default_node(component.cls), provider="labnet")
            added.append(f"{group}/{component.name}")
    return added


def plugin_config_dirs(manager=None) -> list[Path]:
    """Config folders shipped by the loaded plugins (``labnet_config_dirs`` hook)."""
    from labnet.plugins import get_plugin_manager

    folders = []
    for result in (manager or get_plugin_manager()).hook.labnet_config_dirs():
        folders.extend(Path(f) for f in result or ())
    return folders


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"optimizer.lr": 0.1, ...}`` for a (resolved) nested config, lists kept as values; no ``hydra`` key,
    and no ``model`` key of :data:`MLP_ONLY_KEYS` when ``model.layers`` is given (the run does not use them)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}
    unused = MLP_ONLY_KEYS if prefix == "model." and cfg.get("layers") else ()
    for key, value in cfg.items():
        if (not prefix and key == "hydra") or key in unused:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat
