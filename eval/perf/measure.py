"""Timing and peak-memory measurement shared by the benchmark scripts in :mod:`eval.perf`.

Peak memory is the bytes allocated by torch above the level before the call (inputs excluded,
outputs and gradients included): on CUDA ``torch.cuda.max_memory_allocated``; on CPU the maximum
running sum of the sizes of the allocation and free events (+/- bytes, in time order) that
``torch.profiler`` (``profile_memory=True``) records from torch's CPU allocator, in a separate
untimed run. (The per-op ``cpu_memory_usage`` summaries are not used: they attribute frees to the
enclosing op's start.)
"""
from __future__ import annotations

import itertools
import os
import statistics
import time
from typing import Callable

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

__all__ = ["sync", "median_seconds", "peak_bytes"]

# Kineto (torch.profiler's backend, used by peak_bytes on CPU) logs "USDT ... profiler_start/stop" at every
# profile and, on CPU-only machines, "ERROR ... gpuGetDeviceCount failed"; level 6 silences it. Kineto reads
# this once, when a process first profiles: set here, before any profile of a process that measures.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], None], device: torch.device, repeats: int = 3) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    samples = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Peak torch-allocated bytes during ``fn()`` above the level before it (see the module docstring)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events, pending = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        pending.extend(event.children)
        if event.tag == _EventType.Allocation:
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
    return max(itertools.accumulate((size for _, size in sorted(events)), initial=0))
