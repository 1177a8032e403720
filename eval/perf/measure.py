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
from typing import Any, Callable

import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

__all__ = ["sync", "median_seconds", "peak_bytes", "allocation_events", "saved_bytes", "spawn_within", "single_rank_env"]

# Kineto (torch.profiler's backend, used by peak_bytes on CPU) logs "USDT ... profiler_start/stop" at every
# profile and, on CPU-only machines, "ERROR ... gpuGetDeviceCount failed"; level 6 silences it. Kineto reads
# this once, when a process first profiles: set here, before any profile of a process that measures.
os.environ.setdefault("KINETO_LOG_LEVEL", "6")


def spawn_within(fn: Callable, args: tuple, nprocs: int, seconds: float) -> bool:
    """Run ``fn(rank, *args)`` in ``nprocs`` spawned processes (``torch.multiprocessing``): True when
    all finished within ``seconds``, False when they were killed then (a hung collective); a rank's
    exception is raised here."""
    import torch.multiprocessing as mp

    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + seconds
    while not context.join(timeout=max(1.0, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            return False
    return True


def single_rank_env() -> None:
    """A one-rank process group's environment (free local port) when no launcher set one: DeepSpeed
    needs a group even on one GPU or CPU process."""
    if "WORLD_SIZE" not in os.environ:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = str(sock.getsockname()[1])
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], None], device: torch.device, repeats: int = 3, clock: str = "wall") -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up run: wall-clock, or with
    ``clock="cpu"`` this process's CPU time (``time.process_time``; what to compare on a machine
    other processes share, with one thread)."""
    if clock not in ("wall", "cpu"):
        raise ValueError(f"unknown clock {clock!r}; use 'wall' or 'cpu'")
    now = time.perf_counter if clock == "wall" else time.process_time
    fn()
    samples = []
    for _ in range(repeats):
        sync(device)
        start = now()
        fn()
        sync(device)
        samples.append(now() - start)
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
    events = sorted((t, size) for t, _, size in allocation_events(prof))
    return max(itertools.accumulate((size for _, size in events), initial=0))


def allocation_events(prof) -> list[tuple[int, int, int]]:
    """``[(start ns, address, bytes)]`` of every allocation (bytes > 0) and free (bytes < 0) of torch's
    CPU allocator that ``prof`` (a finished ``profile(profile_memory=True)``) recorded, unsorted."""
    events, pending = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        pending.extend(event.children)
        if event.tag == _EventType.Allocation:
            events.append((event.start_time_ns, event.extra_fields.ptr, event.extra_fields.alloc_size))
    return events


def saved_bytes(fn: Callable[[], Any], exclude: set[int]) -> tuple[int, Any]:
    """Bytes of the distinct storages autograd saves for backward while ``fn()`` runs (``exclude``:
    storage data pointers to skip, e.g. the parameters'), and ``fn()``'s result."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in exclude:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(seen.values()), out
