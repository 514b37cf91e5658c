"""labnet: a plugin-based deep-learning experiment framework in pure NumPy."""

from __future__ import annotations

from labnet.errors import ConfigError
from labnet.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = [
    "hookimpl",
    "run",
    "sweep",
    "register",
    "ConfigError",
    "Sequential",
    "Trainer",
    "get_registry",
    "get_plugin_manager",
    "gradcheck",
    "__version__",
]


def __getattr__(name: str):
    # Lazy so that `import labnet` (and `labnet --help`) stays fast for plugin modules.
    if name == "Sequential":
        from labnet.nn.model import Sequential

        return Sequential
    if name == "Trainer":
        from labnet.train.trainer import Trainer

        return Trainer
    if name in ("get_registry", "get_plugin_manager"):
        from labnet import plugins

        return getattr(plugins, name)
    if name in ("run", "sweep"):  # the Python API (the modules are labnet.runner and labnet.sweeps)
        from labnet import api

        return getattr(api, name)
    if name == "register":
        from labnet.api import register

        return register
    if name == "gradcheck":
        from labnet.nn.gradcheck import gradcheck

        return gradcheck
    raise AttributeError(f"module 'labnet' has no attribute {name!r}")
