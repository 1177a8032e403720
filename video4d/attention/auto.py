"""``backend="auto"``: the backend a small cost model says is fastest, per device, grid and pattern.

The model counts the (query, key) pairs each backend computes and weighs them by how fast the
kernel that computes them runs (:class:`DeviceCosts`), plus the memory passes of the split
backend's regrouping and merges:

- ``dense``: ``N^2`` pairs through SDPA with a materialised mask (``mask_factor`` slower per pair
  than unmasked); a candidate only while its ``N x N`` mask fits ``dense_max_mask_bytes``;
- ``split``: its branches (:func:`~video4d.attention.split.branch_plan`: ``V + T`` frames of keys per
  query on CPU, ``V + T + 1`` with the frame branch on CUDA), each at the speed of its group length,
  plus ``split_passes`` passes over the ``N x heads x head_dim`` tensors;
- ``flex`` (CUDA): the pairs of the blocks its :class:`~video4d.attention.masks.BlockLayout`
  computes, at the speed of its tile size.

The CPU constants were measured on the 2-core development machine (``python -m
eval.perf.attention_bench``, 12 heads x 128, float32); the CUDA constants are estimates until
``eval/perf/gpu_checks.py`` measures them (it prints the measured ratios next to these).
The decision is deterministic: :func:`choose_backend` is a pure function of its arguments.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from video4d.attention.flex import choose_layout
from video4d.attention.masks import sparsity_report
from video4d.attention.split import branch_plan
from video4d.grid import GridShape

__all__ = ["CPU_COSTS", "CUDA_COSTS", "DeviceCosts", "choose_backend", "estimated_costs"]


@dataclass(frozen=True)
class DeviceCosts:
    """Relative cost constants of one device kind (only ratios between backends matter).

    ``pair_cost``: ``(min_query_len, cost)`` steps: cost per (query, key, head) pair of a fused
    unmasked kernel call whose groups have at least ``min_query_len`` queries (the CPU flash kernel
    blocks queries by 32 / 64 / 256 below 192 / below 768 / above, and runs longest key sequences a
    little slower); ``mask_factor``: dense-mask SDPA per pair (mask built each call) relative to
    unmasked; ``own_frame_mask_factor``: the same for a split branch whose own-frame mask exceeds
    2 MiB (smaller masks stay in cache and cost nothing measurable); ``pass_cost``: one memory pass
    over one token's ``head_dim`` vector of one head, in pairs; ``split_passes``: such passes the split
    backend makes (regrouping copies, merges, the kernels' zeroed gradients); ``flex_tile_cost``:
    FlexAttention's cost per computed pair by ``q_block * kv_block`` tile area (None: flex is no
    candidate); ``dense_max_mask_bytes``: the largest ``N x N`` mask (5 bytes per pair) dense may build.
    """

    pair_cost: tuple[tuple[int, float], ...]
    mask_factor: float
    own_frame_mask_factor: float
    pass_cost: float
    split_passes: float
    flex_tile_cost: tuple[tuple[int, float], ...] | None
    dense_max_mask_bytes: float

    def pair(self, query_len: int) -> float:
        """Cost per pair of a kernel call whose groups have ``query_len`` queries."""
        return _step(self.pair_cost, query_len)

    def flex_pair(self, tile_area: int) -> float:
        """Cost per computed pair of FlexAttention with tiles of ``tile_area`` pairs."""
        assert self.flex_tile_cost is not None
        return _step(self.flex_tile_cost, tile_area)


def _step(steps: tuple[tuple[int, float], ...], x: int) -> float:
    return next(cost for threshold, cost in reversed(steps) if x >= threshold)


# Forward + backward (True) and forward only (False) on this project's 2-core CPU machine, float32,
# 12 heads x 128: per-pair CPU time of ATen's flash kernels by group length (one thread,
# process_time, so that other processes on the shared machine do not count), relative to L = 4096.
# split_passes: the non-kernel CPU time measured around the kernel calls (1.5-3 % of fwd+bwd at
# V = T = 8 since the time branch is staged in reused buffers; 19 before, with fresh whole-tensor copies).
CPU_COSTS = {
    True: DeviceCosts(((0, 1.9), (192, 1.02), (768, 0.93), (2048, 1.0)), 1.10, 1.15, 6.0, 8.0, None, 2**30),
    False: DeviceCosts(((0, 2.0), (192, 1.04), (768, 0.9), (2048, 1.0)), 1.10, 1.18, 6.0, 4.0, None, 2**30),
}
# Estimates (FlashAttention-2 through ATen for split; FlexAttention's Triton kernels slower per pair,
# more so with small tiles), to be replaced by the ratios gpu_checks measures.
CUDA_COSTS = {
    True: DeviceCosts(((0, 1.0),), 1.5, 1.0, 3.0, 19.0, ((0, 3.0), (1024, 1.6), (4096, 1.3), (8192, 1.2)), 8.0 * 2**30),
    False: DeviceCosts(((0, 1.0),), 1.5, 1.0, 3.0, 6.0, ((0, 3.0), (1024, 1.6), (4096, 1.25), (8192, 1.15)), 8.0 * 2**30),
}


def _costs(device_type: str, training: bool) -> DeviceCosts:
    return (CUDA_COSTS if device_type == "cuda" else CPU_COSTS)[training]


def _split_cost(costs: DeviceCosts, grid: GridShape, device_type: str) -> float:
    V, T, P, N = grid.V, grid.T, grid.tokens_per_frame, grid.num_tokens
    total = costs.split_passes * N * costs.pass_cost
    for by, _, no_own in branch_plan(grid, "cuda_flash" if device_type == "cuda" else "cpu_flash"):
        length = {"view": T * P, "time": V * P, "frame": P}[by]
        masked = no_own and length * length * 4 > 2 * 2**20
        total += N * length * costs.pair(length) * (costs.own_frame_mask_factor if masked else 1.0)
    return total


def estimated_costs(device_type: str, grid: GridShape, pattern: str, training: bool) -> dict[str, float]:
    """Relative cost of each candidate backend (see the module docstring) for ``pattern`` "view_or_time"."""
    costs = _costs(device_type, training)
    N = grid.num_tokens
    out = {"split": _split_cost(costs, grid, device_type)}
    if N * N * 5 <= costs.dense_max_mask_bytes:
        out["dense"] = N * N * costs.pair(N) * costs.mask_factor
    if costs.flex_tile_cost is not None:
        layout = choose_layout(grid, pattern)
        report = sparsity_report(grid, layout, pattern)
        area = layout.q_block * layout.kv_block
        out["flex"] = report.computed_blocks * area * costs.pair(N) * costs.flex_pair(area)
    return out


@functools.lru_cache(maxsize=256)
def choose_backend(device_type: str, grid: GridShape, pattern: str, training: bool) -> str:
    """The backend ``"auto"`` runs: the cheapest of :func:`estimated_costs` for "view_or_time"
    (ties go to split, which needs no ``N x N`` memory); "split" for the other patterns (exact
    grouped SDPA, or plain SDPA for "full") and wherever ``min(V, T) == 1`` (full attention)."""
    if pattern != "view_or_time" or min(grid.V, grid.T) == 1:
        return "split"
    costs = estimated_costs(device_type, grid, pattern, training)
    return min(costs, key=lambda name: (costs[name], name != "split"))
