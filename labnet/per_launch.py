"""What a sweep's jobs in one process compute once per launch instead of once per job.

labnet's launchers (``labnet_basic`` and ``labnet_fused``) wrap their ``launch`` in
:func:`launch_scope`; inside it :func:`once_per_launch` keeps what it made for a key and hands it out again:

- the plugin manager per ``plugins.block`` set (``run_policy.plugin_manager_for``): creating one scans every
  installed distribution's entry points (~50-75 ms here), and a sequential sweep's job asked for one twice
  (its identity for skip/resume, then its run). A manager registers the same imported modules and objects
  either way, so the jobs' hooks are the same; the fused launcher's members shared one from the start.
- MNIST-style data converted to floats (``labnet.data.mnist``): ~0.25 s per job, the same arrays for every
  job with the same validation carve, dtype and options. Kept arrays are read-only (jobs share them).

Outside a launch every call makes a fresh one, as before: a notebook's ``labnet.register``, a plugin installed
between two runs or a changed data file is seen by the next run, and no arrays outlive the run that used them.
Everything kept is dropped when the launch ends.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

T = TypeVar("T")

_kept: dict[str, OrderedDict[Hashable, object]] | None = None


@contextlib.contextmanager
def launch_scope() -> Iterator[None]:
    """Inside: :func:`once_per_launch` keeps what it makes (a nested scope shares the outer one's)."""
    global _kept
    outer = _kept
    if outer is None:
        _kept = {}
    try:
        yield
    finally:
        if outer is None:
            _kept = None


def active() -> bool:
    """Inside :func:`launch_scope`."""
    return _kept is not None


def once_per_launch(kind: str, key: Hashable, make: Callable[[], T], keep: int | None = None) -> T:
    """``make()``, or inside :func:`launch_scope` what it made for the same ``kind`` and ``key`` (at most
    ``keep`` keys per kind, the most recently used: large arrays)."""
    if _kept is None:
        return make()
    kept = _kept.setdefault(kind, OrderedDict())
    if key in kept:
        kept.move_to_end(key)
        return kept[key]  # type: ignore[return-value]
    value = kept[key] = make()
    if keep is not None:
        while len(kept) > keep:
            kept.popitem(last=False)
    return value
