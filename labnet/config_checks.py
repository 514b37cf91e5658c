"""Checks of the composed config as a whole, which no component's own validation sees: top-level keys
nothing reads (``+seeed=5``), an experiment whose settings Hydra put under ``experiment.`` because the
file lacks ``# @package _global_``, and YAML that does not parse (named by file and line)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from labnet.config import config_dirs, plugin_config_dirs
from labnet.errors import ConfigError

#: the group served from the experiments folders (hydra_plugins/labnet_searchpath)
EXPERIMENT_GROUP = "experiment"
#: the first line an experiment file needs, so that its keys apply to the whole config
PACKAGE_GLOBAL = "# @package _global_"


def config_folders(hydra_runtime: Any | None = None, manager=None) -> list[tuple[str, Path]]:
    """``(schema, folder)`` of every config folder on the search path: Hydra's sources when a Hydra run is
    composing (the ``--config-dir`` folder included), else labnet's conf/ and experiments and the plugins'."""
    if hydra_runtime is not None:
        return [
            (source.schema, Path(source.path))
            for source in hydra_runtime.runtime.config_sources
            if source.schema in ("file", "labnet-experiments")
        ]
    conf, experiments = config_dirs()
    return [("file", conf), ("labnet-experiments", experiments)] + [
        ("file", folder) for folder in plugin_config_dirs(manager)
    ]


def valid_top_level_keys(folders: Iterable[tuple[str, Path]]) -> list[str]:
    """The keys of labnet's primary config (conf/config.yaml) and every config group on the search path:
    a plugin (or a ``--config-dir`` folder) declares a section of its own as a group folder."""
    primary = yaml.safe_load((config_dirs()[0] / "config.yaml").read_text()) or {}
    keys = {k for k in primary if k not in ("defaults", "hydra")}
    for schema, folder in folders:
        if schema == "file" and folder.is_dir():
            keys.update(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    keys.discard("hydra")
    keys.discard(EXPERIMENT_GROUP)  # its files apply to the whole config (# @package _global_)
    return sorted(keys)


def experiment_file(name: str, folders: Iterable[tuple[str, Path]]) -> Path | None:
    """The file ``+experiment=NAME`` loaded: the first on the search path, as Hydra finds it."""
    for schema, folder in folders:
        base = folder / EXPERIMENT_GROUP if schema == "file" else folder
        if (base / f"{name}.yaml").is_file():
            return base / f"{name}.yaml"
    return None


def check_top_level(cfg, hydra_runtime: Any | None = None, manager=None) -> None:
    """ConfigError for an experiment without ``# @package _global_`` (its settings would be ignored) and for a
    top-level key nothing reads, listing the valid keys."""
    folders = config_folders(hydra_runtime, manager)
    if EXPERIMENT_GROUP in cfg:
        choices = hydra_runtime.runtime.choices if hydra_runtime is not None else {}
        name = choices.get(EXPERIMENT_GROUP) or "?"
        path = experiment_file(name, folders)
        where = str(path) if path else f"the experiment file {name}.yaml"
        raise ConfigError(
            f"experiment {name!r} was not applied: {where} does not start with `{PACKAGE_GLOBAL}`, so Hydra put "
            f"its settings under `{EXPERIMENT_GROUP}.` where nothing reads them (the run would train the defaults). "
            f"Add `{PACKAGE_GLOBAL}` as the file's first line"
        )
    valid = valid_top_level_keys(folders)
    unknown = sorted(k for k in cfg if k not in valid and k != "hydra")
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown top-level key {key!r}{hint}; valid keys: {', '.join(valid)}. A plugin's own section is a "
            "config group folder in its labnet_config_dirs()"
        )


def yaml_error_message(err: BaseException) -> str | None:
    """For a YAML syntax error (Hydra passes PyYAML's on, perhaps wrapped): the file, line and column and
    what is wrong there; None for any other error."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, yaml.MarkedYAMLError):
            mark = err.problem_mark or err.context_mark
            where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark else "a config file"
            context = ""
            if err.context and err.context_mark is not None and err.context_mark is not mark:
                context = f" ({err.context} at line {err.context_mark.line + 1}, column {err.context_mark.column + 1})"
            return f"the YAML in {where} does not parse: {err.problem or err.context}{context}"
        if isinstance(err, yaml.YAMLError):
            return f"a config file's YAML does not parse: {err}"
        err = err.__cause__ or err.__context__
    return None
