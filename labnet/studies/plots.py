"""The comparison plot and table of each kind of study, drawn from a sweep's jobs.

Every function takes the study node (a dict), the jobs (:class:`Job`, in job order) and the
sweep folder, writes ``<study name>.png`` and ``<study name>.csv`` there and returns their paths.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from labnet.figures import pyplot
from labnet.studies.components import FUNCTIONS
from labnet.studies.jobs import Job

MARKERS = ("o", "x", "s", "D", "^", "v", "*", "P")
LINESTYLES = ("-", "--", ":", "-.")


# -- labels and tables ---------------------------------------------------------------------------


def short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def value_text(key: str, value: Any, names: dict[str, str]) -> str:
    """A config value as a legend entry: the study's ``labels`` name for it, else ``key=value``."""
    if str(value) in names:
        return names[str(value)]
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{short(key)}={value:g}"
    return f"{short(key)}={value}"


def label_of(job: Job, study: dict[str, Any], key: str = "label") -> str:
    keys = study.get(key) or []
    keys = [keys] if isinstance(keys, str) else list(keys)
    names = {str(k): str(v) for k, v in (study.get("labels") or {}).items()}
    text = ", ".join(value_text(k, job.params.get(k), names) for k in keys) or f"job {job.result.get('job')}"
    if job.status != "FINISHED":
        error = str(job.result.get("error") or "")
        text += " (diverged)" if "diverged" in error or "NaN" in error else f" ({job.status.lower()})"
    return text


def rounded(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.5g}")
    return value


def write_table(rows: list[dict[str, Any]], path: Path) -> Path:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows([{k: rounded(row.get(k)) for k in keys} for row in rows])
    return path


def save(fig, plt, path: Path, rect=None) -> Path:
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    window = max(1, int(window))
    sums = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(1, math.ceil(math.sqrt(n)))) if n > 2 else max(n, 1)
    return math.ceil(n / cols), cols


def common_row(job: Job, study: dict[str, Any]) -> dict[str, Any]:
    return {"job": job.result.get("job"), "label": label_of(job, study), "status": job.status}


# -- train_loss_curves: per-step training loss, one line per job -----------------------------------


