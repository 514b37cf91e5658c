"""The contracts every component is checked against (`labnet plugins check`, :mod:`labnet.testing`).

Each component, built-in or from a plugin, is built on small random inputs and checked:

- **layer**: ``gradcheck`` (backward against central differences, float64, relative error
  below 1e-6 for the input and every parameter, in training mode), ``gradcheck (eval)`` (the same
  after ``forward(x, train=False)``, following a training forward on other inputs: backward must
  differentiate the evaluation function, not reuse the training forward's caches) and ``modes``
  (training and evaluation forward passes give ``(n, *output_shape(input_shape))`` and keep float32).
- **loss**: ``gradcheck`` of ``backward()`` with integer labels and with one-hot targets.
- **optimizer** (:mod:`labnet.testing.optimizers`): ``zero gradient`` leaves the parameters unchanged
  (``weight_decay=0``), ``state_dict`` survives an ``.npz`` round trip and gives the identical next step,
  ``state slots``: every declared slot is created and changes over 3 steps, and ``weight decay``
  (``weight_decay=0.5``) is applied exactly once: coupled (the ``weight_decay=0`` step on ``g + wd * p``)
  or decoupled (``p *= 1 - lr * wd`` before or after it); applied twice is named as such.
- **dataset** (:mod:`labnet.testing.datasets`): a tiny ``load`` that gives the ``same seed`` data twice
  and whose ``shapes``, ``dtypes`` and ``labels`` (range, number of classes) are consistent. A data set
  whose files are missing (a :class:`DataError`) is SKIPPED with the reason; ``download=False`` is passed
  when the constructor takes it.

How a component is built for checking (declared on the class, so a plugin controls it):

- ``example_args: dict`` -- constructor keyword arguments, e.g. ``example_args = {"filters": 3}``
  on a convolution layer (:class:`labnet.nn.layer.Layer` declares ``{}``; losses, optimizers and
  data sets may declare it too, e.g. small sizes for a generated data set). Needed by every
  component whose constructor has required arguments; without it such a component FAILs with a
  message saying so. Built-ins get theirs from :data:`DEFAULT_EXAMPLE_ARGS` (``affine`` needs
  ``units``, the spiral is made small), which a class's own ``example_args`` update.
- ``example_input_shape: tuple`` (layers, see :class:`labnet.nn.layer.Layer`) -- the shape of
  one input sample, ``(6,)`` by default; an image layer declares e.g. ``(2, 6, 6)``.
"""

from __future__ import annotations

import inspect
import traceback
from dataclasses import dataclass
from typing import Any

import numpy as np

from labnet.errors import DataError
from labnet.nn.gradcheck import gradcheck, gradcheck_eval, gradcheck_loss
from labnet.testing import datasets, optimizers

#: largest accepted relative error of a float64 gradient check
TOLERANCE = 1e-6
#: samples per batch in the layer and loss checks
BATCH = 4
#: classes of the scores in the loss checks
NUM_CLASSES = 3
#: input shape of a layer that declares none (the Layer base class declares the same)
DEFAULT_INPUT_SHAPE = (6,)
#: constructor arguments of built-ins that need some (or are cheaper with some), by (kind, name)
DEFAULT_EXAMPLE_ARGS: dict[tuple[str, str], dict[str, Any]] = {
    ("layer", "affine"): {"units": 4},
    ("layer", "dropout"): {"ratio": 0.5},
    ("dataset", "spiral"): {"num_per_class": 10},
}

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class CheckResult:
    """One check of one component. ``error`` is the worst measured deviation (None if not numeric)."""

    component: str
    kind: str
    provider: str
    check: str
    result: str
    error: float | None = None
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.result == FAIL


# --------------------------------------------------------------------------- building


class NeedsExampleArgs(Exception):
    """A component whose constructor needs arguments that nobody declared."""


