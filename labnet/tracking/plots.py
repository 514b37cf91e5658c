"""The pictures a run and a sweep log: learning curves, confusion matrix, objective against lr."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, tight: bool = True) -> Path:
    """Save and close; every run draws two pictures at its end, so those have fixed margins (tight_layout
    and PNG compression would double what they cost)."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=100, pil_kwargs={"compress_level": 1})
    pyplot().close(fig)
    return path


def plot_curves(history: list[dict[str, float]], path: Path) -> Path:
    """Loss and accuracy per epoch, train, validation and (``trainer.eval_test``) test, side by side."""
    plt = pyplot()
    epochs = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw=dict(left=0.07, right=0.98, bottom=0.12, top=0.97))
    for ax, what in zip(axes, ("loss", "accuracy"), strict=True):
        for split in ("train", "val", "test"):
            values = [h.get(f"{split}_{what}") for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path, tight=False)


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> Path:
    plt = pyplot()
    k = matrix.shape[0]
    width, height = 1.2 + 0.5 * max(k, 6), 1 + 0.5 * max(k, 6)  # room for the title however few the classes
    margins = dict(left=0.9 / width, right=0.98, bottom=0.7 / height, top=1 - 0.35 / height)
    fig, ax = plt.subplots(figsize=(width, height), gridspec_kw=margins)
    ax.imshow(matrix, cmap="Blues")
    dark = matrix.max() / 2
    for i in range(k):
        for j in range(k):
            color = "white" if matrix[i, j] > dark else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_title(title)
    return _save(fig, path, tight=False)


def plot_objective_vs_lr(rows: list[dict[str, Any]], objective: str, path: Path) -> Path | None:
    """The book's optimizer comparison from real runs: one line per optimizer, lr on a log axis."""
    lines: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for row in rows:
        lr, value = row.get("optimizer.lr"), row.get("objective")
        if isinstance(lr, (int, float)) and isinstance(value, (int, float)) and np.isfinite(value):
            std = float(row.get("objective_std") or 0.0)
            lines[str(row.get("optimizer.name", "?"))].append((float(lr), float(value), std))
    if not lines:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in sorted(lines.items()):
        points.sort()
        xs, ys, errs = zip(*points, strict=True)
        if any(errs):  # replicates: mean with one standard deviation
            ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=name)
        else:
            ax.plot(xs, ys, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("optimizer.lr")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
