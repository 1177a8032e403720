"""Measured peak memory of real DiT training steps, beside the planner's prediction.

    torchrun --nproc_per_node 2 -m eval.perf.memory_check model=small views=2 frames=9 height=64 width=64 zero=3 dp=2 dtype=fp32
    python -m eval.perf.memory_check model=tiny ... zero=0          # the plain engine, one process
    python -m eval.perf.memory_check model=tiny ... -- model=small ...   # several settings, one after the other

Arguments are :class:`eval.perf.memory_plan.PlanConfig` fields. Runs what training runs: the DiT built
as the engine's placement says (ZeRO-3: partitioned under ``deepspeed.zero.Init``), the engine
(DeepSpeed with the plan's stage, buckets and offload, ``stage3_param_persistence_threshold: 0``
and ``stage3_max_reuse_distance: 0`` so that small models partition like big ones; or the plain
engine for ``zero=0``), then ``steps`` steps of the rectified-flow loss on random latents with a
reference row and column. Measured: the most bytes held by torch's allocator during the last step,
its resident state included, counted from before the build: on CUDA the allocator's peak; on the
CPU the running sum of the profiler's allocation events (``profile_memory``; torch's CPU allocator
keeps no statistics), frees in threads the profiler does not follow inferred from reused addresses
(:func:`_allocation_levels`). Python objects and library memory are not counted, as on a GPU.
One JSON line per rank: ``{"rank", "measured", "predicted", "ratio", "build_peak"}``.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
from typing import Any, Optional

import torch

__all__ = ["ds_config", "measure_step_peak", "main"]


def ds_config(cfg) -> Optional[dict[str, Any]]:
    """The DeepSpeed config of a :class:`~eval.perf.memory_plan.PlanConfig` (None for the plain engine)."""
    if cfg.zero == 0:
        return None
    zero: dict[str, Any] = {"stage": cfg.zero, "contiguous_gradients": True, "overlap_comm": False, "reduce_bucket_size": cfg.reduce_bucket_size,
                            "allgather_bucket_size": cfg.reduce_bucket_size}
    if cfg.zero == 3:
        zero.update(stage3_prefetch_bucket_size=cfg.prefetch_bucket_size, stage3_max_live_parameters=cfg.max_live_parameters,
                    stage3_param_persistence_threshold=0, stage3_max_reuse_distance=0)
    if cfg.offload != "none":
        zero["offload_optimizer"] = {"device": "cpu"}
    if cfg.offload == "all":
        zero["offload_param"] = {"device": "cpu"}
    return {"zero_optimization": zero, "steps_per_print": 10**9, "zero_force_ds_cpu_optimizer": False}


def _allocation_levels(prof) -> list[tuple[int, int]]:
    """``[(time ns, bytes held)]`` after each allocation event of torch's CPU allocator, in time order.

    A free made in a thread the profiler does not follow (gloo's workers) is not recorded; it is
    inferred when the allocator hands out the same address again (the earlier block was free then)."""
    from eval.perf.measure import allocation_events

    live: dict[int, int] = {}
    level, levels = 0, []
    for t, ptr, size in sorted(allocation_events(prof)):
        level -= live.pop(ptr, 0)
        if size > 0:
            live[ptr] = size
            level += size
        levels.append((t, level))
    return levels


def _window(prof, name: str) -> tuple[int, int]:
    pending = list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        if event.name == name:
            return event.start_time_ns, event.end_time_ns
        pending.extend(event.children)
    raise RuntimeError(f"profiler event {name} not found")


def measure_step_peak(cfg, steps: int = 2) -> dict[str, float]:
    """Build, wrap and train ``steps`` steps as the module docstring says; returns measured peaks (bytes)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from eval.perf.activation_bytes import TRAINABLE_SETS
    from fourd.train.distributed import init_distributed
    from fourd.train.engine import EngineFactory, OptimConfig
    from video4d import load_dit
    from video4d.flow import build_reference, flow_matching_loss
    from video4d.grid import ReferenceCells
    from video4d.model import select_trainable

    env = init_distributed()
    dtype = torch.bfloat16 if cfg.dtype == "bf16" else torch.float32
    factory = EngineFactory("plain" if cfg.zero == 0 else "deepspeed", OptimConfig(warmup_steps=1, total_steps=steps), device=env.device,
                            dtype=dtype, micro_batch=cfg.micro_batch, ds_config=ds_config(cfg))
    gen = torch.Generator().manual_seed(env.rank)
    T = (cfg.frames - 1) // 4 + 1
    x0 = torch.randn(cfg.micro_batch, cfg.views, T, 16, cfg.height // 8, cfg.width // 8, generator=gen).to(env.device)
    cuda = env.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(env.device)
    base = torch.cuda.memory_allocated(env.device) if cuda else 0
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) if not cuda else contextlib.nullcontext() as prof:
        torch.manual_seed(0)
        model = load_dit({"preset": cfg.model, "gradient_checkpointing": cfg.checkpointing, "attention_backend": "auto" if cuda else "split"},
                         init="random", placement=factory.placement)
        select_trainable(model, TRAINABLE_SETS[cfg.trainable])
        engine = factory(model)
        context = torch.randn(cfg.micro_batch, model.config.text_len, model.config.text_dim, generator=gen).to(env.device)
        reference = build_reference(x0, ReferenceCells(view=0, time=0))
        engine.train()
        build_peak = torch.cuda.max_memory_allocated(env.device) - base if cuda else None
        for step in range(steps):
            if cuda and step == steps - 1:
                torch.cuda.reset_peak_memory_stats(env.device)
            with record_function(f"memory_check_step_{step}"):
                with engine.autocast():
                    loss, _ = flow_matching_loss(engine.forward_module, x0, context, reference, gen)
                engine.backward(loss)
                engine.step()
    if cuda:
        return {"measured": float(torch.cuda.max_memory_allocated(env.device) - base), "build_peak": float(build_peak)}
    start, end = _window(prof, f"memory_check_step_{steps - 1}")
    first = _window(prof, "memory_check_step_0")[0]
    levels = _allocation_levels(prof)
    return {"measured": float(max(level for t, level in levels if start <= t <= end)),
            "build_peak": float(max(level for t, level in levels if t < first))}


def check(configs: list[list[str]]) -> list[dict[str, float]]:
    """Measure and predict each configuration (``key=value`` lists) in turn in this process; returns
    this rank's rows ``{"config", "rank", "measured", "predicted", "ratio", "build_peak"}``."""
    import gc

    from eval.perf.memory_plan import parse, plan

    rows = []
    for argv in configs:
        cfg = parse(argv)
        gc.collect()
        result = measure_step_peak(cfg)
        gc.collect()
        predicted = plan(cfg).peak
        rows.append({"config": " ".join(argv), "rank": int(os.environ.get("RANK", 0)), **result, "predicted": predicted,
                     "ratio": predicted / result["measured"]})
    return rows


def main(argv: Optional[list[str]] = None) -> list[dict[str, float]]:
    """Measure and predict the configurations of the command line (several separated by ``--``);
    print one JSON line per configuration and rank."""
    argv = sys.argv[1:] if argv is None else argv
    configs = [list(group) for key, group in itertools.groupby(argv, lambda a: a == "--") if not key]
    rows = check(configs)
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
