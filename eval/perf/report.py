"""Markdown tables of benchmark rows, shared by every benchmark in :mod:`eval.perf` and its report."""
from __future__ import annotations

from typing import Any

__all__ = ["rows_markdown"]


def rows_markdown(rows: list[dict[str, Any]]) -> str:
    """A markdown table of dict rows (columns in first-seen order; floats with 4 significant digits)."""
    if not rows:
        return "(no rows)"
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]

    def cell(x: Any) -> str:
        return "-" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))

    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(cell(r.get(c)) for c in cols) + " |" for r in rows])
