"""What every benchmark script of :mod:`eval.perf` does the same way (issue 20): ``--quick`` and ``--out``,
a progress line per measurement, how long a full run takes (measured) said before it starts, and the
rows always written as JSON next to the printed table (``outputs/perf/<name>_<time>.json`` by default).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Optional

from fourd.weights import atomic_write_bytes

__all__ = ["add_common_args", "rows_markdown", "Progress", "write_json"]


def add_common_args(parser: argparse.ArgumentParser, name: str) -> None:
    """``--quick`` (small settings, <= 3 min on 2 CPU cores) and ``--out`` (the JSON file)."""
    parser.add_argument("--quick", action="store_true", help="small settings: <= 3 minutes on 2 CPU cores")
    parser.add_argument("--out", default=None, help=f"JSON file of the rows (default outputs/perf/{name}_<time>.json)")


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


class Progress:
    """``[name] i/n label (elapsed)`` lines, flushed; the first line says what a full run takes here."""

    def __init__(self, name: str, total: int, quick: bool, full_run: Optional[str] = None) -> None:
        self.name, self.total, self.done, self.start = name, total, 0, time.perf_counter()
        what = "quick run" if quick else "full run"
        note = f"; a full run took {full_run}" if full_run and not quick else (f" (a full run takes {full_run})" if full_run else "")
        print(f"[{name}] {what}: {total} measurements{note}", flush=True)

    def step(self, label: str) -> None:
        self.done += 1
        print(f"[{self.name}] {self.done}/{self.total} {label} ({time.perf_counter() - self.start:.0f} s)", flush=True)

    def finish(self) -> float:
        seconds = time.perf_counter() - self.start
        print(f"[{self.name}] done in {seconds:.0f} s", flush=True)
        return seconds


def write_json(name: str, path: Optional[str], doc: dict[str, Any]) -> str:
    """Write ``doc`` to ``path`` (default ``outputs/perf/<name>_<time>.json``) atomically; print and return the path."""
    path = path or os.path.join("outputs", "perf", f"{name}_{time.strftime('%Y-%m-%d_%H-%M-%S')}.json")
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_bytes(path, json.dumps(doc, indent=1, default=str).encode())
    print(f"[{name}] wrote {path}", flush=True)
    return path
