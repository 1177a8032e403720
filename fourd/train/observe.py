"""What a run shows and records (rank 0 only; other ranks get a silent observer).

* a tqdm progress bar with loss, LR, samples/s and tokens/s;
* ``metrics.jsonl`` in the run dir: one JSON line per optimizer step (the exact numbers, for
  comparisons and plots);
* TensorBoard scalars under ``<run_dir>/tb``: ``train/loss``, ``train/lr``, ``train/grad_norm``,
  ``train/skipped_steps``, ``train/samples_per_s``, ``train/tokens_per_s`` (+ any task stats);
* image grids as PNG under ``<run_dir>/samples`` (and in TensorBoard).
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Mapping, Optional, Sequence, Union

import torch
from torchvision.utils import save_image
from tqdm.auto import tqdm

__all__ = ["Observer", "read_metrics", "losses_by_step", "plot_metrics"]

log = logging.getLogger(__name__)


class Observer:
    """Progress, scalars and images of one run; a no-op unless ``active`` (rank 0).

    ``total_steps``: run length in optimizer steps; ``start_step``: where a resumed run begins;
    ``log_every``: steps between log lines (the bar and the files get every step).
    """

    def __init__(self, run_dir: str, active: bool, total_steps: int, start_step: int = 0, log_every: int = 10, progress: bool = True):
        self.run_dir, self.active, self.log_every = run_dir, active, max(1, log_every)
        self._bar = None
        self._writer = None
        self._jsonl = None
        if not active:
            return
        from torch.utils.tensorboard import SummaryWriter

        os.makedirs(run_dir, exist_ok=True)
        self._writer = SummaryWriter(os.path.join(run_dir, "tb"), purge_step=start_step + 1)
        self._jsonl = open(os.path.join(run_dir, "metrics.jsonl"), "a")
        self._bar = tqdm(total=total_steps, initial=start_step, disable=not progress, dynamic_ncols=True, desc="train")

    def step(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record the metrics of optimizer step ``step`` (1-based count of steps done).

        ``metrics`` must hold ``loss``, ``lr``, ``grad_norm``, ``skipped_steps``, ``samples_per_s``
        and ``tokens_per_s``; further keys are recorded as they are.
        """
        if not self.active:
            return
        record = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps({k: (v if math.isfinite(v) else str(v)) for k, v in record.items()}) + "\n")
        self._jsonl.flush()
        for key, value in metrics.items():
            if math.isfinite(float(value)):
                self._writer.add_scalar(f"train/{key}", float(value), step)
        self._bar.set_postfix(loss=f"{metrics['loss']:.4g}", lr=f"{metrics['lr']:.3g}", sps=f"{metrics['samples_per_s']:.3g}", tps=f"{metrics['tokens_per_s']:.4g}", refresh=False)
        self._bar.update(step - self._bar.n)
        if step % self.log_every == 0:
            log.info("step %d loss %.6g lr %.4g grad_norm %.4g skipped %d samples/s %.3f tokens/s %.1f", step, metrics["loss"], metrics["lr"], metrics["grad_norm"], int(metrics["skipped_steps"]), metrics["samples_per_s"], metrics["tokens_per_s"])

    def image(self, step: int, tag: str, image: torch.Tensor) -> Optional[str]:
        """Save an image grid ``[3, H, W]`` in ``[0, 1]`` as ``samples/<tag>_<step>.png``; returns the path."""
        if not self.active:
            return None
        path = os.path.join(self.run_dir, "samples", f"{tag}_{step:08d}.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image = image.detach().float().clamp(0, 1).cpu()
        save_image(image, path)
        self._writer.add_image(f"samples/{tag}", image, step)
        return path

    def close(self) -> None:
        """Flush and close the files and the bar."""
        if not self.active:
            return
        self._bar.close()
        self._writer.close()
        self._jsonl.close()


def read_metrics(run_dir: str) -> list[dict]:
    """The per-step records of ``run_dir/metrics.jsonl`` in file order (a resumed run repeats the
    steps between its checkpoint and the crash; the later record is the resumed run's)."""
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def losses_by_step(run_dir: str) -> dict[int, float]:
    """``{step: loss}`` from ``metrics.jsonl``, the last record of each step winning."""
    return {row["step"]: row["loss"] for row in read_metrics(run_dir)}



def plot_metrics(run_dir: Union[str, Sequence[str]], out: str, keys: tuple[str, ...] = ("loss",), smooth: int = 1, log_y: bool = False,
                 title: Optional[str] = None, labels: Optional[Sequence[str]] = None) -> str:
    """Plot ``keys`` of ``run_dir/metrics.jsonl`` against the step into the PNG ``out`` (one panel per
    key; ``smooth`` > 1 adds a centred moving average over that many steps). ``run_dir`` may be a list
    of runs, overlaid in each panel and named by ``labels`` (default: the folders' names). Returns ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run_dir] if isinstance(run_dir, str) else list(run_dir)
    labels = [os.path.basename(os.path.normpath(r)) for r in runs] if labels is None else list(labels)
    if len(labels) != len(runs):
        raise ValueError(f"{len(labels)} labels for {len(runs)} runs: give one label per run directory")
    records = []
    for run in runs:
        rows = {row["step"]: row for row in read_metrics(run)}  # the last record of each step wins
        missing = [k for k in keys if not any(k in row for row in rows.values())]
        if missing:
            recorded = sorted({k for row in rows.values() for k in row})
            raise ValueError(f"{run}/metrics.jsonl has no {missing}; recorded keys: {recorded}")
        records.append(rows)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for rows, label in zip(records, labels):
            xs = [s for s in sorted(rows) if key in rows[s]]
            ys = torch.tensor([float(rows[s][key]) for s in xs])
            name = key if len(runs) == 1 else label
            line, = ax.plot(xs, ys, lw=0.6, alpha=0.4 if smooth > 1 else 1.0, label=name if smooth <= 1 or len(runs) == 1 else None)
            if smooth > 1 and len(ys) >= smooth:
                avg = torch.nn.functional.avg_pool1d(ys[None, None], smooth, 1, smooth // 2, count_include_pad=False)[0, 0][: len(xs)]
                ax.plot(xs, avg, lw=1.5, color=line.get_color(), label=f"{name} ({smooth}-step mean)")
        ax.set_xlabel("step")
        ax.set_title(key)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m fourd.train.observe RUN_DIR [RUN_DIR ...] OUT.png [--keys loss psnr] [--smooth 50] [--log-y]
    [--labels A B ...]``: the training curves of one run, or of several overlaid, as a PNG (:func:`plot_metrics`)."""
    import argparse

    p = argparse.ArgumentParser(description="Plot training runs' metrics.jsonl into a PNG (several runs: overlaid).")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR ... OUT.png", help="run directories, then the output PNG")
    p.add_argument("--keys", nargs="+", default=["loss"])
    p.add_argument("--smooth", type=int, default=1)
    p.add_argument("--log-y", action="store_true")
    p.add_argument("--title", default=None)
    p.add_argument("--labels", nargs="+", default=None, help="one legend name per run (default: the folders' names)")
    a = p.parse_args(argv)
    if len(a.paths) < 2:
        p.error("give at least one run directory and the output PNG")
    print(plot_metrics(a.paths[:-1], a.paths[-1], tuple(a.keys), a.smooth, a.log_y, a.title, a.labels))


if __name__ == "__main__":
    main()
