"""Compared runs as text: a table, CSV, JSON or Markdown."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from labnet.compare.rows import MAIN_METRICS
from labnet.params import param_value
from labnet.train.objective import minimizes

FORMATS = ("table", "csv", "json", "markdown")


def columns(rows: list[dict[str, Any]], params: list[str], fmt: str, extra: list[str] = ()) -> list[str]:
    """The columns a format shows: test_accuracy only when some run has it, then the ``extra`` metrics; machine
    formats also keep objective_metric and error, the human ones name the objective in the header instead."""
    metrics = [m for m in MAIN_METRICS if m != "test_accuracy" or any(r.get(m) is not None for r in rows)]
    metrics += [m for m in extra if m not in metrics]
    if fmt in ("csv", "json"):
        return [
            "run_name",
            *params,
            "objective_metric",
            "objective",
            *metrics,
            "status",
            "duration_s",
            "run_id",
            "error",
        ]
    return ["run_name", *params, "objective", *metrics, "status", "duration_s", "run_id"]


def _objective_header(rows: list[dict[str, Any]]) -> str:
    names = {r.get("objective_metric") for r in rows}
    return names.pop() if len(names) == 1 else "objective"


def _cell(key: str, value: Any, params: list[str]) -> str:
    """A value as the human formats show it: params as stored, metrics with 4 decimals, durations in seconds."""
    if value is None:
        return ""
    if key in params or isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if key == "duration_s":
            return f"{value:.1f}"
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def _is_numeric(key: str, rows: list[dict[str, Any]], params: list[str]) -> bool:
    if key == "run_id":
        return False
    values = [param_value(r.get(key)) if key in params else r.get(key) for r in rows]
    present = [v for v in values if v is not None]
    return bool(present) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present)


def format_rows(rows: list[dict[str, Any]], params: list[str], fmt: str = "table", extra: list[str] = ()) -> str:
    """Rows as an aligned plain-text table, CSV, JSON (a list of objects) or a Markdown table."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; accepted: {', '.join(FORMATS)}")
    cols = columns(rows, params, fmt, extra)
    if fmt == "json":
        objects = [{c: _json_value(c, r.get(c), params) for c in cols} for r in rows]
        return json.dumps(objects, indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(cols)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
        return out.getvalue()
    headers = [_objective_header(rows) if c == "objective" else c for c in cols]
    body = [[_cell(c, r.get(c), params) for c in cols] for r in rows]
    right = [_is_numeric(c, rows, params) for c in cols]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("|" + "|".join("---:" if rt else "---" for rt in right) + "|")
        lines += ["| " + " | ".join(v.replace("|", "\\|") for v in row) + " |" for row in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(x) for x in column) for column in zip(headers, *body, strict=True)]

    def line(values: list[str]) -> str:
        cells = [v.rjust(w) if rt else v.ljust(w) for v, w, rt in zip(values, widths, right, strict=True)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(row) for row in body)]) + "\n"


def _json_value(key: str, value: Any, params: list[str]) -> Any:
    if key in params:
        return param_value(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN / inf are not JSON
    return value


def title_line(title: str, rows: list[dict[str, Any]]) -> str:
    failed = sum(1 for r in rows if r.get("status") == "FAILED")
    objective = _objective_header(rows)
    direction = ""
    if objective != "objective":
        direction = ", lower is better" if minimizes(objective) else ", higher is better"
    return (
        f"{title}: {len(rows)} run{'s' if len(rows) != 1 else ''}"
        + (f", {failed} failed" if failed else "")
        + f"; objective {objective}{direction}"
    )
