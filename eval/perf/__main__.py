"""Every performance benchmark in one run: ``python -m eval.perf [--quick] [--only a,b] [--out DIR]``.

Sections (:data:`SECTIONS`: name -> the module whose ``perf_section(quick, device, work_dir)`` returns
``(title, rows)``; registering a benchmark is one line there), each a markdown table plus its rows in
the JSON:

- ``attention``: the 4D attention backends and ablation mixes (:mod:`eval.perf.attention_bench`);
- ``recon``: the reconstructor's time / memory grid over views x timesteps, Table S1's layout
  (:mod:`eval.perf.recon_bench`; the tiny preset here, VGGT-1B size in ``gpu_checks``);
- ``render``: the torch rasterizer (:mod:`eval.perf.render_bench`);
- ``vae``: VAE encode / decode versus clip length (:mod:`eval.perf.vae_bench`);
- ``train``: training throughput of the tiny video and reconstructor tasks (:mod:`eval.perf.train_throughput`);
- ``loader``: training data, loader samples/s at 0 / 2 workers and the share of a step waiting for
  data, raw and pre-encoded (:mod:`eval.perf.loader_bench`);
- ``inference``: end-to-end inference per stage (:mod:`eval.perf.inference_bench`);
- ``sp``: DeepSpeed-Ulysses sequence parallelism of the DiT at SP = 1 and 2 on CPU ranks (gloo): time
  per training / sampling step, the all-to-all share, bytes exchanged, activations per rank
  (:mod:`eval.perf.sp_bench`; its own CLI writes ``sp_bench.md`` + ``sp_bench.json``).

Writes ``perf_report.md`` and ``perf_report.json`` into ``--out`` (default ``outputs/perf/<time>``),
printing a progress line per section and measurement. ``--quick`` shrinks every section: <= 3 minutes
on 2 CPU cores in all. GPU-only checks (compiled FlexAttention, gsplat, VGGT-1B size, MFU) live in
:mod:`eval.perf.gpu_checks`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import tempfile
import time
from typing import Any, Optional

import torch

from eval.perf.cli import rows_markdown
from fourd.weights import atomic_write_bytes

__all__ = ["SECTIONS", "write_report", "main"]

SECTIONS: dict[str, str] = {  # name -> module with perf_section(quick: bool, device: str, work_dir: str) -> (title, rows)
    "attention": "eval.perf.attention_bench",
    "recon": "eval.perf.recon_bench",
    "render": "eval.perf.render_bench",
    "vae": "eval.perf.vae_bench",
    "train": "eval.perf.train_throughput",
    "loader": "eval.perf.loader_bench",
    "inference": "eval.perf.inference_bench",
    "sp": "eval.perf.sp_bench",
}


def write_report(sections: dict[str, tuple[str, list[dict], float]], out_dir: str, settings: dict[str, Any]) -> tuple[str, str]:
    """``perf_report.md`` and ``perf_report.json`` from ``{name: (title, rows, seconds)}``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    lines = ["# Performance report", "", "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()), ""]
    for name, (title, rows, seconds) in sections.items():
        lines += [f"## {name}: {title}", "", f"(section took {seconds:.1f} s)", "", rows_markdown(rows), ""]
    md, js = os.path.join(out_dir, "perf_report.md"), os.path.join(out_dir, "perf_report.json")
    atomic_write_bytes(md, "\n".join(lines).encode())
    doc = {"settings": settings, "sections": {n: {"title": t, "seconds": s, "rows": r} for n, (t, r, s) in sections.items()}}
    atomic_write_bytes(js, json.dumps(doc, indent=1, default=str).encode())
    return md, js


def main(argv: Optional[list[str]] = None) -> tuple[str, str]:
    """Command line (see the module docstring); returns the report paths."""
    parser = argparse.ArgumentParser(prog="python -m eval.perf", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small settings: <= 3 minutes on 2 CPU cores in all")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=os.path.join("outputs", "perf", time.strftime("%Y-%m-%d_%H-%M-%S")))
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    settings = {"quick": args.quick, "device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
                "cpu": platform.processor() or platform.machine()}
    if args.device.startswith("cuda"):
        settings["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    done, begin = {}, time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for i, name in enumerate(names, 1):
            print(f"[eval.perf] section {i}/{len(names)}: {name}", flush=True)
            start = time.perf_counter()
            title, rows = importlib.import_module(SECTIONS[name]).perf_section(args.quick, args.device, os.path.join(work, name))
            done[name] = (title, rows, time.perf_counter() - start)
            print(f"[eval.perf] {name}: {len(rows)} rows in {done[name][2]:.1f} s ({time.perf_counter() - begin:.0f} s in all)", flush=True)
    md, js = write_report(done, args.out, settings)
    print(f"[eval.perf] wrote {md} and {js}")
    return md, js


if __name__ == "__main__":
    main()
