"""A run's result read from its folder becomes the same compared run's row wherever it is read: the sweep's
summary on its parent run and ``labnet.sweep(...).table`` build it with one function
(:func:`labnet.compare.rows.result_record`)."""

from __future__ import annotations

import math

from labnet.compare.rows import build_rows, result_record, sort_rows, varying_params
from labnet.record.result import RunResult


def results() -> list[RunResult]:
    return [
        RunResult(
            status="FINISHED",
            job=0,
            objective_metric="val_loss",
            objective=0.40,
            run_id="a" * 32,
            params={"optimizer.lr": 0.1, "seed": 0},
            metrics={"val_loss": 0.45, "train_loss": 0.3},
            start_time=100.0,
            end_time=112.5,
        ),
        # killed before result.json: RunResult.read builds it from the journal, its metrics the last epoch's
        RunResult(
            status="KILLED",
            job=1,
            objective_metric="val_loss",
            objective=0.25,
            params={"optimizer.lr": 0.01, "seed": 0},
            metrics={"val_loss": 0.25},
            start_time=100.0,
        ),
        RunResult(
            status="FAILED",
            job=2,
            objective_metric="val_loss",
            error="diverged",
            params={"optimizer.lr": 10.0, "seed": 0},
            start_time=100.0,
            end_time=101.0,
        ),
    ]


def test_a_result_and_its_dict_give_the_same_record():
    for result in results():
        assert result_record(result) == result_record(result.__dict__)


def test_rows_from_results_name_the_jobs_show_the_objective_and_sort_a_loss_lowest_first():
    records = [result_record(r, "run-a" if r.job == 0 else None) for r in results()]
    params = varying_params(records)
    rows = sort_rows(build_rows(records, params))
    assert params == ["optimizer.lr"]
    assert [r["run_name"] for r in rows] == ["job 1", "run-a", "job 2"]  # the killed run's 0.25 is the best loss
    assert [r["objective"] for r in rows[:2]] == [0.25, 0.40] and math.isnan(rows[2]["objective"])
    assert rows[1]["duration_s"] == 12.5 and rows[0]["duration_s"] is None
    assert rows[2]["error"] == "diverged" and rows[0]["objective_metric"] == "best_val_loss"
