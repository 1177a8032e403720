"""Benchmark of the 4D attention backends and of the ablation pattern mixes (a script, not a test).

    python -m eval.perf.attention_bench [--quick] [--out results.json] [--heads 12] [--head-dim 128]

For each grid (V, T, tokens per frame) it times forward and forward+backward and measures peak
memory of: ``dense`` (SDPA with a dense view-or-time mask), ``split`` (exact view/time/frame
split), ``flex`` (FlexAttention: compiled on CUDA; forward only on CPU, eager unless
``--flex-compile``), ``full`` (unmasked SDPA), ``sequential`` (view attention, then time attention
on its output) and ``parallel`` (view and time attention of the same q, k, v, summed).

Peak memory: see :mod:`eval.perf.measure` (torch-allocated bytes above the level before the call).
Combinations above ``--max-tokens`` or whose
estimated ``N x N`` buffers exceed ``--mem-cap-gib`` are skipped and the table says why.
"""
from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

from eval.perf.measure import median_seconds, peak_bytes
from video4d.attention import attend, sparsity_report
from video4d.attention.dense import full_attention
from video4d.attention.flex import choose_padding, flex_attention_grid
from video4d.grid import GridShape

METHODS = ("dense", "split", "flex", "full", "sequential", "parallel")
FRAME_SHAPES = {64: (8, 8), 144: (12, 12), 1560: (30, 52)}


@dataclass
class Row:
    """One (grid, method) measurement; times in ms, memory in MiB; None where not measured."""

    V: int
    T: int
    tokens_per_frame: int
    N: int
    method: str
    fwd_ms: Optional[float] = None
    fwd_bwd_ms: Optional[float] = None
    fwd_peak_mib: Optional[float] = None
    fwd_bwd_peak_mib: Optional[float] = None
    note: str = ""


def _method_fn(method: str, grid: GridShape, compile_flex: bool) -> Callable:
    if method == "dense":
        return lambda q, k, v: attend(q, k, v, grid, "view_or_time", "dense")
    if method == "split":
        return lambda q, k, v: attend(q, k, v, grid, "view_or_time", "split")
    if method == "flex":
        return lambda q, k, v: flex_attention_grid(q, k, v, grid, "view_or_time", compile=compile_flex)
    if method == "full":
        return full_attention
    if method == "sequential":
        return lambda q, k, v: attend(attend(q, k, v, grid, "view", "split"), k, v, grid, "time", "split")
    return lambda q, k, v: attend(q, k, v, grid, "view", "split") + attend(q, k, v, grid, "time", "split")


def _skip_reason(method: str, N: int, args, device: torch.device, compile_flex: bool) -> str:
    if N > args.max_tokens:
        return f"skipped: N > --max-tokens {args.max_tokens}"
    cap = args.mem_cap_gib * 2**30
    if method == "dense" and N * N * 5 > cap:
        return f"skipped: N x N mask + bias ~{N * N * 5 / 2**30:.1f} GiB > cap"
    eager_flex_bytes = args.batch * args.heads * N * N * 14  # measured: ~13.3 bytes per score on CPU
    if method == "flex" and device.type == "cpu" and not compile_flex and eager_flex_bytes > cap:
        return f"skipped: eager CPU flex materialises scores ~{eager_flex_bytes / 2**30:.1f} GiB > cap"
    return ""


def _measure(method: str, grid: GridShape, args, device: torch.device, dtype: torch.dtype, compile_flex: bool) -> Row:
    row = Row(grid.V, grid.T, grid.tokens_per_frame, grid.num_tokens, method)
    row.note = _skip_reason(method, grid.num_tokens, args, device, compile_flex)
    if row.note:
        return row
    if method == "flex":
        pad = choose_padding(grid, "view_or_time")
        blocks = sparsity_report(grid, pad_frames=pad).block_sparsity
        row.note = f"{'compiled' if compile_flex else 'eager'}, pad={pad}, block sparsity {blocks:.1%}"
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (args.batch, grid.num_tokens, args.heads, args.head_dim)
    q, k, v = (torch.randn(shape, generator=gen, device=device, dtype=dtype) for _ in range(3))
    attn = _method_fn(method, grid, compile_flex)

    def forward():
        with torch.no_grad():
            attn(q, k, v)

    row.fwd_ms = 1e3 * median_seconds(forward, device, args.repeats)
    row.fwd_peak_mib = peak_bytes(forward, device) / 2**20
    if method == "flex" and device.type == "cpu":
        row.note += "; no CPU backward"
        return row
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    grad = torch.randn(shape, generator=gen, device=device, dtype=dtype)

    def forward_backward():
        attn(qg, kg, vg).backward(grad)
        qg.grad = kg.grad = vg.grad = None

    row.fwd_bwd_ms = 1e3 * median_seconds(forward_backward, device, args.repeats)
    row.fwd_bwd_peak_mib = peak_bytes(forward_backward, device) / 2**20
    return row


