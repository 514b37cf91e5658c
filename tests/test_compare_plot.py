"""The one objective-vs-lr plot (:mod:`labnet.compare.plot`), read back from the drawn axes: the lines' points,
the error bars of replicates, the log lr axis and the objective's direction, for `labnet compare --plot`,
``labnet.sweep(...).plot()`` and a sweep's ``objective_vs_lr.png``, which all draw it."""

from __future__ import annotations

import statistics

import pytest

pytest.importorskip("matplotlib")
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from labnet.compare.plot import draw_objective  # noqa: E402
from labnet.compare.rows import build_rows, result_record, varying_params  # noqa: E402
from labnet.figures import pyplot  # noqa: E402
from labnet.record.result import RunResult  # noqa: E402
from labnet.tracking.sweep_summary import summary_files  # noqa: E402
from labnet.tracking.sweep_table import replicate_groups, summary_rows  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: a sweep of two optimizers x two learning rates x three replicates, its objective a loss
LOSSES = {
    ("sgd", 0.01): (0.9, 1.0, 1.4),
    ("sgd", 0.1): (0.5, 0.6, 0.55),
    ("adam", 0.01): (0.3, 0.35, 0.2),
    ("adam", 0.1): (0.8, 0.7, 0.75),
}


def replicate_results() -> list[RunResult]:
    results = []
    for (name, lr), values in LOSSES.items():
        for replicate, value in enumerate(values):
            params = {"optimizer.name": name, "optimizer.lr": lr, "seed": 10 + replicate}
            params["sweep.replicate"] = replicate
            results.append(
                RunResult(
                    status="FINISHED",
                    job=len(results),
                    objective_metric="val_loss",
                    objective=value,
                    params=params,
                    run_id=f"{len(results):032x}",
                )
            )
    return results


def drawn(rows, params, **kwargs):
    fig = Figure()
    draw_objective(fig, rows, params, **kwargs)
    (ax,) = fig.axes
    return ax


def error_bars(ax) -> dict[str, tuple[list[float], list[float], list[float]]]:
    """Each line's x, mean and half error bar, as drawn (the bar's segments, not what was asked for)."""
    found = {}
    for container in ax.containers:
        data_line, _, (bars,) = container.lines
        xs, ys = (list(v) for v in data_line.get_data())
        halves = [(top[1] - bottom[1]) / 2 for bottom, top in bars.get_segments()]
        found[container.get_label()] = (xs, ys, halves)
    return found


def test_replicates_are_drawn_as_their_mean_with_one_standard_deviation_per_optimizer():
    rows, params = summary_rows([result_record(r) for r in replicate_results()])
    assert {"seed", "sweep.replicate"} <= set(params)  # replicate keys vary, yet make no lines
    ax = drawn(rows, params)
    bars = error_bars(ax)
    assert set(bars) == {"adam", "sgd"}
    for name, (xs, means, halves) in bars.items():
        assert xs == [0.01, 0.1]
        expected = [LOSSES[(name, lr)] for lr in xs]
        assert means == pytest.approx([statistics.mean(v) for v in expected])
        assert halves == pytest.approx([statistics.stdev(v) for v in expected])
    # every replicate is a point too, in its line's colour
    points = sorted(
        (float(x), float(y)) for c in ax.collections if isinstance(c, PathCollection) for x, y in c.get_offsets()
    )
    expected = sorted((lr, v) for (_, lr), values in LOSSES.items() for v in values)
    assert [v for point in points for v in point] == pytest.approx([v for point in expected for v in point])
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "optimizer.lr (log scale)"
    assert ax.get_ylabel() == "best_val_loss (lower is better)"
    assert ax.get_legend().get_title().get_text() == "optimizer.name"


def test_the_error_bars_are_the_summary_by_config_tables_mean_and_spread():
    rows, params = summary_rows([result_record(r) for r in replicate_results()])
    groups = {(g["optimizer.name"], g["optimizer.lr"]): g for g in replicate_groups(rows, params, "val_loss")}
    for name, (xs, means, halves) in error_bars(drawn(rows, params)).items():
        for x, mean, half in zip(xs, means, halves, strict=True):
            assert (mean, half) == pytest.approx((groups[(name, x)]["objective"], groups[(name, x)]["objective_std"]))


def test_runs_without_replicates_are_plain_lines_per_categorical_param_and_the_accuracy_has_no_lower_hint():
    records = [
        {
            "run_name": f"r{i}",
            "params": {"optimizer.lr": lr, "model.activation": act},
            "metrics": {"best_val_accuracy": acc},
            "tags": {},
        }
        for i, (lr, act, acc) in enumerate(
            [("0.1", "relu", 0.8), ("0.01", "relu", 0.7), ("0.1", "tanh", 0.6), ("0.01", "tanh", 0.65)]
        )
    ]
    params = varying_params(records)
    ax = drawn(build_rows(records, params), params)
    assert ax.containers == []
    lines = {line.get_label(): [list(v) for v in line.get_data()] for line in ax.lines}
    assert lines == {"relu": [[0.01, 0.1], [0.7, 0.8]], "tanh": [[0.01, 0.1], [0.65, 0.6]]}
    assert ax.get_ylabel() == "best_val_accuracy" and ax.get_xscale() == "log"


def test_a_named_x_that_no_run_has_is_an_error_not_another_axis():
    records = [
        {"run_name": f"r{b}", "params": {"trainer.batch_size": str(b)}, "metrics": {"best_val_accuracy": 0.5}}
        for b in (16, 32)
    ]
    rows = build_rows(records, ["trainer.batch_size"])
    assert drawn(rows, ["trainer.batch_size"]).get_xlabel() == "trainer.batch_size"  # compare: the numeric param
    with pytest.raises(ValueError, match="no run has a number for optimizer.lr"):
        drawn(rows, ["trainer.batch_size"], x="optimizer.lr")


def test_the_sweep_summary_draws_the_same_plot_into_objective_vs_lr_png(tmp_path, monkeypatch):
    plt = pyplot()
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figure the summary draws, to read it back
    rows, params = summary_rows([result_record(r) for r in replicate_results()])
    files = summary_files(tmp_path, rows, params, "val_loss")
    assert [f.name for f in files] == ["summary.csv", "summary_by_config.csv", "objective_vs_lr.png"]
    assert (tmp_path / "objective_vs_lr.png").read_bytes()[:8] == PNG_MAGIC
    (fig,) = kept
    assert error_bars(fig.axes[0]) == error_bars(drawn(rows, params))
    monkeypatch.undo()
    plt.close(fig)

    # a sweep whose lr does not vary has no objective-vs-lr picture (its tables are still written)
    records = [result_record(r) for r in replicate_results() if r.params["optimizer.lr"] == 0.1]
    rows, params = summary_rows(records)
    (tmp_path / "flat").mkdir()
    names = [f.name for f in summary_files(tmp_path / "flat", rows, params, "val_loss")]
    assert names == ["summary.csv", "summary_by_config.csv"]
