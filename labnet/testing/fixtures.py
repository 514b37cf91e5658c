"""pytest fixtures of :mod:`labnet.testing` (this module imports pytest; the others do not)."""

from __future__ import annotations

import pytest

from labnet.plugins import LabnetPluginManager
from labnet.testing.plugins import fresh_manager


@pytest.fixture
def plugin_manager() -> LabnetPluginManager:
    """A fresh plugin manager per test: labnet's built-ins, no installed entry points. Register yours with
    ``plugin_manager.register(module, name, labnet.testing.provider_of(module))``, or build one with
    :func:`labnet.testing.fresh_manager` instead."""
    return fresh_manager()
