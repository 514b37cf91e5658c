"""Stacked optimizers: each member's optimizer updating its own rows of (k, size) parameter segments.

Members with the same optimizer class in consecutive stack positions form one *run*, stepped by one copy of
the single optimizer whose float hyperparameters (lr, betas, weight decay, ...) are (m, 1) arrays broadcast over
the member axis (those the run's members share stay floats): the update rule stays the single class's
``update`` (one home). That needs the class to declare ``stackable = True`` (its arithmetic broadcasts); see
:func:`stackable`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from labnet.nn.optimizers import Optimizer


def stackable(cls: type[Optimizer]) -> bool:
    """The class that defines ``update`` declares ``stackable = True`` itself (a subclass that overrides the
    update of a stackable class does not inherit the claim)."""
    owner = next((c for c in cls.__mro__ if "update" in c.__dict__), None)
    return owner is not None and bool(owner.__dict__.get("stackable", False))


def hyperparameter_names(optimizer: Optimizer) -> list[str]:
    """The optimizer's float settings (those its ``repr`` shows): lr, weight_decay, momentum, betas, ..."""
    return [k for k, v in vars(optimizer).items() if isinstance(v, float)]


class StackedOptimizer:
    """Steps the members' optimizers over param segments (k, size) whose row j is member j's.

    :param optimizers: one built optimizer per member, in stack order.
    :param params / grads: the model's segments, (k, size) each.
    """

    def __init__(self, optimizers: Sequence[Optimizer], params: Sequence[np.ndarray], grads: Sequence[np.ndarray]):
        self.optimizers = list(optimizers)
        self.k = len(self.optimizers)
        for opt in self.optimizers:
            if not stackable(type(opt)):
                raise TypeError(f"optimizer {opt.name!r} ({type(opt).__name__}) does not declare stackable = True")
        dtype = params[0].dtype
        #: per slot name, per segment: (k, size) state arrays; a run's optimizer holds views of its rows
        self.state: dict[str, list[np.ndarray]] = {}
        self.runs: list[tuple[int, int, Optimizer, dict, dict]] = []
        start = 0
        while start < self.k:
            first = self.optimizers[start]
            end = start + 1
            while end < self.k and self._same_rule(first, self.optimizers[end]):
                end += 1
            self.runs.append(self._run(start, end, params, grads, dtype))
            start = end

    @staticmethod
    def _same_rule(a: Optimizer, b: Optimizer) -> bool:
        """One class, and the same non-float settings (those cannot differ within one run)."""
        if type(a) is not type(b):
            return False
        fixed = lambda o: {k: v for k, v in vars(o).items() if k not in ("state", "_tmp") and not isinstance(v, float)}  # noqa: E731
        return fixed(a) == fixed(b)

    def _run(self, start: int, end: int, params, grads, dtype):
        members = self.optimizers[start:end]
        opt = copy.copy(members[0])
        opt._tmp = {}
        opt.state = {slot: {} for slot in opt.slots}
        for name in hyperparameter_names(members[0]):
            values = [getattr(m, name) for m in members]
            if name == "lr" or len(set(values)) > 1:  # (lr always: parking a member sets its own to 0)
                setattr(opt, name, np.array(values, dtype).reshape(-1, 1))
        for slot in opt.slots:
            full = self.state.setdefault(slot, [np.zeros_like(p) for p in params])
            for i, arr in enumerate(full):
                opt.state[slot][f"seg{i}"] = arr[start:end]
        p = {f"seg{i}": seg[start:end] for i, seg in enumerate(params)}
        g = {f"seg{i}": seg[start:end] for i, seg in enumerate(grads)}
        return start, end, opt, p, g

    def step(self) -> None:
        """One update of every member (a parked member has lr 0 and no state: it does not move)."""
        for _, _, opt, p, g in self.runs:
            opt.step(p, g)

    @property
    def t(self) -> int:
        return self.runs[0][2].t

    def member_slots(self, j: int) -> dict[str, list[np.ndarray]]:
        """Member j's state rows per slot name and segment (views)."""
        slots = self._run_of(j)[2].slots
        return {slot: [arr[j] for arr in self.state[slot]] for slot in slots}

    def _run_of(self, j: int):
        return next(run for run in self.runs if run[0] <= j < run[1])

    def park(self, j: int) -> None:
        """Stop member j from moving: learning rate 0 and its state zeroed (for a failed or stopped member)."""
        start, _, opt, _, _ = self._run_of(j)
        opt.lr[j - start] = 0
        for arrays in self.member_slots(j).values():
            for row in arrays:
                row.fill(0)
