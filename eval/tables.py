"""Markdown tables of benchmark results (one per table of a results document, and combined over runs).

A results document (``results.json``, written by :mod:`eval.runner`) is ``{"benchmark", "label",
"overrides", "settings_line", "tables": {name: {"rows": [{"method", "psnr", "ssim", "lpips", "images", ...}],
"notes": {label: text}, "cell_psnr": {method: [[V x T]]}}}}``; ``notes`` (e.g. which copy baseline was the
better one over the benchmark) print as lines under their table. Numbers print with fixed decimals; strings (``"n/a (no
vgg16-397923af.pth)"``) print as they are.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

__all__ = ["COLUMNS", "format_value", "markdown_table", "results_markdown", "combined_markdown"]

COLUMNS = {
    "psnr": ("PSNR (dB) ↑", 2), "ssim": ("SSIM ↑", 4), "lpips": ("LPIPS ↓", 4),
    "flicker": ("flickering ↑", 4), "reproj_l1": ("reproj. L1 ↓", 4),
    "margin_db": ("margin over best baseline (dB) ↑", 2), "margin_ssim": ("SSIM margin ↑", 4),
    "margin_same_time_db": ("margin over copy same time (dB) ↑", 2),
    "margin_input_video_db": ("margin over copying the input video (dB) ↑", 2),
    "motion_l1_8bit": ("mean abs. change in moving masks (8-bit)", 2), "moving_share": ("moving share of image", 4),
    "FVD-F": ("FVD-F ↓", 2), "FVD-V": ("FVD-V ↓", 2), "FVD-Diag": ("FVD-Diag ↓", 2), "FV4D": ("FV4D ↓", 2),
}


def format_value(value: Any, decimals: int = 4) -> str:
    """A cell: floats with ``decimals`` decimals, None as ``-``, anything else as text."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{decimals}f}"
    return str(value)


def _columns(rows: Iterable[Mapping[str, Any]], first: tuple[str, ...]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k not in (*first, "method", "images")]
    ordered = [k for k in COLUMNS if k in keys] + [k for k in keys if k not in COLUMNS]
    return ordered + ["images"]


def markdown_table(rows: list[Mapping[str, Any]], first: tuple[str, ...] = ("method",)) -> str:
    """A markdown table of ``rows``: the ``first`` keys, then PSNR/SSIM/LPIPS, other metrics, image count."""
    cols = list(first) + _columns(rows, first)
    head = [COLUMNS.get(c, (c, 0))[0] for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(c), COLUMNS.get(c, ("", 4))[1]) for c in cols) + " |")
    return "\n".join(lines)


def results_markdown(doc: Mapping[str, Any]) -> str:
    """The markdown report of one results document: a title, the settings line, one table per table name."""
    parts = [f"# {doc['benchmark']}: {doc['label']}", "", f"Settings: {doc['settings_line']}", ""]
    for name, table in doc["tables"].items():
        parts += [f"## {name}", "", markdown_table(table["rows"]), ""]
        parts += [f"- {label}: {text}" for label, text in table.get("notes", {}).items()]
        parts += [""] if table.get("notes") else []
    return "\n".join(parts)


def combined_markdown(docs: list[Mapping[str, Any]]) -> str:
    """One table per table name over several results documents (a Hydra ``-m`` sweep): a ``run``
    column (each document's overrides that not all documents share) before the method."""
    common = set.intersection(*(set(doc.get("overrides", [])) for doc in docs)) if docs else set()
    labels = [",".join(o for o in doc.get("overrides", []) if o not in common) or doc["label"] for doc in docs]
    names: list[str] = []
    for doc in docs:
        names += [n for n in doc["tables"] if n not in names]
    parts = [f"# {docs[0]['benchmark']}: {len(docs)} runs", ""]
    for name in names:
        rows = [{"run": label, **row} for doc, label in zip(docs, labels) for row in doc["tables"].get(name, {}).get("rows", [])]
        parts += [f"## {name}", "", markdown_table(rows, first=("run", "method")), ""]
    return "\n".join(parts)
