"""Benchmark of the 4D attention backends and of the ablation pattern mixes (a script, not a test).

    python -m eval.perf.attention_bench [--quick] [--out results.json] [--clock wall|cpu] [--heads 12] [--head-dim 128]
    python -m eval.perf.attention_bench --grids "8,8,64;8,8,144" --no-blocks   # only these timed grids (V,T,tokens per frame)

Two tables, both also written as JSON (:mod:`eval.perf.cli`: ``--out``, default
``outputs/perf/attention_bench_<time>.json``), with a progress line per measurement:

1. **Blocks** (no timing, no GPU): for the grids users train and sample (V x T in 4x4, 8x8, 8x16
   latent frames at 144x256, 288x512 and 480x832: 144, 576 and 1560 tokens per frame), the
   view-or-time pattern's element sparsity and the blocks FlexAttention computes (full + partial,
   counted from the ``BlockMask`` itself), against the blocks element sparsity needs: before (128 x
   128 blocks, frames padded where that computes fewer blocks) and after (:func:`choose_layout`).
2. **Timings**: for each grid (V, T, tokens per frame) forward and forward+backward of ``dense``
   (SDPA with a dense mask), ``split`` (exact view/time/frame split), ``flex`` (FlexAttention: compiled
   on CUDA; forward only on CPU, eager unless ``--flex-compile``), ``full`` (unmasked SDPA),
   ``sequential`` (view attention, then time attention on its output) and ``parallel`` (view and time
   attention of the same q, k, v, summed). Split's speed-up over dense is compared with the ideal
   ``V T / (V + T - 1)`` (the fraction of pairs the mask keeps), and each grid says which backend
   ``auto`` picks (forward+backward / forward) and whether it was the fastest measured.

``--quick`` times dense and split at V = T = 8 with 64 and 144 tokens per frame, V = T = 4 at 144
and V = T = 2 at 1560, without peak memory (470 s with ``OMP_NUM_THREADS=1 --clock cpu --repeats 5``
on the quiet 2-core CPU machine; fewer repeats and both cores take less).
``--clock cpu`` times this process's CPU time instead of wall time: with ``OMP_NUM_THREADS=1`` it
is what to compare on a machine other processes share. The full
run (every V, T in {2, 4, 8} at 64, 144 and 1560 tokens per frame up to ``--max-tokens``, all
methods, peak memory) takes much longer (:data:`FULL_RUN`); both print their duration. Peak memory:
see :mod:`eval.perf.measure` (torch-allocated bytes above the level before the call; on CPU from
the profiler, whose log lines measure.py keeps quiet).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch

from eval.perf.cli import Progress, add_common_args, write_json
from eval.perf.measure import median_seconds, peak_bytes
from video4d.attention import BlockLayout, attend, block_mask, choose_backend, choose_layout, sparsity_report
from video4d.attention.dense import full_attention
from video4d.attention.flex import flex_attention_grid
from video4d.grid import GridShape

METHODS = ("dense", "split", "flex", "full", "sequential", "parallel")
QUICK_METHODS = ("dense", "split")
FRAME_SHAPES = {64: (8, 8), 144: (9, 16), 576: (18, 32), 1560: (30, 52)}  # tokens per frame -> (h, w)
QUICK_GRIDS = ((8, 8, 64), (8, 8, 144), (4, 4, 144), (2, 2, 1560))
BLOCK_GRIDS = tuple((V, T, p) for p in (144, 576, 1560) for V, T in ((4, 4), (8, 8), (8, 16)))
FULL_RUN = "~40 min on this 2-core CPU (estimate from the quick run's grids)"


@dataclass
class Row:
    """One (grid, method) measurement; times in ms, memory in MiB; None where not measured.

    ``speedup_*``: dense time / this time; ``of_ideal_*``: that over ``V T / (V + T - 1)``;
    ``auto``: the backend auto picks for this grid (forward+backward / forward).
    """

    V: int
    T: int
    tokens_per_frame: int
    N: int
    method: str
    fwd_ms: Optional[float] = None
    fwd_bwd_ms: Optional[float] = None
    fwd_peak_mib: Optional[float] = None
    fwd_bwd_peak_mib: Optional[float] = None
    speedup_fwd: Optional[float] = None
    speedup_fwd_bwd: Optional[float] = None
    of_ideal_fwd: Optional[float] = None
    of_ideal_fwd_bwd: Optional[float] = None
    auto: str = ""
    note: str = ""


@dataclass
class BlockRow:
    """Blocks of the view-or-time BlockMask on one grid under one layout (``when``: before / after)."""

    V: int
    T: int
    tokens_per_frame: int
    N: int
    element_sparsity: float
    when: str
    layout: str
    computed_blocks: int
    needed_blocks: float
    ratio: float


def grid_of(V: int, T: int, tokens_per_frame: int) -> GridShape:
    """The grid of ``V x T`` frames of ``tokens_per_frame`` tokens (see :data:`FRAME_SHAPES`)."""
    return GridShape(V, T, *FRAME_SHAPES[tokens_per_frame])


def _before_layout(grid: GridShape) -> BlockLayout:
    """The layout before issue 22: 128 x 128 blocks, frames padded when that computed fewer blocks."""
    plain, padded = BlockLayout(), BlockLayout(pad_frames=True)
    return padded if sparsity_report(grid, padded).computed_blocks < sparsity_report(grid, plain).computed_blocks else plain


def block_rows() -> list[BlockRow]:
    """Table 1 (see the module docstring), counted from the BlockMask built on CPU."""
    rows = []
    for V, T, p in BLOCK_GRIDS:
        grid = grid_of(V, T, p)
        for when, layout in (("before", _before_layout(grid)), ("after", choose_layout(grid, "view_or_time"))):
            mask = block_mask(grid, "view_or_time", "cpu", layout)
            computed = int(mask.kv_num_blocks.sum() + mask.full_kv_num_blocks.sum())
            report = sparsity_report(grid, layout)
            rows.append(BlockRow(V, T, p, grid.num_tokens, report.element_sparsity, when, str(layout), computed,
                                 report.needed_blocks, computed / report.needed_blocks))
    return rows


def _method_fn(method: str, grid: GridShape, compile_flex: bool) -> Callable:
    if method in ("dense", "split"):
        return lambda q, k, v: attend(q, k, v, grid, "view_or_time", method)
    if method == "flex":
        return lambda q, k, v: flex_attention_grid(q, k, v, grid, "view_or_time", compile=compile_flex)
    if method == "full":
        return full_attention
    if method == "sequential":
        return lambda q, k, v: attend(attend(q, k, v, grid, "view", "split"), k, v, grid, "time", "split")
    return lambda q, k, v: attend(q, k, v, grid, "view", "split") + attend(q, k, v, grid, "time", "split")


def _skip_reason(method: str, N: int, args, device: torch.device, compile_flex: bool) -> str:
    cap = args.mem_cap_gib * 2**30
    if method == "dense" and N * N * 5 > cap:
        return f"skipped: N x N mask + bias ~{N * N * 5 / 2**30:.1f} GiB > cap"
    eager_flex_bytes = args.batch * args.heads * N * N * 14  # measured: ~13.3 bytes per score on CPU
    if method == "flex" and device.type == "cpu" and not compile_flex and eager_flex_bytes > cap:
        return f"skipped: eager CPU flex materialises scores ~{eager_flex_bytes / 2**30:.1f} GiB > cap"
    return ""


def _peak_mib(fn: Callable[[], None], device: torch.device) -> float:
    return peak_bytes(fn, device) / 2**20  # measure.py keeps the profiler's log lines quiet


def _seconds(fn: Callable[[], None], device: torch.device, args) -> float:
    return median_seconds(fn, device, args.repeats, args.clock)


def _measure(method: str, grid: GridShape, args, device: torch.device, dtype: torch.dtype, compile_flex: bool) -> Row:
    row = Row(grid.V, grid.T, grid.tokens_per_frame, grid.num_tokens, method)
    row.note = _skip_reason(method, grid.num_tokens, args, device, compile_flex)
    if row.note:
        return row
    if method == "flex":
        row.note = f"{'compiled' if compile_flex else 'eager'}, layout {choose_layout(grid, 'view_or_time')}"
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (args.batch, grid.num_tokens, args.heads, args.head_dim)
    q, k, v = (torch.randn(shape, generator=gen, device=device, dtype=dtype) for _ in range(3))
    attn = _method_fn(method, grid, compile_flex)

    def forward():
        with torch.no_grad():
            attn(q, k, v)

    row.fwd_ms = 1e3 * _seconds(forward, device, args)
    if args.memory:
        row.fwd_peak_mib = _peak_mib(forward, device)
    if method == "flex" and device.type == "cpu":
        row.note += "; no CPU backward"
        return row
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    grad = torch.randn(shape, generator=gen, device=device, dtype=dtype)

    def forward_backward():
        attn(qg, kg, vg).backward(grad)
        qg.grad = kg.grad = vg.grad = None

    row.fwd_bwd_ms = 1e3 * _seconds(forward_backward, device, args)
    if args.memory:
        row.fwd_bwd_peak_mib = _peak_mib(forward_backward, device)
    return row


def _compare(rows: list[Row], grid: GridShape, device: torch.device) -> None:
    """Fill speed-ups over dense, their ratio to the ideal and auto's pick (with a note when auto
    did not pick the fastest of dense and split)."""
    ideal = grid.V * grid.T / (grid.V + grid.T - 1)
    by_method = {r.method: r for r in rows}
    dense = by_method.get("dense")
    picks = tuple(choose_backend(device.type, grid, "view_or_time", training) for training in (True, False))
    for r in rows:
        r.auto = "/".join(picks)
        for phase in ("fwd", "fwd_bwd"):
            base, mine = getattr(dense, f"{phase}_ms", None), getattr(r, f"{phase}_ms")
            if base and mine:
                setattr(r, f"speedup_{phase}", base / mine)
                setattr(r, f"of_ideal_{phase}", base / mine / ideal)
    for phase, pick in (("fwd_bwd", picks[0]), ("fwd", picks[1])):
        times = {m: getattr(by_method[m], f"{phase}_ms") for m in ("dense", "split") if m in by_method}
        if len(times) == 2 and None not in times.values() and pick in times and times[pick] > min(times.values()):
            by_method[pick].note += f"{'; ' if by_method[pick].note else ''}auto {phase} not fastest"


def _grids(args) -> list[GridShape]:
    """The timed grids (see the module docstring) of at most ``--max-tokens`` tokens."""
    sizes = (2, 4, 8)
    triples = args.grids or (QUICK_GRIDS if args.quick else [(V, T, p) for p in (64, 144, 1560) for V in sizes for T in sizes])
    return [g for g in (grid_of(*t) for t in triples) if g.num_tokens <= args.max_tokens]


def _grid_list(text: str) -> list[tuple[int, int, int]]:
    """``--grids``: "8,8,64;8,8,144" -> [(8, 8, 64), (8, 8, 144)]."""
    try:
        triples = [tuple(int(n) for n in item.split(",")) for item in text.split(";") if item.strip()]
    except ValueError:
        triples = []
    if not triples or any(len(t) != 3 or t[2] not in FRAME_SHAPES for t in triples):
        raise argparse.ArgumentTypeError(f"--grids {text!r}: give 'V,T,tokens_per_frame;...' with tokens per frame in {sorted(FRAME_SHAPES)}")
    return triples


def _fmt(x) -> str:
    if isinstance(x, str):
        return x
    if x is None:
        return "-"
    if isinstance(x, int):
        return str(x)
    return f"{x:.3f}" if abs(x) < 10 else (f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}")


def print_table(rows: list, title: str) -> None:
    """Print dataclass rows as a table (rich when installed, else plain text)."""
    headers = list(asdict(rows[0])) if rows else []
    cells = [[_fmt(v) for v in asdict(r).values()] for r in rows]
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
        table.add_column(h, justify="left" if h in ("method", "note", "when", "layout", "auto") else "right")
    for line in cells:
        table.add_row(*line)
    Console(width=240).print(table)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m eval.perf.attention_bench", description=__doc__.splitlines()[0])
    add_common_args(parser, "attention_bench")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-tokens", type=int, help="skip grids with more tokens (default: 100000 on CUDA, 10000 on CPU)")
    parser.add_argument("--mem-cap-gib", type=float, default=4.0, help="skip methods whose N x N buffers would exceed this")
    parser.add_argument("--repeats", type=int, help="timed repeats after one warm-up (default 3, quick 2)")
    parser.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)} (default: all; quick: dense,split)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, help="measure peak memory (default: not with --quick)")
    parser.add_argument("--grids", type=_grid_list, help="timed grids 'V,T,tokens_per_frame;...' (tokens per frame in "
                        f"{sorted(FRAME_SHAPES)}), instead of the quick or full set")
    parser.add_argument("--no-blocks", dest="blocks", action="store_false", help="skip the block table")
    parser.add_argument("--flex-compile", action="store_true", help="compile FlexAttention on CPU too (always on CUDA)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or CPU time of this process (with OMP_NUM_THREADS=1: robust on a shared machine)")
    args = parser.parse_args(argv)
    if args.clock == "cpu" and torch.device(args.device).type != "cpu":
        parser.error("--clock cpu measures CPU time: use it with --device cpu")
    on_cuda = torch.device(args.device).type == "cuda"
    args.max_tokens = args.max_tokens or (100_000 if on_cuda else 10_000)
    args.dtype = args.dtype or ("bfloat16" if on_cuda else "float32")
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.memory = (not args.quick) if args.memory is None else args.memory
    args.methods = [m for m in (args.methods or ",".join(QUICK_METHODS if args.quick else METHODS)).split(",") if m]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    return args


def run(args) -> tuple[list[BlockRow], list[Row], float]:
    """Both tables for parsed ``args`` (see :func:`parse_args`), with a progress line per measurement,
    and the seconds the timings took."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    compile_flex = device.type == "cuda" or args.flex_compile
    blocks = block_rows() if args.blocks else []
    if blocks:
        print_table(blocks, "FlexAttention blocks of the view-or-time mask (counted from the BlockMask): before / after")
    grids = _grids(args)
    progress = Progress("attention_bench", len(grids) * len(args.methods), args.quick, FULL_RUN)
    rows: list[Row] = []
    for grid in grids:
        grid_rows = []
        for method in args.methods:
            r = _measure(method, grid, args, device, dtype, compile_flex)
            grid_rows.append(r)
            progress.step(f"V={grid.V} T={grid.T} tok/frame={grid.tokens_per_frame} {method}: fwd {_fmt(r.fwd_ms)} ms, fwd+bwd {_fmt(r.fwd_bwd_ms)} ms {r.note}")
        _compare(grid_rows, grid, device)
        rows += grid_rows
    return blocks, rows, progress.finish()


