"""The test suite's own set-up: modules whose fixtures start a server, a Ray head or install plugins keep their tests
on one pytest-xdist worker (``xdist_group``), so those fixtures are made once a run. pytest-xdist marks such a test
by a ``@group`` suffix on its node id; with pytest 9.2 it silently stopped doing so (pytest-xdist#1386), hence the
pin in the dev extra, and this test, which fails if the grouping is lost again."""

from __future__ import annotations

import os

import pytest


@pytest.mark.xdist_group("suite-setup")
def test_an_xdist_group_keeps_its_tests_on_one_worker(request):
    if not os.environ.get("PYTEST_XDIST_WORKER") or not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist workers with --dist loadgroup (the README's command does)")
    assert request.node.nodeid.endswith("@suite-setup"), (
        f"{request.node.nodeid}: pytest-xdist's --dist loadgroup no longer groups tests (pytest-xdist#1386: pytest "
        "9.2); keep pytest below the version in the dev extra"
    )