def _grids(quick: bool) -> list[GridShape]:
    sizes = (2, 4, 8)
    pairs = [(n, n) for n in sizes] if quick else list(itertools.product(sizes, sizes))
    return [GridShape(V, T, *FRAME_SHAPES[p]) for p in (64, 144, 1560) for V, T in pairs]


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else (f"{x:.1f}" if x < 1000 else f"{x:.0f}")


def _print_table(rows: list[Row], title: str) -> None:
    headers = ["V", "T", "tok/frame", "N", "method", "fwd ms", "fwd+bwd ms", "fwd peak MiB", "fwd+bwd peak MiB", "note"]
    cells = [
        [str(r.V), str(r.T), str(r.tokens_per_frame), str(r.N), r.method, _fmt(r.fwd_ms), _fmt(r.fwd_bwd_ms), _fmt(r.fwd_peak_mib), _fmt(r.fwd_bwd_peak_mib), r.note]
        for r in rows
    ]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for line in [headers, *cells]:
            print(" | ".join(line))
        return
    table = Table(title=title)
    for h in headers:
        table.add_column(h, justify="left" if h in ("method", "note") else "right")
    for line in cells:
        table.add_row(*line)
    Console(width=200).print(table)


def perf_section(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    """``python -m eval.perf``'s section (registered in eval/perf/__main__.py)."""
    argv = ["--device", device] + (["--quick", "--max-tokens", "2400", "--repeats", "1", "--heads", "4", "--head-dim", "64"] if quick else [])
    return "Attention backends (forward / forward+backward, peak memory)", [asdict(r) for r in main(argv)]


def main(argv: Optional[list[str]] = None) -> list[Row]:
    """Parse arguments, run the benchmark, print the table and write the JSON (if ``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="square grids only (V = T), fewer repeats")
    parser.add_argument("--out", help="write the rows and settings as JSON here")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-tokens", type=int, help="skip grids with more tokens (default: 100000 on CUDA, 10000 on CPU)")
    parser.add_argument("--mem-cap-gib", type=float, default=4.0, help="skip methods whose N x N buffers would exceed this")
    parser.add_argument("--repeats", type=int, help="timed repeats after one warm-up (default 3, quick 2)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--flex-compile", action="store_true", help="compile FlexAttention on CPU too (always on CUDA)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    args.max_tokens = args.max_tokens or (100_000 if on_cuda else 10_000)
    args.repeats = args.repeats or (2 if args.quick else 3)
    dtype = getattr(torch, args.dtype or ("bfloat16" if on_cuda else "float32"))
    compile_flex = on_cuda or args.flex_compile
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")

    rows = []
    for grid in _grids(args.quick):
        for method in methods:
            rows.append(_measure(method, grid, args, device, dtype, compile_flex))
            print(f"done V={grid.V} T={grid.T} tok/frame={grid.tokens_per_frame} {method}", flush=True)
    title = f"attention on {device} ({dtype}), batch {args.batch}, {args.heads} heads x {args.head_dim}, threads {torch.get_num_threads()}"
    _print_table(rows, title)
    if args.out:
        settings = dict(vars(args)) | {"dtype": str(dtype), "torch": torch.__version__, "threads": torch.get_num_threads()}
        with open(args.out, "w") as f:
            json.dump({"settings": settings, "memory": "peak torch-allocated bytes above the pre-call level", "rows": [asdict(r) for r in rows]}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
