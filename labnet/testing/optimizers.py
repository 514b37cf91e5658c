"""Optimizer checks: steps against the author's plain per-element reference, weight decay applied once
(coupled or decoupled, never both), state that survives a checkpoint, declared slots that move.

``labnet plugins check`` runs the reference-free ones on every optimizer; a plugin's tests call
:func:`check_optimizer_steps` with a reference written from the paper, one element at a time.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from typing import Any

import numpy as np

#: (passed, worst deviation or None, detail): what each reference-free check returns
Verdict = tuple[bool, float | None, str]
#: keyword arguments -> a fresh optimizer (``weight_decay=...`` among them)
Make = Callable[..., Any]
#: shapes of the parameters the checks step
SHAPES: dict[str, tuple[int, ...]] = {"0.W": (4, 3), "0.b": (3,)}
#: steps the reference-free checks take
STEPS = 3
#: the weight decay the weight-decay check uses: large, so that applying it twice shows
CHECK_WEIGHT_DECAY = 0.5


def _problem(seed: int, steps: int, shapes=SHAPES) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    return params, [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(steps)]


def _copy(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in arrays.items()}


def _max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def clone(optimizer: Any, **overrides: Any) -> Any:
    """A fresh optimizer of the same class with the same hyperparameters (read from the attributes named like
    the constructor's parameters, as labnet's components keep them), ``overrides`` applied."""
    params = inspect.signature(type(optimizer).__init__).parameters
    kwargs = {k: getattr(optimizer, k) for k in params if k != "self" and hasattr(optimizer, k)}
    return type(optimizer)(**{**kwargs, **overrides})


# --------------------------------------------------------------------------- against a reference


def check_optimizer_steps(
    optimizer: Any,
    reference: Callable[[float, float, dict, int], float],
    steps: int = 5,
    seed: int = 0,
    shapes: dict[str, tuple[int, ...]] | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-10,
) -> float:
    """Step a fresh ``optimizer`` ``steps`` times on random float64 parameters and gradients and compare every
    element with ``reference(p, g, state, t) -> new p``, the update written for one number: ``state`` is that
    element's own dict (empty at first, keep moments in it), ``t`` the step counted from 1. Raises
    AssertionError naming the first step, parameter and element that differ; returns the largest difference.

    With ``weight_decay > 0`` the reference must apply it (the gradient it gets is the raw one), and the
    reference-free :func:`weight_decay_applied_once` runs too: it catches decay applied twice even when the
    reference was written with the same mistake.
    """
    params, grads = _problem(seed, steps, shapes or SHAPES)
    expected = _copy(params)
    states = {k: [{} for _ in range(v.size)] for k, v in params.items()}
    worst = 0.0
    for t, g in enumerate(grads, start=1):
        before = _copy(params)
        optimizer.step(params, g)
        for key, p in params.items():
            flat_e, flat_g = expected[key].reshape(-1), g[key].reshape(-1)
            for i in range(flat_e.size):
                flat_e[i] = reference(float(flat_e[i]), float(flat_g[i]), states[key][i], t)
            diff = np.abs(p - expected[key])
            worst = max(worst, float(diff.max()))
            bad = np.argwhere(diff > atol + rtol * np.abs(expected[key]))
            if len(bad):
                index = tuple(int(i) for i in bad[0])
                raise AssertionError(
                    f"step {t}, parameter {key!r}{list(index)}: {type(optimizer).__name__} gives {p[index]!r}, "
                    f"the reference {expected[key][index]!r} (p was {before[key][index]!r}, g {g[key][index]!r}; "
                    f"{len(bad)} of {p.size} elements differ)"
                )
    if getattr(optimizer, "weight_decay", 0.0):
        passed, _, detail = weight_decay_applied_once(lambda **kw: clone(optimizer, **kw), optimizer.weight_decay)
        if not passed:
            raise AssertionError(detail)
    return worst


# --------------------------------------------------------------------------- reference-free checks


def zero_gradient(make: Make) -> Verdict:
    """Steps on a zero gradient (``weight_decay=0``) leave the parameters alone."""
    optimizer = make()
    params, _ = _problem(0, 0)
    before = _copy(params)
    zeros = {k: np.zeros_like(v) for k, v in params.items()}
    for _ in range(STEPS):
        optimizer.step(params, zeros)
    change = _max_diff(params, before)
    if change == 0.0:
        return True, change, f"{STEPS} steps on a zero gradient"
    return False, change, f"{STEPS} steps on a zero gradient moved the parameters by up to {change:.3g}"


def state_round_trip(make: Make) -> Verdict:
    """``state_dict`` through an ``.npz`` (as a checkpoint stores it) gives the identical next step."""
    params, grads = _problem(1, 3)
    first = make()
    for g in grads[:2]:
        first.step(params, g)
    buffer = io.BytesIO()
    np.savez(buffer, **first.state_dict())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        state = {k: saved[k] for k in saved.files}
    second = make()
    second.load_state_dict(state)
    a, b = _copy(params), _copy(params)
    first.step(a, grads[2])
    second.step(b, grads[2])
    diff = _max_diff(a, b)
    if diff == 0.0:
        return True, diff, f"{len(state)} entries through .npz, identical next step"
    return False, diff, f"after load_state_dict the next step differs by up to {diff:.3g}"


def slots_change(make: Make) -> Verdict:
    """Every declared state slot is created and changes over the first steps (a momentum that is never
    updated, or a slot nobody uses, is a bug ``state_dict`` would silently carry)."""
    optimizer = make()
    declared = tuple(getattr(optimizer, "slots", ()))
    if not declared:
        return True, None, "no slots declared"
    params, grads = _problem(3, STEPS)
    seen: dict[str, list[dict[str, np.ndarray]]] = {slot: [] for slot in declared}
    for g in grads:
        optimizer.step(params, g)
        for slot in declared:
            seen[slot].append(_copy(optimizer.state.get(slot, {})))
    problems = []
    for slot, history in seen.items():
        if not history[-1]:
            problems.append(
                f"slot {slot!r} is declared but never created (update() never calls self.slot({slot!r}, ...))"
            )
        elif all(h.keys() == history[0].keys() and _max_diff(h, history[0]) == 0.0 for h in history[1:]):
            value = "zeros" if not any(np.any(a) for a in history[0].values()) else "its first value"
            problems.append(
                f"slot {slot!r} never changes over {STEPS} steps (stays {value}): update() does not update it"
            )
    if problems:
        return False, None, "; ".join(problems)
    return True, None, f"{', '.join(declared)} change over {STEPS} steps"


def _trajectory(make: Make, decay: float, form: str, lr: float, params, grads) -> dict[str, np.ndarray]:
    """The parameters after stepping with weight decay applied in ``form`` around a ``weight_decay=0`` step."""
    p = _copy(params)
    optimizer = make(weight_decay=decay if form == "as given" else 0.0)
    shrink = 1.0 - lr * decay
    for g in grads:
        coupled = {"coupled": 1.0, "coupled twice": 2.0}.get(form.split(" and")[0], 0.0)
        g_used = {k: g[k] + coupled * decay * p[k] for k in g} if coupled else g
        if form in ("decoupled before the update", "coupled and decoupled before the update"):
            for v in p.values():
                v *= shrink
        if form == "decoupled twice":
            for v in p.values():
                v *= shrink * shrink
        optimizer.step(p, g_used)
        if form in ("decoupled after the update", "coupled and decoupled after the update"):
            for v in p.values():
                v *= shrink
    return p


#: ways of applying weight decay once (either passes) and the mistakes labnet recognises
ONCE = ("coupled", "decoupled before the update", "decoupled after the update")
TWICE = (
    "coupled twice",
    "coupled and decoupled before the update",
    "coupled and decoupled after the update",
    "decoupled twice",
)


def weight_decay_applied_once(make: Make, decay: float = CHECK_WEIGHT_DECAY) -> Verdict:
    """``weight_decay=decay`` acts exactly once per step: as coupled L2 (the step of ``weight_decay=0`` on
    ``g + decay * p``) or decoupled (``p *= 1 - lr * decay`` before or after that step), over a few steps."""
    params, grads = _problem(2, STEPS)
    lr = float(getattr(make(weight_decay=0.0), "lr", 0.0))
    actual = _trajectory(make, decay, "as given", lr, params, grads)
    scale = 1.0 + max(float(np.max(np.abs(v))) for v in actual.values())

    def off(form: str) -> float:
        return _max_diff(actual, _trajectory(make, decay, form, lr, params, grads)) / scale

    tolerance = 1e-9
    where = f"weight_decay={decay:g} over {STEPS} steps"
    distances = {form: off(form) for form in ONCE}
    matched = [form for form, d in distances.items() if d <= tolerance]
    if matched:
        return True, min(distances.values()), f"{where}: applied once ({' = '.join(matched)})"
    if off("none") <= tolerance:
        return False, 0.0, f"{where}: the parameters move exactly as with weight_decay=0: the decay is ignored"
    twice = {form: off(form) for form in TWICE}
    doubled = [form for form, d in twice.items() if d <= tolerance]
    if doubled:
        return (
            False,
            min(twice.values()),
            (
                f"{where}: weight decay is applied twice ({doubled[0]}): the base class's step() already adds "
                "weight_decay * p to the gradient; an update() that decays p itself needs "
                "`decoupled_weight_decay = True` on the class"
            ),
        )
    closest = min(distances, key=distances.__getitem__)
    return (
        False,
        distances[closest],
        (
            f"{where}: the steps match no form of weight decay applied once (closest: {closest}, off by "
            f"{distances[closest]:.2e} relative): coupled is the step of weight_decay=0 on g + weight_decay * p, "
            "decoupled is p *= 1 - lr * weight_decay before or after it"
        ),
    )
