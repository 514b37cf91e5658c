"""The plugin's tests keep labnet's disk cache of decoded MNIST arrays in a temporary folder, not ~/.cache."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def labnet_cache_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("labnet-cache")
        patch.setenv("LABNET_CACHE_DIR", str(path))
        yield path
