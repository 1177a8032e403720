"""Benchmark of the feedforward 4D reconstructor, shaped like the paper's Table S1 (a script, not a test).

    python -m eval.perf.recon_bench --quick                           # tiny model, CPU, 28x28, V in {2,4} x T in {1,4}
    python -m eval.perf.recon_bench                                   # V in {2,4,8,16} x T in {1,4,8,16} (FULL_RUN)
    python -m eval.perf.recon_bench --config vggt-1b-4d --height 294 --width 518 --dtype bf16 \
        --patch-embed-chunk 16 --head-chunk 4 --out recon_bench.json   # GPU, VGGT-1B size

For each number of input views V in ``--views`` (default 2 4 8 16) and timesteps T in
``--timesteps`` (default 1 4 8 16) it times one inference forward pass (no gradients; cameras,
depth and Gaussians) on frames ``[1, V, T, 3, H, W]`` (median of ``--repeats`` after a warm-up) and
measures peak memory: the weights plus the activation peak of one extra forward (see
:mod:`eval.perf.measure`; on CUDA that sum is the total the paper reports). A combination is skipped (and
the table says why) when a smaller one (fewer or equal views and timesteps) ran over ``--max-seconds``
or ``--mem-cap-gib``, or ran out of memory. Weights are random unless ``--weights`` is given: timing
does not depend on them. The chunking options of the model (``--patch-embed-chunk``, ``--head-chunk``)
bound the activation memory of large grids. Prints a progress line per grid and the table, and writes
the rows as JSON (``--out``, default ``outputs/perf/recon_bench_<time>.json``).
"""
from __future__ import annotations

import argparse
import itertools
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from eval.perf.cli import Progress, add_common_args, write_json
from eval.perf.measure import median_seconds, peak_bytes

__all__ = ["Row", "measure", "run_benchmark", "perf_section", "main"]

GIB = 1024**3
FULL = dict(views=(2, 4, 8, 16), timesteps=(1, 4, 8, 16), repeats=3)
QUICK = dict(views=(2, 4), timesteps=(1, 4), repeats=1)
FULL_RUN = "~11 min on this 2-core CPU, shared with other jobs"  # python -m eval.perf.recon_bench, measured


@dataclass
class Row:
    """One (views, timesteps) measurement: seconds per forward and peak memory in GiB (None if skipped)."""

    views: int
    timesteps: int
    height: int
    width: int
    time_s: Optional[float] = None
    peak_gib: Optional[float] = None
    note: str = ""


def _param_bytes(model: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))


