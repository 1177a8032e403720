"""Peak host memory per rank of building, loading and training one step of a DiT, sharded or not.

    python -m eval.perf.sharded_memory [--preset mid] [--out DIR]

Writes a seeded weights file of ``--preset`` (``mid``: Wan-shaped, 211M parameters, 844 MB in fp32),
then runs, each in fresh processes on the CPU (fp32, self-attention trainable, checkpointing, 2 views
x 5 frames at 64 x 64):

- ``plain, 1 process``: :class:`~fourd.train.engine.PlainEngine` (torch AdamW), the model built on
  the meta device and filled tensor by tensor;
- ``ZeRO-3, 1 rank``: DeepSpeed ZeRO-3 on one rank, built under ``deepspeed.zero.Init``;
- ``ZeRO-3, 2 ranks, whole build``: the earlier flow: every rank builds and loads the whole model, the
  engine partitions it afterwards;
- ``ZeRO-3, 2 ranks, sharded build``: built partitioned, each rank reading only its own slices.

Per rank: the resident set size (``VmRSS``) after torch, DeepSpeed and the model code are imported
and the process group is up (the baseline; freed heap handed back with ``malloc_trim``), and its
peak (``VmHWM``) from there through build + load + engine + the first training step, minus the
baseline (glibc's mmap threshold fixed at 128 kB, so that freed tensors leave the RSS). DeepSpeed's
buckets are scaled to the model as a 14B run's are (``reduce_bucket_size``
and ``stage3_prefetch_bucket_size`` 1e6 elements: 0.5% of the model). Prints a markdown table
(the worst rank of each run) and writes ``sharded_memory.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from typing import Any, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS = (("plain, 1 process", "plain", 1), ("ZeRO-3, 1 rank", "sharded", 1), ("ZeRO-3, 2 ranks, whole build", "whole", 2),
        ("ZeRO-3, 2 ranks, sharded build", "sharded", 2))
DS_CONFIG = {"zero_optimization": {"stage": 3, "reduce_bucket_size": 1_000_000, "stage3_prefetch_bucket_size": 1_000_000,
                                   "contiguous_gradients": True, "overlap_comm": False}, "steps_per_print": 10**9}


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field + ":")).split()[1]) * 1024


def _reset_peak() -> None:
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(mode: str, preset: str, weights: str) -> dict[str, Any]:
    """One rank of one run (see the module docstring); returns its baseline and peaks (bytes)."""
    import deepspeed  # noqa: F401  (the baseline includes DeepSpeed)
    import deepspeed.runtime.engine  # noqa: F401
    import deepspeed.runtime.zero.stage3  # noqa: F401
    import torch

    from fourd.sharded import Placement
    from fourd.train.distributed import init_distributed
    from fourd.train.engine import EngineFactory, OptimConfig
    from video4d import load_dit
    from video4d.flow import build_reference, flow_matching_loss
    from video4d.grid import ReferenceCells
    from video4d.model import select_trainable

    env = init_distributed()
    kind = "plain" if mode == "plain" else "deepspeed"
    factory = EngineFactory(kind, OptimConfig(), device=torch.device("cpu"), dtype=torch.float32, micro_batch=1,
                            ds_config=None if kind == "plain" else DS_CONFIG)
    if kind == "deepspeed":
        deepspeed.init_distributed(dist_backend="gloo")
    placement = factory.placement if mode != "whole" else Placement()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 2, 2, 16, 8, 8, generator=gen)
    _reset_peak()
    baseline = _status("VmRSS")
    model = load_dit({"preset": preset, "gradient_checkpointing": True, "attention_backend": "split"}, weights=weights, placement=placement)
    select_trainable(model)
    loaded = _status("VmHWM")
    engine = factory(model)
    engine.train()
    cfg = model.config
    context = torch.randn(1, cfg.text_len, cfg.text_dim, generator=gen)
    loss, _ = flow_matching_loss(engine.forward_module, x0, context, build_reference(x0, ReferenceCells(view=0, time=0)), gen)
    engine.backward(loss)
    engine.step()
    return {"rank": env.rank, "baseline": baseline, "build_load": loaded - baseline, "peak": _status("VmHWM") - baseline}


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _launch(mode: str, ranks: int, preset: str, weights: str, out: str) -> list[dict[str, Any]]:
    # a fixed mmap threshold: glibc's adaptive one would keep freed large tensors resident and inflate RSS
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), DS_ACCELERATOR="cpu",
               MALLOC_MMAP_THRESHOLD_="131072")
    env.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(ROOT, ".cache", "torch_extensions"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", _port(),
           "-m", "eval.perf.sharded_memory", "--worker", mode, "--preset", preset, "--weights", weights, "--out", out]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} x{ranks} failed:\n{proc.stderr[-4000:]}")
    return [json.loads(open(os.path.join(out, f"{mode}_x{ranks}_rank{r}.json")).read()) for r in range(ranks)]


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Run every configuration and print the table (or, with ``--worker``, be one rank of one)."""
    p = argparse.ArgumentParser(prog="python -m eval.perf.sharded_memory", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mid", help="DiT preset (video4d.model.config.PRESETS)")
    p.add_argument("--out", default=os.path.join("outputs", "sharded_memory"), help="report directory")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        row = worker(args.worker, args.preset, args.weights)
        with open(os.path.join(args.out, f"{args.worker}_x{os.environ['WORLD_SIZE']}_rank{row['rank']}.json"), "w") as f:
            json.dump(row, f)
        return [row]
    import torch

    from eval.perf.cli import rows_markdown
    from fourd.weights import atomic_write_bytes, write_safetensors
    from video4d import load_dit

    rows: list[dict[str, Any]] = []
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, f"{args.preset}.safetensors")
        torch.manual_seed(0)
        model = load_dit(args.preset, init="random")
        params = sum(p.numel() for p in model.parameters())
        write_safetensors(weights, model.state_dict())
        del model
        for name, mode, ranks in RUNS:
            ranks_rows = _launch(mode, ranks, args.preset, weights, args.out)
            worst = max(ranks_rows, key=lambda r: r["peak"])
            rows.append({"run": name, "ranks": ranks, "baseline_MB": worst["baseline"] / 1e6, "build_load_MB": worst["build_load"] / 1e6,
                         "peak_minus_baseline_MB": worst["peak"] / 1e6})
    single = {r["run"]: r["peak_minus_baseline_MB"] for r in rows}
    for r in rows:
        r["vs_plain"] = r["peak_minus_baseline_MB"] / single["plain, 1 process"]
        r["vs_zero3_1_rank"] = r["peak_minus_baseline_MB"] / single["ZeRO-3, 1 rank"]
    title = f"Peak host memory per rank, build + load + first step, {args.preset} ({params / 1e6:.0f}M parameters, fp32 {params * 4 / 1e6:.0f} MB)"
    text = f"{title}\n\n{rows_markdown(rows)}"
    print(text)
    atomic_write_bytes(os.path.join(args.out, "sharded_memory.json"), json.dumps({"title": title, "rows": rows}, indent=1).encode())
    return rows


if __name__ == "__main__":
    main()