def train_loss_curves(study: dict[str, Any], jobs: list[Job], folder: Path) -> list[Path]:
    """The book's figures 6-9 and 6-15: smoothed training loss against the iteration."""
    plt = pyplot()
    smooth, tail = int(study.get("smooth") or 20), int(study.get("tail") or 100)
    threshold = study.get("threshold")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = []
    for i, job in enumerate(jobs):
        row = common_row(job, study)
        if job.steps is not None and len(job.steps):
            steps, losses = job.steps[:, 0], job.steps[:, 1]
            curve = running_mean(losses, smooth)
            ax.plot(
                steps, curve, marker=MARKERS[i % len(MARKERS)], markevery=max(1, len(steps) // 10), label=row["label"]
            )
            row.update(steps=int(steps[-1]), first_loss=float(np.mean(losses[:smooth])))
            row["final_loss"] = float(np.nanmean(losses[-tail:]))  # mean of the last `tail` steps
            if threshold is not None:
                below = np.flatnonzero(curve <= float(threshold))
                row[f"steps_to_loss_{threshold:g}"] = int(steps[below[0]]) if len(below) else None
        row.update(
            val_accuracy=job.last("val_accuracy"), test_accuracy=(job.result.get("metrics") or {}).get("test_accuracy")
        )
        rows.append(row)
    ax.set_xlabel("iteration")
    ax.set_ylabel(f"training loss (running mean of {smooth} steps)" if smooth > 1 else "training loss")
    if study.get("ylim"):
        ax.set_ylim(*study["ylim"])
    ax.set_title(study.get("title") or study["name"])
    ax.grid(alpha=0.3)
    ax.legend()
    name = study["name"]
    return [save(fig, plt, folder / f"{name}.png"), write_table(rows, folder / f"{name}.csv")]


# -- paths: the optimizers' paths over the function's contours -------------------------------------


def surface_spec(job: Job) -> dict[str, Any]:
    for spec in job.params.get("model.layers") or []:
        if isinstance(spec, dict) and spec.get("type") == "surface":
            return spec
    return {}


def paths(study: dict[str, Any], jobs: list[Job], folder: Path) -> list[Path]:
    """The book's figure 6-8: each optimizer's path to the minimum over the contours of f."""
    plt = pyplot()
    spec = surface_spec(jobs[0]) if jobs else {}
    fn = FUNCTIONS[spec.get("f", "ellipse")]
    xlim, ylim = study.get("xlim") or fn.xlim, study.get("ylim") or fn.ylim
    gx, gy = np.meshgrid(np.linspace(*xlim, 200), np.linspace(*ylim, 200))
    z = fn.value(gx, gy)
    levels = np.unique(np.quantile(z, np.linspace(0.01, 0.85, 12)))
    nrows, ncols = grid(len(jobs), max_cols=2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    rows = []
    for ax, job in zip(axes.flat, jobs, strict=False):
        row = common_row(job, study)
        row["lr"] = job.params.get("optimizer.lr")
        ax.contour(gx, gy, z, levels=levels, colors="0.6", linewidths=0.8)
        ax.plot(*fn.minimum, "+", color="black", markersize=12)
        if job.points is not None and len(job.points):
            xs, ys = job.points[:, 1], job.points[:, 2]
            ax.plot(xs, ys, "o-", color="red", markersize=3, linewidth=1)
            values = [float(fn.value(x, y)) for x, y in zip(xs, ys, strict=True)]
            row.update(
                steps=len(xs) - 1,
                f_start=values[0],
                x_final=float(xs[-1]),
                y_final=float(ys[-1]),
                f_final=values[-1],
                distance_to_minimum=float(np.hypot(xs[-1] - fn.minimum[0], ys[-1] - fn.minimum[1])),
                path_length=float(np.sum(np.hypot(np.diff(xs), np.diff(ys)))),
            )
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        lr = row["lr"]
        ax.set_title(row["label"] + (f" (lr {lr:g})" if isinstance(lr, (int, float)) else ""))
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        rows.append(row)
    for ax in list(axes.flat)[len(jobs) :]:
        ax.set_visible(False)
    fig.suptitle(study.get("title") or f"{study['name']}: f(x, y) = {fn.formula}")
    name = study["name"]
    return [save(fig, plt, folder / f"{name}.png"), write_table(rows, folder / f"{name}.csv")]


# -- metric_curves: a metric per epoch, one panel per value of a config key ------------------------


def metric_curves(study: dict[str, Any], jobs: list[Job], folder: Path) -> list[Path]:
    """The book's figure 6-19: per panel (e.g. one init scale) one line per label (e.g. batch norm or not)."""
    plt = pyplot()
    metric, panel_key = study.get("metric") or "train_accuracy", study.get("panel")
    names = {str(k): str(v) for k, v in (study.get("labels") or {}).items()}
    panels: dict[str, list[Job]] = {}
    for job in jobs:
        value = job.params.get(panel_key) if panel_key else None
        key = f"{study['panel_name']} {value:g}" if study.get("panel_name") and isinstance(value, float) else ""
        key = key or (value_text(panel_key, value, names) if panel_key else "")
        panels.setdefault(key, []).append(job)
    nrows, ncols = grid(len(panels))
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3 * nrows + 0.4), squeeze=False, sharey=True)
    rows = []
    for ax, (panel, members) in zip(axes.flat, panels.items(), strict=False):
        for i, job in enumerate(members):
            row = common_row(job, study)
            if panel_key:
                row[panel_key] = job.params.get(panel_key)
            epochs, values = job.curve(metric)
            style = LINESTYLES[i % len(LINESTYLES)]
            ax.plot(epochs, values, style, color=f"C{i}", label=row["label"].split(" (")[0])
            if job.status != "FINISHED":
                ax.text(0.03, 0.9 - 0.08 * i, row["label"], transform=ax.transAxes, color=f"C{i}", fontsize=8)
            row[f"final_{metric}"] = job.last(metric)
            row[f"mean_{metric}"] = float(np.nanmean(values)) if len(values) else math.nan  # over epochs
            row["objective"] = job.result.get("objective")
            rows.append(row)
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if "accuracy" in metric:
            ax.set_ylim(0, 1)
    for ax in axes[:, 0]:
        ax.set_ylabel(metric)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(text, handle)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=max(1, len(legend)))
    fig.suptitle(study.get("title") or study["name"])
    name = study["name"]
    png = save(fig, plt, folder / f"{name}.png", rect=(0, 0.05, 1, 1))
    return [png, write_table(rows, folder / f"{name}.csv")]


# -- train_test_gap: training against held-out accuracy per epoch, one panel per job ---------------


def train_test_gap(study: dict[str, Any], jobs: list[Job], folder: Path) -> list[Path]:
    """The book's figures 6-20 to 6-23: the gap between training and held-out accuracy."""
    plt = pyplot()
    train_metric = study.get("train_metric") or "train_eval_accuracy"
    held_out = study.get("held_out_metric") or "val_accuracy"
    fig, axes = plt.subplots(1, max(1, len(jobs)), figsize=(4.6 * max(1, len(jobs)), 3.8), squeeze=False, sharey=True)
    rows = []
    for ax, job in zip(axes.flat, jobs, strict=False):
        row = common_row(job, study)
        metric = train_metric if any(train_metric in h for h in job.history) else "train_accuracy"
        epochs, train = job.curve(metric)
        _, val = job.curve(held_out)
        ax.plot(epochs, train, "-", label="train", markevery=10)
        ax.plot(epochs, val, "--", label="held out (val)")
        gap = train - val
        row.update(
            epochs=len(epochs),
            train_accuracy=job.last(metric),
            val_accuracy=job.last(held_out),
            gap=job.last(metric) - job.last(held_out),
            gap_last_10_epochs=float(np.nanmean(gap[-10:])) if len(gap) else math.nan,
            test_accuracy=(job.result.get("metrics") or {}).get("test_accuracy"),
        )
        ax.set_title(f"{row['label']}: gap {row['gap']:.3f}")
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        rows.append(row)
    axes[0, 0].set_ylabel("accuracy")
    fig.suptitle(study.get("title") or study["name"])
    name = study["name"]
    return [save(fig, plt, folder / f"{name}.png"), write_table(rows, folder / f"{name}.csv")]


