"""Summarise runs' throughput from their ``metrics.jsonl``: ``python -m eval.perf.train_throughput RUN_DIR ...``.

Prints a table, one row per run: steps measured (the first ``--skip`` steps are warm-up and left
out), median seconds per optimizer step, mean samples/s and tokens/s (global: all ranks together).
"""
from __future__ import annotations

import argparse
import statistics

from fourd.train.observe import read_metrics

__all__ = ["summarise", "main"]


def summarise(run_dir: str, skip: int = 2) -> dict[str, float]:
    """``{"steps", "s_per_step", "samples_per_s", "tokens_per_s"}`` over the steps after the first ``skip``."""
    rows = read_metrics(run_dir)[skip:]
    if not rows:
        raise ValueError(f"{run_dir}/metrics.jsonl has no steps after the first {skip}")
    return {
        "steps": len(rows),
        "s_per_step": statistics.median(r["step_time_s"] for r in rows),
        "samples_per_s": statistics.mean(r["samples_per_s"] for r in rows),
        "tokens_per_s": statistics.mean(r["tokens_per_s"] for r in rows),
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: run dirs, ``--skip N`` warm-up steps."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument("--skip", type=int, default=2, help="warm-up steps left out")
    args = parser.parse_args(argv)
    print("| run | steps | s/step | samples/s | tokens/s |\n|---|---|---|---|---|")
    for run_dir in args.run_dirs:
        s = summarise(run_dir, args.skip)
        print(f"| {run_dir} | {s['steps']} | {s['s_per_step']:.3f} | {s['samples_per_s']:.3f} | {s['tokens_per_s']:.1f} |")


if __name__ == "__main__":
    main()
