"""Shared fixtures: the data folder for every test, and a fresh plugin manager per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: ../shared/data next to the repository, as in CI (DESIGN.md, "Data files")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def labnet_data_dir():
    """``LABNET_DATA_DIR`` for the whole session (an existing setting wins), restored afterwards."""
    if "LABNET_DATA_DIR" in os.environ:
        yield Path(os.environ["LABNET_DATA_DIR"])
        return
    os.environ["LABNET_DATA_DIR"] = str(SHARED_DATA)
    try:
        yield SHARED_DATA
    finally:
        os.environ.pop("LABNET_DATA_DIR", None)


@pytest.fixture
def pm():
    """A fresh :class:`labnet.plugins.LabnetPluginManager` (built-ins plus installed entry points)."""
    from labnet.plugins import get_plugin_manager

    return get_plugin_manager()
