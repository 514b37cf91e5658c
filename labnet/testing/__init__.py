"""Helpers for testing labnet plugins (and labnet itself); docs/plugins.md, "Testing a plugin".

- :func:`fresh_manager` -- a new plugin manager with your plugin module registered as its entry point would
  register it; the pytest fixture ``plugin_manager`` gives one with the built-ins only
  (``from labnet.testing import plugin_manager`` in your ``conftest.py``);
- :func:`gradcheck`, :func:`gradcheck_loss` -- a layer's / loss's backward against central differences;
- :func:`check_optimizer_steps` -- an optimizer against your plain per-element reference function, plus
  the check that weight decay is applied once;
- :func:`check_dataset` -- same seed same data, split sizes, sample shapes, dtypes, labels;
- :class:`HookRecorder` -- every hook call a manager makes, with its arguments;
- :func:`check_plugin` / :func:`assert_plugin_passes_checks` -- ``labnet plugins check`` on your plugin's
  components, in-process.
"""

from __future__ import annotations

from labnet.nn.gradcheck import gradcheck, gradcheck_loss
from labnet.testing.datasets import check_dataset
from labnet.testing.hooks import HookCall, HookRecorder
from labnet.testing.optimizers import check_optimizer_steps, weight_decay_applied_once
from labnet.testing.plugins import assert_plugin_passes_checks, check_plugin, fresh_manager, provider_of

__all__ = [
    "HookCall",
    "HookRecorder",
    "assert_plugin_passes_checks",
    "check_dataset",
    "check_optimizer_steps",
    "check_plugin",
    "fresh_manager",
    "gradcheck",
    "gradcheck_loss",
    "plugin_manager",
    "provider_of",
    "weight_decay_applied_once",
]


def __getattr__(name: str):
    if name == "plugin_manager":  # a pytest fixture: pytest is imported only by those who ask for it
        from labnet.testing.fixtures import plugin_manager

        return plugin_manager
    raise AttributeError(f"module 'labnet.testing' has no attribute {name!r}")
