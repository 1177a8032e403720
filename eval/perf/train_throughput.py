"""Summarise runs' throughput from their ``metrics.jsonl``: ``python -m eval.perf.train_throughput RUN_DIR ...``.

Prints a table, one row per run: steps measured (the first ``--skip`` steps are warm-up and left
out), median seconds per optimizer step, mean samples/s and tokens/s (global: all ranks together).
"""
from __future__ import annotations

import argparse
import statistics

from fourd.train.observe import read_metrics

__all__ = ["summarise", "perf_section", "main"]


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


def perf_section(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    """``python -m eval.perf``'s section: a few plain-engine steps of the tiny video and reconstructor tasks
    (:func:`fourd.train.hydra_app.run_task` into ``work``), summarised by :func:`summarise`."""
    import os

    from eval.perf.cli import Progress
    from fourd.train.hydra_app import compose_training, run_task
    from recon.train_task import ReconTask
    from video4d.train_task import VideoTask

    steps = 6 if quick else 20
    common = ["launcher=plain", f"train.steps={steps}", "train.checkpoint_every=0", "train.export=none", "train.progress=false"]
    tasks = (("video4d (tiny DiT)", "train_video4d", VideoTask), ("recon (tiny-4d, dynamic)", "train_recon", ReconTask))
    progress, rows = Progress("train", len(tasks), quick), []
    for name, config, task in tasks:
        extra = ["stage=dynamic", "scene_export.enabled=false", "loss.lpips_weight=0"] if config == "train_recon" else []
        cfg = compose_training(config, common + extra)
        run_dir = os.path.join(work, config)
        run_task(cfg, lambda env, c=cfg, t=task: t(c, env), run_dir)
        rows.append({"task": name, **summarise(run_dir, skip=2)})
        progress.step(f"{name}: {rows[-1]['s_per_step']:.3f} s/step")
    return f"Training throughput ({steps} steps, first 2 left out, plain engine)", rows


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
