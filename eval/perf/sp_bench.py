"""Benchmark: DeepSpeed-Ulysses sequence parallelism of the DiT at SP = 1 and SP = 2 on this machine.

    python -m eval.perf.sp_bench [--quick] [--out DIR]     # also the ``sp`` section of ``python -m eval.perf``

Per setting (fresh processes, ``torch.multiprocessing`` spawn, gloo; on CPU a core stands in for a
GPU, so SP = 2 runs 2 ranks x 1 thread and SP = 1 runs 1 rank with 1 thread and, without
``--quick``, as the same-cores reference with 2 threads): seconds per training step (forward, backward and the AdamW step of the
DeepSpeed ZeRO-2 engine, fp32, every parameter trained) and per sampling step (one DiT forward
without gradients, an Euler step without CFG), the share of each step spent in the all-to-alls
(DistributedAttention's q/k/v and output exchanges, forward and backward, waiting for the slower
rank included) and in the output all-gather, the bytes one rank puts into the all-to-alls per step
(``(N - 1) / N`` of them leave it), and the activation bytes a rank saves for backward (``saved_tensors_hooks``, parameters
excluded, storages counted once). Times are medians over the repeats, the slowest rank's.

Writes ``sp_bench.md`` (the table) and ``sp_bench.json`` (settings + rows) into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Optional

__all__ = ["SpRow", "GRIDS", "CommTimer", "run_benchmark", "perf_section", "main"]

# the model: a scaled-down Wan block stack (head_dim 64 as in Wan2.1-1.3B's 1536 / 12 = 128 halved)
MODEL = {"dim": 256, "ffn_dim": 1024, "num_heads": 4, "num_layers": 4, "text_dim": 64, "text_len": 16, "freq_dim": 64,
         "rope_t_max": 16, "attention_backend": "split"}
GRIDS = {"quick": (4, 4, 16, 16), "full": (8, 8, 16, 16)}  # V, T, latent h, latent w (8 x 8 tokens per frame)
SETTINGS = ((1, 1), (2, 1), (1, 2))  # (sequence-parallel ranks, intra-op threads per rank); --quick: the first two


@dataclass
class SpRow:
    """One setting; times in seconds (median, slowest rank), bytes in MiB per rank."""

    sp: int
    threads_per_rank: int
    tokens: int
    train_step_s: float
    sample_step_s: float
    train_all_to_all_share: Optional[float]
    sample_all_to_all_share: Optional[float]
    train_gather_share: Optional[float]
    all_to_all_mib_per_step: Optional[float]
    saved_activation_mib: float
    train_speedup: Optional[float] = None  # against SP = 1 with one thread
    sample_speedup: Optional[float] = None


class CommTimer:
    """Wraps ``deepspeed.comm.all_to_all_single`` (what DistributedAttention calls) and the DiT's
    output gather, adding up their wall-clock seconds and the bytes put in. ``sync``: called before
    and after each (``torch.cuda.synchronize`` on GPUs, so the time is the exchange's own)."""

    def __init__(self, model, sync=lambda: None) -> None:
        import deepspeed.comm as ds_comm

        self.all_to_all_s = self.gather_s = 0.0
        self.bytes = 0
        original = ds_comm.all_to_all_single

        def all_to_all_single(output, input, *args, **kwargs):
            sync()
            start = time.perf_counter()
            result = original(output, input, *args, **kwargs)
            sync()
            self.all_to_all_s += time.perf_counter() - start
            self.bytes += input.numel() * input.element_size()
            return result

        ds_comm.all_to_all_single = all_to_all_single
        sp = model.sequence_parallel
        if sp is not None:
            gather = sp.gather

            def timed_gather(*args):
                sync()
                start = time.perf_counter()
                out = gather(*args)
                sync()
                self.gather_s += time.perf_counter() - start
                return out

            sp.gather = timed_gather

    def reset(self) -> None:
        self.all_to_all_s = self.gather_s = 0.0
        self.bytes = 0


def _worker(rank: int, world: int, threads: int, grid: tuple, repeats: int, store: str, out: str) -> None:
    os.environ.update(DS_ACCELERATOR="cpu", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    import torch
    import torch.distributed as dist

    from eval.perf.measure import saved_bytes
    from fourd.train.engine import OptimConfig, build_engine
    from video4d.model import load_dit

    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = load_dit(MODEL, init="random")
    if world > 1:
        from fourd.train.distributed import sequence_parallel_groups

        model.set_sequence_parallel(sequence_parallel_groups(world).get_sequence_parallel_group())
    V, T, h, w = grid
    g = torch.Generator().manual_seed(1)
    x, t, context = torch.randn(1, V, T, 16, h, w, generator=g), torch.tensor([500.0]), torch.randn(1, 12, MODEL["text_dim"], generator=g)
    engine = build_engine("deepspeed", model, OptimConfig(lr=1e-5, warmup_steps=0), device=torch.device("cpu"), dtype=torch.float32,
                          micro_batch=1, ds_config={"zero_optimization": {"stage": 2}}, sequence_parallel=world)
    timer = CommTimer(model)

    def train_step():
        engine.backward(engine.forward_module(x, t, context).square().mean())
        engine.step()

    def sample_step():
        with torch.no_grad():
            model(x, t, context)

    def measure(fn) -> tuple[list[float], list[float], list[float], list[int]]:
        fn()  # warm-up
        seconds, a2a, gather, sent = [], [], [], []
        for _ in range(repeats):
            dist.barrier()
            timer.reset()
            start = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - start)
            a2a.append(timer.all_to_all_s)
            gather.append(timer.gather_s)
            sent.append(timer.bytes)
        return seconds, a2a, gather, sent

    result = {"train": measure(train_step), "sample": measure(sample_step)}
    result["saved"] = saved_bytes(lambda: engine.forward_module(x, t, context).square().mean(), {p.untyped_storage().data_ptr() for p in model.parameters()})[0]
    gathered = [None] * world
    dist.all_gather_object(gathered, result)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(gathered, f)
    dist.barrier()
    dist.destroy_process_group()


def _row(sp: int, threads: int, tokens: int, ranks: list[dict]) -> SpRow:
    def step(kind: str) -> tuple[float, Optional[float], Optional[float], Optional[float]]:
        per_repeat = list(zip(*(r[kind][0] for r in ranks)))  # [repeat][rank]
        slowest = [max(times) for times in per_repeat]
        median = statistics.median(slowest)
        if sp == 1:
            return median, None, None, None
        a2a = statistics.median(max(r[kind][1][i] for r in ranks) / slowest[i] for i in range(len(slowest)))
        gather = statistics.median(max(r[kind][2][i] for r in ranks) / slowest[i] for i in range(len(slowest)))
        sent = statistics.median(ranks[0][kind][3]) / 2**20
        return median, a2a, gather, sent

    train, train_a2a, train_gather, sent = step("train")
    sample, sample_a2a, _, _ = step("sample")
    return SpRow(sp=sp, threads_per_rank=threads, tokens=tokens, train_step_s=train, sample_step_s=sample,
                 train_all_to_all_share=train_a2a, sample_all_to_all_share=sample_a2a, train_gather_share=train_gather,
                 all_to_all_mib_per_step=sent, saved_activation_mib=max(r["saved"] for r in ranks) / 2**20)


def run_benchmark(quick: bool = False, repeats: Optional[int] = None, timeout_s: float = 900.0) -> list[SpRow]:
    """One :class:`SpRow` per setting of :data:`SETTINGS` on the grid of :data:`GRIDS` (``quick`` or ``full``)."""
    from eval.perf.measure import spawn_within

    grid = GRIDS["quick" if quick else "full"]
    repeats = repeats or (2 if quick else 5)
    tokens = grid[0] * grid[1] * (grid[2] // 2) * (grid[3] // 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (sp, threads) in enumerate(SETTINGS[:2] if quick else SETTINGS):
            out, store = os.path.join(tmp, f"{i}.json"), os.path.join(tmp, f"store{i}")
            if not spawn_within(_worker, (sp, threads, grid, repeats, store, out), sp, timeout_s):
                raise TimeoutError(f"sp_bench: setting sp={sp} did not finish in {timeout_s} s")
            with open(out) as f:
                rows.append(_row(sp, threads, tokens, json.load(f)))
    base = next(r for r in rows if r.sp == 1 and r.threads_per_rank == 1)
    for r in rows:
        r.train_speedup, r.sample_speedup = base.train_step_s / r.train_step_s, base.sample_step_s / r.sample_step_s
    return rows


def write_report(rows: list[SpRow], out_dir: str, settings: dict[str, Any]) -> tuple[str, str]:
    """``sp_bench.md`` and ``sp_bench.json`` in ``out_dir``; returns their paths."""
    from eval.perf.cli import rows_markdown
    from fourd.weights import atomic_write_bytes

    os.makedirs(out_dir, exist_ok=True)
    table = rows_markdown([asdict(r) for r in rows])
    md, js = os.path.join(out_dir, "sp_bench.md"), os.path.join(out_dir, "sp_bench.json")
    title = "Sequence parallelism (Ulysses) of the DiT: " + ", ".join(f"{k}={v}" for k, v in settings.items())
    atomic_write_bytes(md, f"# {title}\n\n{table}\n".encode())
    atomic_write_bytes(js, json.dumps({"settings": settings, "rows": [asdict(r) for r in rows]}, indent=1).encode())
    return md, js


def describe(quick: bool) -> dict[str, Any]:
    """The benchmark's settings (model, grid, repeats) as a dict for reports."""
    V, T, h, w = GRIDS["quick" if quick else "full"]
    return {"model": f"dim {MODEL['dim']}, {MODEL['num_heads']} heads, {MODEL['num_layers']} layers, backend {MODEL['attention_backend']}",
            "grid": f"{V} views x {T} latent frames x {h // 2}x{w // 2} tokens", "repeats": 2 if quick else 5,
            "engine": "DeepSpeed ZeRO-2, fp32, gloo"}

def perf_section(quick: bool, device: str, work: str) -> tuple[str, list[dict[str, Any]]]:
    """``python -m eval.perf``'s section (CPU ranks whatever ``device``; ``work`` unused)."""
    settings = ", ".join(f"{k}: {v}" for k, v in describe(quick).items())
    return f"Sequence parallelism (Ulysses) on CPU ranks, one core per rank ({settings})", [asdict(r) for r in run_benchmark(quick)]



def main(argv: Optional[list[str]] = None) -> list[SpRow]:
    """Command line (module docstring): prints the table and writes it with its JSON."""
    parser = argparse.ArgumentParser(prog="python -m eval.perf.sp_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small grid, 2 repeats, SP = 1 and 2 with one thread per rank (a few minutes on 2 CPU cores)")
    parser.add_argument("--out", default=os.path.join("outputs", "perf", "sp_bench_" + time.strftime("%Y-%m-%d_%H-%M-%S")))
    args = parser.parse_args(argv)
    rows = run_benchmark(args.quick)
    md, js = write_report(rows, args.out, describe(args.quick))
    print(open(md).read())
    print(f"[sp_bench] wrote {md} and {js}")
    return rows


if __name__ == "__main__":
    main()
