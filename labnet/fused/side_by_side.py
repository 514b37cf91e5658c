"""A fused group's members split into several stacks trained side by side, one thread each.

One stack trains on one core: its steps are a chain of BLAS calls and NumPy element-wise passes, and two BLAS
threads per product waited on each other on a loaded machine (measured: 12 members at 2 OpenBLAS threads took
4x the time of 1 thread at load 7 on 2 cores). Stacks in threads need no such lock-step: NumPy releases the
GIL in its products and element-wise loops, so each stack's epoch runs on a core of its own and the threads
meet once per epoch. Only an epoch's NumPy work runs in the threads; every member's hooks, journal and
checkpoint are written in the calling thread, in member order, as with one stack.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from labnet.config import check_whole
from labnet.fused.trainer import EpochCallback, FusedTrainer, RecordedCallback


def stack_count(value, members: int, workers: int = 1) -> int:
    """Stacks for a group of ``members``: ``hydra.launcher.stacks`` (null: one per core), at most one per member;
    with ``workers`` worker processes training groups at once, each group gets its share (at least one)."""
    if value is None:
        wanted = os.cpu_count() or 1
    else:
        wanted = check_whole("hydra.launcher.stacks", value, 1, " or null")
    return max(1, min(wanted // workers, members))


def split_members(order: Sequence[int], stacks: int) -> list[list[int]]:
    """``order`` dealt out to ``stacks`` stacks like cards: each gets a share of every optimizer class (the
    members come sorted by it), so the stacks' epochs take about as long."""
    return [list(order[i::stacks]) for i in range(stacks) if order[i::stacks]]


def fit_side_by_side(
    trainers: Sequence[FusedTrainer],
    on_epoch_end: Callable[[int], EpochCallback | None],
    on_epoch_recorded: Callable[[int], RecordedCallback | None],
) -> list[list[dict[str, float]]]:
    """Train ``trainers`` (stacks of one group: one config, one number of epochs) at once; each stack's
    members' final metrics. ``on_epoch_end(i)`` / ``on_epoch_recorded(i)``: stack i's callbacks."""
    if len(trainers) == 1:
        return [trainers[0].fit(on_epoch_end(0), on_epoch_recorded(0))]
    objectives = [t.begin() for t in trainers]
    epochs = trainers[0].config.epochs
    with ThreadPoolExecutor(len(trainers), thread_name_prefix="labnet-stack") as pool:
        try:
            for epoch in range(1, epochs + 1):
                busy = [i for i, t in enumerate(trainers) if t.active]
                if not busy:
                    break
                futures = [(i, pool.submit(trainers[i].compute_epoch, epoch)) for i in busy]
                done = [(i, future.result()) for i, future in futures]
                for i, trained in done:
                    trainers[i].record_epoch(epoch, trained, on_epoch_end(i), on_epoch_recorded(i))
        except BaseException:  # (Ctrl-C in this thread) the other stacks stop at their next step
            for t in trainers:
                t.stop()
            raise
    return [t.finish(objective) for t, objective in zip(trainers, objectives, strict=True)]