# -- hparam_search: objective against one hyperparameter, colored by another; the best trials ------


def hparam_search(study: dict[str, Any], jobs: list[Job], folder: Path) -> list[Path]:
    """The book's figure 6-24: where the good trials are, and the learning curves of the best ones."""
    import matplotlib.colors as mcolors

    plt = pyplot()
    x_key, color_key = study.get("x") or "optimizer.lr", study.get("color") or "model.weight_decay"
    top = int(study.get("top") or 5)
    metric = next((j.result.get("objective_metric") for j in jobs if j.result.get("objective_metric")), "objective")
    lower = "loss" in metric
    done = [
        j for j in jobs if isinstance(j.result.get("objective"), (int, float)) and math.isfinite(j.result["objective"])
    ]
    ranked = sorted(done, key=lambda j: j.result["objective"], reverse=not lower)
    rows = []
    for rank, job in enumerate(ranked + [j for j in jobs if j not in done], start=1):
        rows.append(
            {
                "label": f"#{rank}" if job in done else f"job {job.result.get('job')}",
                "rank": rank if job in done else None,
                "job": job.result.get("job"),
                x_key: job.params.get(x_key),
                color_key: job.params.get(color_key),
                metric: job.result.get("objective"),
                "train_accuracy": job.last("train_accuracy"),
                "status": job.status,
            }
        )
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.6))
    cvals = np.array([float(j.params.get(color_key) or np.nan) for j in done])
    positive = cvals[np.isfinite(cvals) & (cvals > 0)]
    norm = mcolors.LogNorm(positive.min(), positive.max()) if len(positive) > 1 else None
    xs = np.array([float(j.params.get(x_key)) for j in done])
    ys = np.array([float(j.result["objective"]) for j in done])
    points = left.scatter(xs, ys, c=cvals, cmap="viridis", norm=norm, s=30, edgecolors="black", linewidths=0.4)
    failed = [j for j in jobs if j not in done and isinstance(j.params.get(x_key), (int, float))]
    if failed:
        left.scatter([j.params[x_key] for j in failed], [0.0] * len(failed), marker="x", color="red", label="failed")
    best = ranked[:top]
    if best:
        left.scatter(
            [j.params[x_key] for j in best],
            [j.result["objective"] for j in best],
            s=110,
            facecolors="none",
            edgecolors="red",
            label=f"best {len(best)}",
        )
        left.annotate(
            "#1", (best[0].params[x_key], best[0].result["objective"]), textcoords="offset points", xytext=(-18, 4)
        )
    if failed or best:
        left.legend(loc="upper left")
    fig.colorbar(points, ax=left, label=color_key)
    left.set_xscale("log")
    left.set_xlabel(x_key)
    left.set_ylabel(metric)
    left.set_title(f"{len(jobs)} trials")
    left.grid(alpha=0.3)
    for rank, job in enumerate(ranked[:top], start=1):
        epochs, val = job.curve("val_accuracy")
        line = right.plot(
            epochs,
            val,
            "-",
            label=f"#{rank} {metric} {job.result['objective']:.3f}  "
            f"{short(x_key)} {job.params[x_key]:.2e}  {short(color_key)} {job.params.get(color_key):.1e}",
        )
        right.plot(*job.curve("train_accuracy"), "--", color=line[0].get_color(), linewidth=0.8)
    right.set_xlabel("epoch")
    right.set_ylabel("val_accuracy (solid), train_accuracy (dashed)")
    right.set_ylim(0, 1)
    right.set_title(f"best {min(top, len(ranked))} trials")
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="upper left")
    fig.suptitle(study.get("title") or study["name"])
    name = study["name"]
    return [save(fig, plt, folder / f"{name}.png"), write_table(rows, folder / f"{name}.csv")]


#: plot kinds a study can name (``study.plot``), and what each needs recorded in the jobs
PLOTS = {
    "train_loss_curves": train_loss_curves,
    "paths": paths,
    "metric_curves": metric_curves,
    "train_test_gap": train_test_gap,
    "hparam_search": hparam_search,
}