def perf_section(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    """``python -m eval.perf``'s section: quick = the smallest quick grid at 4 heads x 64, no block table."""
    argv = ["--device", device] + (["--quick", "--max-tokens", "2400", "--repeats", "1", "--heads", "4", "--head-dim", "64", "--no-blocks"] if quick else [])
    _, rows, _ = run(parse_args(argv))  # the report writes the rows (no table printed, no JSON of its own)
    return "Attention backends (forward / forward+backward, speed-up over dense, auto's pick)", [asdict(r) for r in rows]


def main(argv: Optional[list[str]] = None) -> list[Row]:
    """Run the benchmark, print both tables and write the JSON; returns the timing rows."""
    args = parse_args(argv)
    blocks, rows, seconds = run(args)
    title = (f"attention on {args.device} ({args.dtype}), batch {args.batch}, {args.heads} heads x {args.head_dim}, "
             f"threads {torch.get_num_threads()}, {args.clock} time; speed-up over dense and its ratio to the ideal V*T/(V+T-1)")
    print_table(rows, title)
    settings = dict(vars(args)) | {"torch": torch.__version__, "threads": torch.get_num_threads()}
    write_json("attention_bench", args.out, {"settings": settings, "seconds": seconds,
                                             "memory": "peak torch-allocated bytes above the pre-call level",
                                             "blocks": [asdict(b) for b in blocks], "rows": [asdict(r) for r in rows]})
    return rows


if __name__ == "__main__":
    main()
