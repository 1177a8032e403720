"""Per-stage wall-clock seconds and peak memory of an inference run, with model offloading.

``with recorder.stage("sample", dit):`` moves ``dit`` to the compute device on entry and, with
``offload=True``, back to the CPU on exit, so peak accelerator memory is the largest model plus its
activations rather than the sum of all models. Each stage records:

- ``seconds``: wall-clock time (CUDA synchronised before reading the clock);
- ``cuda_max_allocated_mib``: ``torch.cuda.max_memory_allocated`` during the stage (CUDA devices);
- ``cpu_rss_peak_mib``: the process's resident-set high-water mark at the end of the stage
  (``ru_maxrss``; it never decreases, so a stage's value bounds everything before it too).
"""
from __future__ import annotations

import contextlib
import logging
import resource
import sys
import time
from typing import Iterator, Optional

import torch
from torch import nn

__all__ = ["StageRecorder"]

log = logging.getLogger(__name__)


def _rss_peak_mib() -> float:
    """Process resident-set high-water mark in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


class StageRecorder:
    """Records ``stages[name] = {"seconds", "cpu_rss_peak_mib"[, "cuda_max_allocated_mib"]}``.

    ``device``: where stages compute; ``offload``: move each stage's models back to the CPU after it.
    A name used twice accumulates seconds and keeps the larger peaks.
    """

    def __init__(self, device: torch.device | str = "cpu", offload: bool = False):
        self.device = torch.device(device)
        self.offload = offload
        self.stages: dict[str, dict[str, float]] = {}

    def place(self, *models: Optional[nn.Module]) -> None:
        """Put models where they live between stages: the CPU with offload, else the compute device."""
        for m in models:
            if m is not None:
                m.to("cpu" if self.offload else self.device)

    @contextlib.contextmanager
    def stage(self, name: str, *models: Optional[nn.Module]) -> Iterator[None]:
        """Time ``name``; ``models`` are on the compute device inside (and offloaded after, see class)."""
        cuda = self.device.type == "cuda"
        for m in models:
            if m is not None:
                m.to(self.device)
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            record = {"seconds": time.perf_counter() - start, "cpu_rss_peak_mib": _rss_peak_mib()}
            if cuda:
                record["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            if self.offload:
                for m in models:
                    if m is not None:
                        m.to("cpu")
                if cuda:
                    torch.cuda.empty_cache()
            log.info("stage %s: %.2f s", name, record["seconds"])
            old = self.stages.get(name)
            if old is not None:
                record = {k: (old[k] + v if k == "seconds" else max(old.get(k, 0.0), v)) for k, v in record.items()}
            self.stages[name] = record

    def table(self) -> str:
        """The stages as an aligned text table (one line per stage)."""
        lines = [f"{'stage':<16}{'seconds':>10}{'cpu rss MiB':>14}{'cuda MiB':>12}"]
        for name, r in self.stages.items():
            cuda = f"{r['cuda_max_allocated_mib']:.0f}" if "cuda_max_allocated_mib" in r else "-"
            lines.append(f"{name:<16}{r['seconds']:>10.2f}{r['cpu_rss_peak_mib']:>14.0f}{cuda:>12}")
        return "\n".join(lines)
