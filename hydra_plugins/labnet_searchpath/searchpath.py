"""Hydra plugins that put labnet's experiments and plugin-shipped configs on the search path.

``experiments/`` (top level in a checkout, inside the package in a wheel) holds one
YAML per experiment and is served as the ``experiment`` group, so ``+experiment=NAME``
works wherever labnet is installed. Every folder a labnet plugin returns from
``labnet_config_dirs()`` is appended as an ordinary config folder. And ``hydra/launcher=joblib`` becomes
labnet's joblib launcher (``labnet_joblib_launcher``), whose killed worker fails only its own job, and
``hydra/launcher=basic`` (the default) labnet's basic launcher, which composes each job once.
"""

from __future__ import annotations

from pathlib import Path

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.search_path_plugin import SearchPathPlugin

GROUP = "experiment"


class ExperimentsConfigSource(FileConfigSource):
    """Serves a flat folder of YAML files as the ``experiment`` config group."""

    @staticmethod
    def scheme() -> str:
        return "labnet-experiments"

    def _inner(self, config_path: str) -> str | None:
        if config_path == GROUP or config_path.startswith(GROUP + "/"):
            return config_path[len(GROUP) :].lstrip("/")
        return None

    def load_config(self, config_path: str):
        return super().load_config(self._inner(config_path) or config_path)

    def is_group(self, config_path: str) -> bool:
        if config_path == "":
            return True
        inner = self._inner(config_path)
        return inner is not None and super().is_group(inner)

    def is_config(self, config_path: str) -> bool:
        inner = self._inner(config_path)
        return bool(inner) and super().is_config(inner)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        inner = self._inner(config_path)
        if inner is None or inner != "" or results_filter == ObjectType.GROUP:
            return []  # a flat folder: no nested groups
        # Hydra's own listing checks names without the group prefix, so list the folder directly
        folder = Path(self.path)
        return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


class LabnetSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from hydra_plugins.labnet_basic_launcher.basic_launcher import take_basic_name
        from hydra_plugins.labnet_joblib_launcher.joblib_launcher import take_joblib_name
        from labnet.config import config_dirs, plugin_config_dirs

        take_joblib_name()  # (see that module: why here)
        take_basic_name()

        _, experiments = config_dirs()
        search_path.append(provider="labnet", path=f"labnet-experiments://{experiments}")
        for folder in plugin_config_dirs():
            search_path.append(provider="labnet-plugin", path=f"file://{folder}")
