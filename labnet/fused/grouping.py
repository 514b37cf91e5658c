"""Which sweep jobs can be trained as one stacked model: those whose configs differ only in fusible keys.

Fusible (each member keeps its own value): the optimizer (its type and every hyperparameter), the weight init,
the seed (and so the validation split, init and minibatch order), the dropout ratio and the model's weight decay,
plus the keys that never change what a run computes (labnet.config.RUN_INVARIANT_PREFIXES: tracking, threads,
resume, sweep policy, ...). Everything else (data set and its options, layers, sizes, activation, batch size,
epochs, dtype, loss, trainer options, health) must be equal within a group.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from labnet.config import RUN_INVARIANT_PREFIXES

#: keys (exact) and prefixes (ending in ".") whose values may differ between the members of one group
FUSIBLE_KEYS = ("seed", "sweep.replicate", "model.init", "model.dropout", "model.weight_decay")
FUSIBLE_PREFIXES = ("optimizer.", *RUN_INVARIANT_PREFIXES)


def fusible(key: str) -> bool:
    """True when jobs differing in ``key`` can still share one stacked model."""
    return key in FUSIBLE_KEYS or any(
        key.startswith(prefix) if prefix.endswith(".") else key == prefix for prefix in FUSIBLE_PREFIXES
    )


def _signature(flat: Mapping[str, Any]) -> str:
    """The values that must be equal within a group, as one comparable string."""
    return json.dumps({k: v for k, v in flat.items() if not fusible(k)}, sort_keys=True, default=repr)


def fusible_groups(flat_configs: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Partition job indices into groups of jobs that can be fused (``labnet.config.flatten_config`` dicts).

    Every job is in exactly one group, groups in order of their first job; a group of one fuses with nothing
    (:func:`why_alone` says why).
    """
    groups: dict[str, list[int]] = {}
    for index, flat in enumerate(flat_configs):
        groups.setdefault(_signature(flat), []).append(index)
    return list(groups.values())


def differing_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The non-fusible keys in which two flattened configs differ (a key missing on one side differs)."""
    keys = sorted(k for k in set(a) | set(b) if not fusible(k))
    missing = object()
    return [k for k in keys if a.get(k, missing) != b.get(k, missing)]


def why_alone(flat_configs: Sequence[Mapping[str, Any]], index: int) -> str:
    """Why job ``index`` fuses with no other job: the non-fusible keys in which it differs from the nearest one."""
    others = [i for i in range(len(flat_configs)) if i != index]
    if not others:
        return "it is the only job"
    me = flat_configs[index]
    nearest = min(others, key=lambda i: len(differing_keys(me, flat_configs[i])))
    keys = differing_keys(me, flat_configs[nearest])
    if not keys:
        return f"it fuses with job {nearest}"
    shown = ", ".join(f"{k}={me.get(k)!r} (job {nearest}: {flat_configs[nearest].get(k)!r})" for k in keys[:3])
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return f"it differs from the nearest job, {nearest}, in {shown}{more}: keys a fused group must share"