def measure(model: torch.nn.Module, views: int, timesteps: int, height: int, width: int, repeats: int = 3,
            dtype: torch.dtype = torch.float32, seed: int = 0) -> Row:
    """Time and peak memory of ``model`` (on its device) for one ``[1, V, T, 3, H, W]`` grid; see the module docstring."""
    device = next(model.parameters()).device
    frames = torch.rand(1, views, timesteps, 3, height, width, generator=torch.Generator().manual_seed(seed)).to(device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def forward() -> None:
        with torch.no_grad(), autocast:
            model(frames)

    seconds = median_seconds(forward, device, repeats)
    peak = _param_bytes(model) + peak_bytes(forward, device)
    return Row(views, timesteps, height, width, time_s=seconds, peak_gib=peak / GIB)


def run_benchmark(config: str = "tiny", views: tuple[int, ...] = (2, 4, 8, 16), timesteps: tuple[int, ...] = (1, 4, 8, 16),
                  height: int = 28, width: int = 28, device: Optional[str] = None, dtype: str = "fp32", weights: Optional[str] = None,
                  patch_embed_chunk: Optional[int] = None, head_chunk: Optional[int] = 8, repeats: int = 3,
                  max_seconds: float = 60.0, mem_cap_gib: float = 64.0, progress: Optional[Progress] = None) -> list[Row]:
    """Measure every (V, T) combination (rows in V-major order); ``config`` is a 4D preset name
    (``tiny`` maps to ``tiny-4d``). Skips as described in the module docstring; ``progress`` gets a
    step per combination."""
    from recon.model import load_reconstructor

    preset = {"tiny": "tiny-4d", "vggt-1b": "vggt-1b-4d"}.get(config, config)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    model_cfg = {"preset": preset, "patch_embed_chunk_size": patch_embed_chunk, "head_chunk_size": head_chunk}
    model = load_reconstructor(model_cfg, weights=weights).to(dev).eval()
    rows: list[Row] = []
    failed: list[tuple[int, int, str]] = []
    for V, T in itertools.product(views, timesteps):
        blocker = next((why for v, t, why in failed if v <= V and t <= T), None)
        if blocker is not None:
            rows.append(Row(V, T, height, width, note=f"skipped: {blocker}"))
            if progress is not None:
                progress.step(f"V={V} T={T}: {rows[-1].note}")
            continue
        try:
            row = measure(model, V, T, height, width, repeats, torch_dtype)
        except torch.OutOfMemoryError:
            if dev.type == "cuda":
                torch.cuda.empty_cache()
            rows.append(Row(V, T, height, width, note="OOM"))
            failed.append((V, T, f"V={V},T={T} OOM"))
            if progress is not None:
                progress.step(f"V={V} T={T}: OOM")
            continue
        if row.time_s > max_seconds:
            failed.append((V, T, f"V={V},T={T} took {row.time_s:.1f}s > {max_seconds}s"))
        elif row.peak_gib > mem_cap_gib:
            failed.append((V, T, f"V={V},T={T} used {row.peak_gib:.1f} GiB > {mem_cap_gib} GiB"))
        rows.append(row)
        if progress is not None:
            last = rows[-1]
            progress.step(f"V={V} T={T}: " + (f"{last.time_s:.3f} s, {last.peak_gib:.3f} GiB" if last.time_s is not None else last.note))
    return rows


def format_table(rows: list[Row], views: tuple[int, ...], timesteps: tuple[int, ...]) -> str:
    """Markdown table: one row per input-view count, (time s, memory GiB) per timestep count."""
    cell = {(r.views, r.timesteps): r for r in rows}
    head = "| # Input views | " + " | ".join(f"T={t} time (s) | T={t} mem (GiB)" for t in timesteps) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(timesteps))]
    for V in views:
        parts = []
        for T in timesteps:
            r = cell[(V, T)]
            parts += [f"{r.time_s:.4f}", f"{r.peak_gib:.3f}"] if r.time_s is not None else ["OOM" if r.note == "OOM" else "skipped"] * 2
        lines.append(f"| {V} | " + " | ".join(parts) + " |")
    notes = [f"V={r.views},T={r.timesteps}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + ([""] + notes if notes else []))


def perf_section(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    """``python -m eval.perf``'s section: the tiny preset's grid (:data:`QUICK` or :data:`FULL`)."""
    grid = QUICK if quick else FULL
    progress = Progress("recon_bench", len(grid["views"]) * len(grid["timesteps"]), quick, FULL_RUN)
    rows = run_benchmark("tiny", grid["views"], grid["timesteps"], device=device, repeats=grid["repeats"], progress=progress)
    return "Reconstructor (tiny-4d, 28x28) forward time / peak memory per views x timesteps", [asdict(r) for r in rows]


def main(argv: Optional[list[str]] = None) -> list[Row]:
    """CLI entry point (see the module docstring); prints progress and the table, writes the JSON, returns the rows."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p, "recon_bench")
    p.add_argument("--config", default="tiny", help="tiny | vggt-1b-4d (or any 4D preset)")
    p.add_argument("--views", type=int, nargs="+", default=None, help="default 2 4 8 16 (--quick: 2 4)")
    p.add_argument("--timesteps", type=int, nargs="+", default=None, help="default 1 4 8 16 (--quick: 1 4)")
    p.add_argument("--height", type=int, default=None, help="pixels, multiple of 14 (default: 28 tiny, 294 otherwise)")
    p.add_argument("--width", type=int, default=None, help="pixels, multiple of 14 (default: 28 tiny, 518 otherwise)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast dtype (weights stay fp32)")
    p.add_argument("--weights", default=None, help="optional weights URL (timing does not depend on them)")
    p.add_argument("--patch-embed-chunk", type=int, default=None, help="frames per DINOv2 patch-embedding chunk")
    p.add_argument("--head-chunk", type=int, default=8, help="frames per DPT-head chunk")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per grid (default 3; --quick: 1)")
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip larger grids once a grid takes longer")
    p.add_argument("--mem-cap-gib", type=float, default=64.0, help="skip larger grids once a grid needs more")
    a = p.parse_args(argv)
    grid = QUICK if a.quick else FULL
    views, timesteps = tuple(a.views or grid["views"]), tuple(a.timesteps or grid["timesteps"])
    tiny = a.config.startswith("tiny")
    height = a.height or (28 if tiny else 294)
    width = a.width or (28 if tiny else 518)
    progress = Progress("recon_bench", len(views) * len(timesteps), a.quick, FULL_RUN if tiny else None)
    rows = run_benchmark(a.config, views, timesteps, height, width, a.device, a.dtype, a.weights, a.patch_embed_chunk, a.head_chunk,
                         a.repeats or grid["repeats"], a.max_seconds, a.mem_cap_gib, progress)
    seconds = progress.finish()
    print(f"reconstructor {a.config}, {height}x{width}, {a.dtype}, forward (no grad):")
    print(format_table(rows, views, timesteps))
    write_json("recon_bench", a.out, {"config": a.config, "height": height, "width": width, "dtype": a.dtype, "quick": a.quick,
                                      "seconds": seconds, "rows": [asdict(r) for r in rows]})
    return rows


if __name__ == "__main__":
    main()
