"""The objective against the learning rate, one line per optimizer: the one picture of it, drawn for
`labnet compare --plot`, a sweep's ``objective_vs_lr.png`` (on its parent run) and ``labnet.sweep(...).plot()``.

The x axis is ``optimizer.lr`` (log scale) when the runs have it, else the first numeric param
that varies (a caller may name it: ``x``). Lines are one per ``optimizer.name`` when that varies, else
one per value of the first other varying param (categorical ones first; replicate keys, seed and
sweep.replicate, never), else a single line. Several runs at one x of a line (replicates, a param that is
neither x nor the line) are all drawn as points; the line joins their mean, with an error bar of one
standard deviation. The y label says which way the objective improves.
"""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any

from labnet.compare.rows import REPLICATE_KEYS, mean_and_spread
from labnet.figures import pyplot
from labnet.params import param_value
from labnet.train.objective import minimizes

X_PARAM = "optimizer.lr"
LINE_PARAM = "optimizer.name"


def _number(value: Any) -> float | None:
    value = param_value(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _numeric(rows: list[dict[str, Any]], key: str) -> bool:
    present = [r.get(key) for r in rows if r.get(key) not in (None, "None")]
    return bool(present) and all(_number(v) is not None for v in present)


def choose_axes(rows: list[dict[str, Any]], params: list[str], x: str | None = None) -> tuple[str, str | None]:
    """The param on the x axis (``x`` when given: a ValueError if no run has a number there) and the param
    that makes the lines (None: one line)."""
    if x is not None:
        if not any(_number(r.get(x)) is not None for r in rows):
            raise ValueError(f"nothing to plot against: no run has a number for {x}")
    elif any(_number(r.get(X_PARAM)) is not None for r in rows):
        x = X_PARAM
    else:
        x = next((p for p in params if _numeric(rows, p)), None)
        if x is None:
            raise ValueError(f"nothing to plot against: the runs have no {X_PARAM} and no other numeric param varies")
    others = [p for p in params if p != x and p not in REPLICATE_KEYS]
    if LINE_PARAM in others:
        return x, LINE_PARAM
    categorical = [p for p in others if not _numeric(rows, p)]
    return x, (categorical or others or [None])[0]


def plot_objective(
    rows: list[dict[str, Any]], params: list[str], path: Path, title: str | None = None, x: str | None = None
) -> Path:
    """Draw the rows' objective against the learning rate (or ``x``) into ``path`` (PNG); ValueError if
    nothing to draw."""
    plt = pyplot()
    fig = plt.figure(figsize=(6.5, 4.2))
    try:
        draw_objective(fig, rows, params, title, x)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)
    return path


def draw_objective(
    fig, rows: list[dict[str, Any]], params: list[str], title: str | None = None, x: str | None = None
) -> None:
    """:func:`plot_objective` on a given figure (``labnet.sweep(...).plot()`` draws on one of its own)."""
    x_key, line_key = choose_axes(rows, params, x)
    objective = next((r["objective_metric"] for r in rows if r.get("objective_metric")), "objective")
    lines: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    skipped = 0
    for row in rows:
        at, y = _number(row.get(x_key)), row.get("objective")
        if at is None or not isinstance(y, (int, float)) or not math.isfinite(y):
            skipped += 1
            continue
        label = f"{row.get(line_key)}" if line_key else objective
        lines[label][at].append(float(y))
    if not lines:
        raise ValueError(f"no run has both a {x_key} and a finite {objective}")

    every_x = [at for points in lines.values() for at in points]
    log_x = min(every_x) > 0 and (x_key == X_PARAM or max(every_x) / min(every_x) >= 100)
    ax = fig.subplots()
    for label in sorted(lines, key=_label_order):
        points = sorted(lines[label].items())
        xs = [at for at, _ in points]
        means, spreads = zip(*(mean_and_spread(values) for _, values in points), strict=True)
        if any(len(values) > 1 for _, values in points):  # replicates: mean ± one standard deviation, and each run
            bars = ax.errorbar(xs, means, yerr=spreads, marker="o", capsize=3, label=label)
            scatter = [(at, y) for at, values in points for y in values]
            color = bars.lines[0].get_color()
            ax.scatter([at for at, _ in scatter], [y for _, y in scatter], s=12, alpha=0.5, color=color)
        else:
            ax.plot(xs, means, marker="o", label=label)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x_key + (" (log scale)" if log_x else ""))
    ax.set_ylabel(objective + (" (lower is better)" if minimizes(objective) else ""))
    heading = textwrap.fill(title, 72) if title else f"{objective} against {x_key}"
    if skipped:
        heading += f"\n{skipped} run{'s' if skipped != 1 else ''} without a {objective} not shown"
    ax.set_title(heading, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if line_key:
        ax.legend(title=line_key, fontsize=8, title_fontsize=8)
    fig.tight_layout()


def _label_order(label: str) -> tuple:
    number = _number(label)
    return (0, number, "") if number is not None else (1, 0.0, label)
