"""PNG plots of benchmark results: per-metric bar charts and per-cell PSNR heat maps (matplotlib, Agg).

Inputs are the ``tables`` of a results document (see :mod:`eval.tables`). Every metric with a number
in some row gets a bar chart; unavailable metrics (``"n/a (...)"`` strings) get none.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)
import numpy as np  # noqa: E402

__all__ = ["metric_bars", "cell_heatmaps", "write_plots"]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def metric_bars(table_name: str, rows: list[Mapping[str, Any]], metric: str, path: str) -> bool:
    """Horizontal bars of ``metric`` per method -> ``path`` (PNG). False (nothing written) when no row
    has a number for it."""
    pairs = [(r["method"], r[metric]) for r in rows if isinstance(r.get(metric), (int, float))]
    if not pairs:
        return False
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(pairs) + 1.2))
    ax.barh([m for m, _ in pairs], [v for _, v in pairs], color="#4c72b0")
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_title(f"{table_name}: {metric}")
    for i, (_, v) in enumerate(pairs):
        ax.text(v, i, f" {v:.3f}", va="center", fontsize=8)
    low, high = ax.get_xlim()
    ax.set_xlim(low, high + 0.15 * (high - low))  # room for the value labels
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def cell_heatmaps(table_name: str, maps: Mapping[str, list[list[Any]]], path: str) -> bool:
    """One heat map per method of the mean PSNR per cell (rows = views, columns = times; blank =
    not scored) -> ``path`` (PNG). False when there is no map."""
    if not maps:
        return False
    n = len(maps)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    values = [np.array([[np.nan if x is None else x for x in r] for r in m], dtype=float) for m in maps.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if any(np.isfinite(v).any() for v in values) else np.zeros(1)
    for ax, (method, grid) in zip(axes[0], zip(maps, values)):
        im = ax.imshow(grid, cmap="viridis", vmin=float(finite.min()), vmax=float(finite.max()))
        ax.set_title(method, fontsize=8)
        ax.set_xlabel("time")
        ax.set_ylabel("view")
        for (v, t), x in np.ndenumerate(grid):
            if np.isfinite(x):
                ax.text(t, v, f"{x:.1f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(im, ax=axes[0].tolist(), label="PSNR (dB)")
    fig.suptitle(f"{table_name}: PSNR per cell")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_plots(tables: Mapping[str, Mapping[str, Any]], out_dir: str) -> list[str]:
    """All plots of a results document's ``tables`` into ``out_dir``; returns the written paths."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, table in tables.items():
        metrics = [k for row in table["rows"] for k, v in row.items() if isinstance(v, float)]
        for metric in dict.fromkeys(metrics):
            path = os.path.join(out_dir, f"{_slug(name)}_{_slug(metric)}.png")
            if metric_bars(name, table["rows"], metric, path):
                written.append(path)
        path = os.path.join(out_dir, f"{_slug(name)}_cell_psnr.png")
        if cell_heatmaps(name, table.get("cell_psnr", {}), path):
            written.append(path)
    return written
