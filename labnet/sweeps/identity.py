"""What makes two jobs the same, and how a job finds its sweep (it may run in another process)."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from labnet.config import RUN_INVARIANT_PREFIXES

SWEEP_ID_ENV = "LABNET_SWEEP_ID"
SWEEP_DIR_ENV = "LABNET_SWEEP_DIR"
HASH_EXCLUDED_PREFIXES = RUN_INVARIANT_PREFIXES


def current_sweep_id() -> str | None:
    return os.environ.get(SWEEP_ID_ENV)


def current_sweep_dir() -> str | None:
    return os.environ.get(SWEEP_DIR_ENV)


def config_hash(flat: dict[str, Any], code_versions: dict[str, str] | None = None) -> str:
    """A stable hash of a job's resolved, flattened config (what it computes, not how it is tracked) and, when
    given, of the labnet and plugin versions that train it (an upgraded plugin makes it another job)."""
    kept: dict[str, Any] = {k: v for k, v in flat.items() if not k.startswith(HASH_EXCLUDED_PREFIXES)}
    if code_versions:
        kept["labnet.code_versions"] = code_versions
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def replicate_seed(base_seed: int, replicate: int) -> int:
    """Replicate 0 keeps the base seed; others get independent seeds derived from it."""
    if replicate == 0:
        return int(base_seed)
    import numpy as np

    return int(np.random.SeedSequence([int(base_seed), int(replicate)]).generate_state(1)[0])


def expand_replicates(argv: list[str]) -> list[str]:
    """``-m ... sweep.replicates=N`` -> add ``sweep.replicate=range(0,N)`` so Hydra runs N jobs per configuration."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    for arg in argv:
        if arg.startswith("sweep.replicates="):
            value = arg.split("=", 1)[1]
            if not value.isdigit() or int(value) < 1:
                from labnet.errors import ConfigError

                raise ConfigError(f"sweep.replicates={value!r}: must be a whole number >= 1")
            if multirun and int(value) > 1 and not any(a.startswith("sweep.replicate=") for a in argv):
                return [*argv, f"sweep.replicate=range(0,{int(value)})"]
    return argv


def version_changes(before: dict[str, str], now: dict[str, str]) -> str:
    """e.g. "labnet-demo 0.1.0 -> 0.2.0": the distributions whose versions differ."""
    names = sorted(set(before) | set(now))
    changed = [n for n in names if before.get(n) != now.get(n)]
    return ", ".join(f"{n} {before.get(n, 'none')} -> {now.get(n, 'none')}" for n in changed)


def job_hash(flat: dict[str, Any], manager) -> str:
    """A job's identity for skipping and resuming: its config and the code versions of ``manager``'s plugins."""
    from labnet.plugins import code_versions

    return config_hash(flat, code_versions(manager))
