"""Benchmark: VAE encode/decode time and peak memory versus the number of frames.

Usage: ``python -m eval.perf.vae_bench [--quick] --config tiny --size 64x64 --frames 5 9 17 33 [--device cuda]``.
Each row runs in a fresh process, so the CPU peak (max RSS) is per row; on CUDA the peak is
``torch.cuda.max_memory_allocated``. With the streaming cache the peak should stay flat in T
(latents and decoded frames themselves aside). Prints a progress line per row and the table, writes
the rows as JSON (``--out``, default ``outputs/perf/vae_bench_<time>.json``). ``--quick``: 5 and 9 frames.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
from typing import Optional

from eval.perf.cli import Progress, add_common_args, write_json

__all__ = ["run_benchmark", "perf_section", "main"]

FULL_FRAMES, QUICK_FRAMES = (5, 9, 17, 33), (5, 9)
FULL_RUN = "~3 min on this 2-core CPU, shared with other jobs"  # python -m eval.perf.vae_bench, measured


def _measure(config: str, frames: int, height: int, width: int, views: int, device: str, dtype: str) -> dict:
    """Encode then decode random frames ``[1, views, frames, 3, height, width]``; seconds and MB."""
    import torch

    from video4d.vae import load_vae

    torch.manual_seed(0)
    vae = load_vae(config, device=device, dtype=getattr(torch, dtype))
    x = torch.rand(1, views, frames, 3, height, width, device=device)
    row = {}
    with torch.no_grad():
        for name, run in (("encode", lambda: vae.encode(x)), ("decode", lambda: vae.decode(z))):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            out = run()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
                row[f"{name}_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
            row[f"{name}_s"] = time.perf_counter() - start
            if name == "encode":
                z = out
    row["latent_frames"] = z.shape[2]
    if not device.startswith("cuda"):
        row["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def run_benchmark(config: str = "tiny", frames=FULL_FRAMES, height: int = 64, width: int = 64, views: int = 1,
                  device: str = "cpu", dtype: str = "float32", progress: Optional[Progress] = None) -> list[dict]:
    """One row per frame count (each measured in a fresh process): ``{"frames", "latent_frames",
    "encode_s", "decode_s", peak memory}`` (see :func:`_measure`); ``progress`` gets a step per row."""
    ctx = mp.get_context("spawn")
    rows = []
    for f in frames:
        with ctx.Pool(1) as pool:
            rows.append({"frames": f, **pool.apply(_measure, (config, f, height, width, views, device, dtype))})
        if progress is not None:
            progress.step(f"{f} frames: encode {rows[-1]['encode_s']:.2f} s, decode {rows[-1]['decode_s']:.2f} s")
    return rows


def perf_section(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    """``python -m eval.perf``'s section: the tiny VAE at 64 x 64 (:data:`QUICK_FRAMES` or :data:`FULL_FRAMES`)."""
    frames = QUICK_FRAMES if quick else FULL_FRAMES
    rows = run_benchmark("tiny", frames, 64, 64, 1, device, progress=Progress("vae_bench", len(frames), quick, FULL_RUN))
    return "VAE (tiny, 64x64) encode / decode", rows


def main(argv: list[str] | None = None) -> list[dict]:
    """Print one table row (time, peak memory) per requested frame count; write the JSON; return the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, "vae_bench")
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--size", default="64x64", help="HxW in pixels")
    parser.add_argument("--frames", type=int, nargs="+", default=None, help="default 5 9 17 33 (--quick: 5 9)")
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    height, width = (int(s) for s in args.size.split("x"))
    frames = args.frames or list(QUICK_FRAMES if args.quick else FULL_FRAMES)
    progress = Progress("vae_bench", len(frames), args.quick, FULL_RUN if args.config == "tiny" else None)
    rows = run_benchmark(args.config, frames, height, width, args.views, args.device, args.dtype, progress)
    seconds = progress.finish()
    print(f"config={args.config} size={height}x{width} views={args.views} device={args.device} dtype={args.dtype}")
    print(f"{'T':>5} {'T_lat':>6} {'enc s':>8} {'dec s':>8} {'peak MB (enc/dec or max RSS)':>30}")
    for row in rows:
        peak = f"{row['encode_peak_mb']:.0f}/{row['decode_peak_mb']:.0f}" if "encode_peak_mb" in row else f"{row['max_rss_mb']:.0f}"
        print(f"{row['frames']:>5} {row['latent_frames']:>6} {row['encode_s']:>8.2f} {row['decode_s']:>8.2f} {peak:>30}")
    write_json("vae_bench", args.out, {"config": args.config, "height": height, "width": width, "views": args.views, "device": args.device,
                                      "dtype": args.dtype, "quick": args.quick, "seconds": seconds, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
