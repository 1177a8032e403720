"""Training data throughput: the loader alone and the share of a training step spent waiting for data.

``python -m eval.perf.loader_bench [--quick] [--out DIR]`` (also the ``loader`` section of
``python -m eval.perf``). On a small synthetic dataset written to a temporary folder (multi-view
scenes stored as PNG at ``--size``, read as ``views x frames`` grids at 32x32 by the video task's
mixture source), for ``train.loader.workers`` 0 (synchronous: each micro-batch decoded inside the
step, as before the loader existed) and 2:

- ``loader``: samples/s of :class:`fourd.data.loader.StepLoader` alone (the first micro-batches,
  worker start-up included, left out);
- ``train (raw)``: the tiny video DiT trained on the scenes (frames VAE-encoded in the step):
  median step time and the mean share of it spent in ``data.next`` (``data_wait_s / step_time_s``
  of ``metrics.jsonl``);
- ``train (pre-encoded)``: the same after ``launch/precompute.py`` (:func:`video4d.precompute.precompute`),
  training on the stored latents and contexts.

Writes ``loader.md`` and ``loader.json`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any, Optional

import torch

__all__ = ["run_benchmark", "perf_section", "main"]


def _config(scenes: str, steps: int, workers: int, encoded: Optional[str] = None):
    from fourd.train.hydra_app import compose_training

    cfg = compose_training("train_video4d", [
        "launcher=plain", "data=mixture", "data.views=2", "data.height=32", "data.width=32", "schedule.frames=[[0,5]]",
        f"train.steps={steps}", "train.micro_batch=2", "train.checkpoint_every=0", "train.export=none", "train.progress=false",
        f"train.loader.workers={workers}", "+model.text_len=32", "+text_encoder@text.encoder=tiny"])
    cfg.data.sources = {"objects_4d": {"type": "multiview", "scenes": scenes, "ratio": 1.0, "window": "chunks"}}
    cfg.data.encoded = encoded
    return cfg


def _loader_rate(cfg, batches: int) -> float:
    """Samples/s of the video task's StepLoader over ``batches`` micro-batches after 2 warm-up ones."""
    from fourd.data.loader import LoaderConfig, StepLoader
    from fourd.train.distributed import DistEnv
    from video4d.train_task import VideoTask

    task = VideoTask(cfg, DistEnv())
    loader = StepLoader(task.data(2), 2, cfg=LoaderConfig(workers=int(cfg.train.loader.workers)))
    for _ in range(2):
        loader.next(torch.device("cpu"))
    start = time.perf_counter()
    for _ in range(batches):
        loader.next(torch.device("cpu"))
    seconds = time.perf_counter() - start
    loader.close()
    return 2 * batches / seconds


def _train(cfg, run_dir: str, skip: int = 2) -> dict[str, float]:
    from fourd.train.hydra_app import run_task
    from fourd.train.observe import read_metrics
    from video4d.train_task import VideoTask

    run_task(cfg, lambda env: VideoTask(cfg, env), run_dir)
    rows = read_metrics(run_dir)[skip:]
    return {"s_per_step": statistics.median(r["step_time_s"] for r in rows),
            "data_wait_share": statistics.mean(r["data_wait_s"] / r["step_time_s"] for r in rows)}


def run_benchmark(quick: bool, work: str, size: int = 256) -> list[dict[str, Any]]:
    """Rows ``{case, workers, samples_per_s | s_per_step, data_wait_share}`` (module docstring)."""
    from fourd.data import write_synthetic_dataset
    from fourd.train.distributed import DistEnv
    from video4d.precompute import precompute

    scenes = os.path.join(work, "scenes")
    write_synthetic_dataset(scenes, 4 if quick else 8, num_views=3, num_frames=9, height=size, width=size)
    steps, batches = (8, 6) if quick else (20, 20)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one intra-op thread, as the tests and CPU ranks run
    rows = []
    try:
        for workers in (0, 2):
            rows.append({"case": f"loader ({size}x{size} PNG -> 32x32)", "workers": workers,
                         "samples_per_s": _loader_rate(_config(scenes, steps, workers), batches)})
        for workers in (0, 2):
            rows.append({"case": "train (raw)", "workers": workers, **_train(_config(scenes, steps, workers), os.path.join(work, f"raw{workers}"))})
        encoded = os.path.join(work, "encoded")
        precompute(_config(scenes, steps, 0, encoded), DistEnv())
        for workers in (0, 2):
            rows.append({"case": "train (pre-encoded)", "workers": workers,
                         **_train(_config(scenes, steps, workers, encoded), os.path.join(work, f"enc{workers}"))})
    finally:
        torch.set_num_threads(threads)
    return rows


def perf_section(quick: bool, device: str, work: str) -> tuple[str, list[dict[str, Any]]]:
    """The ``loader`` section of ``python -m eval.perf`` (CPU only: the tiny config)."""
    os.makedirs(work, exist_ok=True)
    return ("Training data: loader samples/s and the share of a step waiting for data (tiny DiT, 2 views x 5 frames at 32x32, "
            "micro-batch 2, CPU)", run_benchmark(quick, work))


def main(argv: Optional[list[str]] = None) -> str:
    """Command line (module docstring); returns the JSON path."""
    from eval.perf.cli import rows_markdown
    from fourd.weights import atomic_write_bytes

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer scenes and steps (about a minute on 2 CPU cores)")
    parser.add_argument("--out", default=os.path.join("outputs", "perf", "loader"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        title, rows = perf_section(args.quick, "cpu", work)
    table = rows_markdown(rows)
    print(f"{title}\n\n{table}")
    atomic_write_bytes(os.path.join(args.out, "loader.md"), f"# {title}\n\n{table}\n".encode())
    path = os.path.join(args.out, "loader.json")
    atomic_write_bytes(path, json.dumps({"title": title, "quick": args.quick, "rows": rows}, indent=1).encode())
    return path


if __name__ == "__main__":
    main()
