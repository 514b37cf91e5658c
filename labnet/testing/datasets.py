"""Data set checks: the same seed gives the same data, the splits, sample shapes, dtypes and labels agree
with ``input_shape`` and ``num_classes``. ``labnet plugins check`` and :func:`check_dataset` share them."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")


def load(dataset: Any, seed: int, dtype=np.float32):
    """``dataset.load`` with a fresh generator seeded ``seed`` (and ``dtype`` when ``load`` takes one)."""
    rng = np.random.default_rng(seed)
    if "dtype" in inspect.signature(dataset.load).parameters:
        return dataset.load(rng, dtype=dtype)
    return dataset.load(rng)


def present_splits(data) -> dict[str, Any]:
    return {s: split for s in SPLITS if (split := getattr(data, s, None)) is not None}


def shape_problems(data) -> list[str]:
    splits = present_splits(data)
    problems = []
    if "train" not in splits or len(splits["train"].x) == 0:
        problems.append("no training samples")
    for s, split in splits.items():
        x, y = split.x, split.y
        if tuple(x.shape[1:]) != tuple(data.input_shape):
            problems.append(f"{s}.x has samples of shape {x.shape[1:]}, input_shape is {tuple(data.input_shape)}")
        if len(x) != len(y):
            problems.append(f"{s}.x has {len(x)} samples, {s}.y {len(y)}")
        if y.ndim == 2 and y.shape[1] != data.num_classes:
            problems.append(f"{s}.y one-hot has {y.shape[1]} columns, num_classes is {data.num_classes}")
        if y.ndim not in (1, 2):
            problems.append(f"{s}.y has shape {y.shape}: expected labels (n,) or one-hot (n, num_classes)")
    return problems


def dtype_problems(data, asked=None) -> list[str]:
    """Inputs floating point (``asked``, when ``load`` was given a dtype), labels integers or one-hot floats."""
    problems = []
    for s, split in present_splits(data).items():
        if asked is not None and split.x.dtype != asked:
            problems.append(f"{s}.x is {split.x.dtype} although load(dtype={np.dtype(asked).name}) was asked for")
        elif not np.issubdtype(split.x.dtype, np.floating):
            problems.append(f"{s}.x is {split.x.dtype}, not floating point")
        y = split.y
        if y.ndim == 1 and not np.issubdtype(y.dtype, np.integer):
            problems.append(f"{s}.y labels are {y.dtype}, not integers")
        if y.ndim == 2 and not np.issubdtype(y.dtype, np.floating):
            problems.append(f"{s}.y one-hot rows are {y.dtype}, not floating point")
    return problems


def label_problems(data) -> list[str]:
    c = data.num_classes
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 2:
        return [f"num_classes={c!r}: expected an integer >= 2"]
    problems = []
    for s, split in present_splits(data).items():
        y = split.y
        if y.ndim == 2:
            if not (np.isin(y, (0, 1)).all() and np.all(y.sum(axis=1) == 1)):
                problems.append(f"{s}.y has rows that are not one-hot")
                continue
            labels = y.argmax(axis=1)
        elif y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
            labels = y
        else:
            continue  # reported by the dtype / shape checks
        if len(labels) and (labels.min() < 0 or labels.max() >= c):
            problems.append(f"{s}.y has labels {labels.min()}..{labels.max()} outside 0..{c - 1}")
        if s == "train" and len(np.unique(labels)) != c:
            problems.append(f"train.y uses {len(np.unique(labels))} of num_classes={c} classes")
    return problems


def difference(a, b) -> str | None:
    """Where two loads differ (splits, arrays), or None when they are identical."""
    sa, sb = present_splits(a), present_splits(b)
    if sa.keys() != sb.keys():
        return f"splits {sorted(sa)} and {sorted(sb)}"
    for s in sa:
        for part in ("x", "y"):
            u, v = getattr(sa[s], part), getattr(sb[s], part)
            if u.shape != v.shape or u.dtype != v.dtype or not np.array_equal(u, v):
                return f"{s}.{part}"
    if tuple(a.input_shape) != tuple(b.input_shape) or a.num_classes != b.num_classes:
        return "input_shape or num_classes"
    return None


def check_dataset(
    dataset: Any, seed: int = 0, sizes: dict[str, int] | None = None, seed_dependent: bool | None = True
) -> None:
    """Load ``dataset`` a few times and raise AssertionError listing every problem found:

    - the same seed gives the same data (bit for bit); with ``seed_dependent`` another seed gives other data
      (``False``: the data must not depend on the seed; ``None``: not checked);
    - ``sizes`` (e.g. ``{"train": 600, "val": 200, "test": 200}``, ``0`` for an absent split) when given;
    - samples of shape ``input_shape``, as many labels as samples, one-hot rows of ``num_classes`` columns;
    - ``load(rng, dtype=float32)`` and ``float64`` give inputs of that dtype; labels are integers in
      ``0..num_classes-1`` and the training split uses every class.
    """
    first, again = load(dataset, seed), load(dataset, seed)
    problems = []
    if (where := difference(first, again)) is not None:
        problems.append(f"the same seed gave different data ({where}): draw randomness from the rng load() gets")
    if seed_dependent is not None:
        other = difference(first, load(dataset, seed + 1))
        if seed_dependent and other is None:
            problems.append("another seed gave the same data: the shuffle / noise does not use the rng load() gets")
        if not seed_dependent and other is not None:
            problems.append(f"another seed gave different data ({other}) although seed_dependent=False")
    if sizes is not None:
        splits = present_splits(first)
        got = {s: len(splits[s].x) if s in splits else 0 for s in SPLITS}
        wrong = {s: n for s, n in sizes.items() if got.get(s) != n}
        if wrong:
            problems.append(f"split sizes {got}, expected {sizes}")
    problems += shape_problems(first) + label_problems(first)
    if "dtype" in inspect.signature(dataset.load).parameters:
        problems += dtype_problems(first, np.float32) + dtype_problems(load(dataset, seed, np.float64), np.float64)
    else:
        problems += dtype_problems(first)
    if problems:
        raise AssertionError(f"data set {getattr(dataset, 'name', type(dataset).__name__)!r}: " + "; ".join(problems))