def example_args(kind: str, cls: type) -> dict[str, Any]:
    """Constructor arguments for checking ``cls``: the built-in recipe updated with the class's ``example_args``."""
    args = dict(DEFAULT_EXAMPLE_ARGS.get((kind, getattr(cls, "name", "")), {}))
    args.update(getattr(cls, "example_args", None) or {})
    return args


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return {}
    return {k: p for k, p in params.items() if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def instantiate(kind: str, cls: type, **overrides: Any) -> Any:
    """``cls(**example_args, **overrides)``; raises NeedsExampleArgs naming the missing arguments."""
    args = {**example_args(kind, cls), **overrides}
    params = _parameters(cls)
    missing = [k for k, p in params.items() if p.default is inspect.Parameter.empty and k not in args]
    if missing:
        raise NeedsExampleArgs(
            f"the constructor needs {', '.join(missing)}: declare e.g. "
            f"`example_args = {{{', '.join(f'{k!r}: ...' for k in missing)}}}` on {cls.__qualname__}"
        )
    return cls(**args)


def _describe(err: BaseException) -> str:
    where = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    at = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return f"{type(err).__name__}: {err}{at}"


# --------------------------------------------------------------------------- layers


def check_layer(cls: type, name: str) -> list[tuple[str, str, float | None, str]]:
    """(check, result, worst error, detail) rows for a layer class."""
    shape = tuple(getattr(cls, "example_input_shape", DEFAULT_INPUT_SHAPE))
    rows = []
    x = np.random.default_rng(0).standard_normal((BATCH, *shape))
    for check, run in (("gradcheck", gradcheck), ("gradcheck (eval)", gradcheck_eval)):
        try:
            errors = run(instantiate("layer", cls), x)
        except NeedsExampleArgs as err:
            return [("build", FAIL, None, str(err))]
        except Exception as err:
            rows.append((check, FAIL, None, _describe(err)))
            continue
        worst = max(errors.values(), default=0.0)
        bad = {k: v for k, v in errors.items() if not v < TOLERANCE}
        detail = ", ".join(f"{k}: {v:.2e}" for k, v in errors.items())
        if bad:
            detail = f"relative error >= {TOLERANCE:g} for {', '.join(bad)} ({detail}): backward is wrong"
        rows.append((check, FAIL if bad else PASS, worst, detail))
    rows.append(_check_modes(cls, shape))
    return rows


def _check_modes(cls: type, shape: tuple[int, ...]) -> tuple[str, str, float | None, str]:
    try:
        layer = instantiate("layer", cls)
        rng = np.random.default_rng(0)
        expected = (BATCH, *layer.build(shape, rng, np.float32))
        x = rng.standard_normal((BATCH, *shape)).astype(np.float32)
        problems = []
        for train in (True, False):
            out = np.asarray(layer.forward(x, train))
            mode = "train" if train else "eval"
            if out.shape != expected:
                problems.append(f"{mode} output shape {out.shape}, output_shape() says {expected}")
            if out.dtype != np.float32:
                problems.append(f"{mode} output of float32 input is {out.dtype}")
        if problems:
            return ("modes", FAIL, None, "; ".join(problems))
        return ("modes", PASS, None, f"train and eval give {expected}, float32")
    except NeedsExampleArgs as err:
        return ("modes", FAIL, None, str(err))
    except Exception as err:
        return ("modes", FAIL, None, _describe(err))


# --------------------------------------------------------------------------- losses


def check_loss(cls: type, name: str) -> list[tuple[str, str, float | None, str]]:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((BATCH, NUM_CLASSES))
    labels = np.arange(BATCH) % NUM_CLASSES
    rows = []
    for check, targets in (
        ("gradcheck (labels)", labels),
        ("gradcheck (one-hot)", np.eye(NUM_CLASSES)[labels]),
    ):
        try:
            error = gradcheck_loss(instantiate("loss", cls), scores, targets)
        except NeedsExampleArgs as err:
            return [("build", FAIL, None, str(err))]
        except Exception as err:
            rows.append((check, FAIL, None, _describe(err)))
            continue
        ok = error < TOLERANCE
        rows.append((check, PASS if ok else FAIL, error, "" if ok else f"relative error >= {TOLERANCE:g}"))
    return rows


# --------------------------------------------------------------------------- optimizers


def check_optimizer(cls: type, name: str) -> list[tuple[str, str, float | None, str]]:
    takes_decay = "weight_decay" in _parameters(cls)
    no_decay = {"weight_decay": 0.0} if takes_decay else {}
    make_plain = lambda **kw: instantiate("optimizer", cls, **{**no_decay, **kw})  # noqa: E731
    checks = [
        ("zero gradient", optimizers.zero_gradient, make_plain),
        ("state_dict", optimizers.state_round_trip, make_plain),
        ("state slots", optimizers.slots_change, make_plain),
    ]
    if takes_decay:
        make = lambda **kw: instantiate("optimizer", cls, **kw)  # noqa: E731
        checks.append(("weight decay", optimizers.weight_decay_applied_once, make))
    rows = []
    for check, fn, make in checks:
        try:
            passed, error, detail = fn(make)
        except NeedsExampleArgs as err:
            return [("build", FAIL, None, str(err))]
        except Exception as err:
            rows.append((check, FAIL, None, _describe(err)))
            continue
        rows.append((check, PASS if passed else FAIL, error, detail))
    if not takes_decay:
        rows.append(("weight decay", SKIP, None, "the constructor takes no weight_decay"))
    return rows


# --------------------------------------------------------------------------- data sets


def check_dataset(cls: type, name: str) -> list[tuple[str, str, float | None, str]]:
    overrides = {"download": False} if "download" in _parameters(cls) else {}
    try:
        dataset = instantiate("dataset", cls, **overrides)
        takes_dtype = "dtype" in inspect.signature(dataset.load).parameters
        data = datasets.load(dataset, 0)
    except NeedsExampleArgs as err:
        return [("build", FAIL, None, str(err))]
    except DataError as err:
        return [("load", SKIP, None, str(err).split("\n")[0])]
    except Exception as err:
        return [("load", FAIL, None, _describe(err))]
    present = datasets.present_splits(data)
    sizes = ", ".join(f"{s} {len(split.x)}" for s, split in present.items())
    rows = [("load", PASS, None, f"{sizes}; input_shape {tuple(data.input_shape)}, {data.num_classes} classes")]
    try:
        where = datasets.difference(data, datasets.load(dataset, 0))
        same = ("same seed", PASS, None, "two loads with seed 0 are identical")
        if where is not None:
            same = ("same seed", FAIL, None, f"two loads with seed 0 differ in {where}: draw randomness from the rng")
    except Exception as err:
        same = ("same seed", FAIL, None, _describe(err))
    rows.append(same)
    dtypes = datasets.dtype_problems(data, np.float32 if takes_dtype else None)
    dtype_detail = ", ".join(f"{s}: x {sp.x.dtype}, y {sp.y.dtype}" for s, sp in present.items())
    for check, problems, detail in (
        ("shapes", datasets.shape_problems(data), ""),
        ("dtypes", dtypes, dtype_detail),
    ):
        rows.append((check, FAIL if problems else PASS, None, "; ".join(problems) or detail))
    labels = datasets.label_problems(data)
    c = data.num_classes
    rows.append(
        ("labels", FAIL if labels else PASS, None, "; ".join(labels) or f"labels in 0..{c - 1}, every class in train")
    )
    return rows


# --------------------------------------------------------------------------- running


CHECKERS = {"layer": check_layer, "loss": check_loss, "optimizer": check_optimizer, "dataset": check_dataset}


def run_checks(registry, names: list[str] | tuple[str, ...] | None = None) -> list[CheckResult]:
    """Check every component of ``registry`` (only those called one of ``names``, if given)."""
    wanted = set(names or ())
    results = []
    for component in registry.list():
        if wanted and component.name not in wanted:
            continue
        checker = CHECKERS.get(component.kind)
        if checker is None:
            continue
        with np.errstate(all="ignore"):
            rows = checker(component.cls, component.name)
        for check, result, error, detail in rows:
            results.append(
                CheckResult(component.name, component.kind, str(component.provider), check, result, error, detail)
            )
    return results


def format_table(results: list[CheckResult]) -> str:
    from labnet.tables import text_table

    headers = ("component", "kind", "provider", "check", "worst error", "result")
    rows = [
        (r.component, r.kind, r.provider, r.check, "-" if r.error is None else f"{r.error:.2e}", r.result)
        for r in results
    ]
    notes = {i: f"{r.result}: {r.detail}" for i, r in enumerate(results) if r.result != PASS and r.detail}
    return text_table(headers, rows, notes)


def summary(results: list[CheckResult]) -> dict[str, int]:
    return {r: sum(1 for x in results if x.result == r) for r in (PASS, FAIL, SKIP)}
