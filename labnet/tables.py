"""Plain-text tables, the one way labnet's commands print them."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]], notes: dict[int, str] | None = None) -> str:
    """Left-aligned columns under a dashed header line; ``notes[i]`` is printed, indented, under row ``i``."""
    cells = [tuple(str(h) for h in headers)] + [tuple(str(v) for v in row) for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(cells[0], widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for i, row in enumerate(cells[1:]):
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        if notes and notes.get(i):
            lines.append(f"    {notes[i]}")
    return "\n".join(lines)
