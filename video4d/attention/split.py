"""Exact masked attention by splitting the grid into views, times and frames (any device, with backward).

The fused mask "same view OR same time" is the union of two block-diagonal masks (after
regrouping the tokens): attention within each view (``T * h * w`` keys) and within each time step
(``V * h * w`` keys), whose intersection is the query's own frame (``h * w`` keys). With each
branch's output ``o_b`` and log-sum-exp ``l_b`` the attention over the union is exact in one of two
plans (:func:`branch_plan`):

- three branches (any kernel, e.g. FlashAttention on CUDA): view, time and frame,
  ``out = (e^{l_v} o_v + e^{l_t} o_t - e^{l_f} o_f) / (e^{l_v} + e^{l_t} - e^{l_f})``;
- two branches (CPU, where the fused kernel takes a mask): view and time, one of them without the
  query's own frame (an additive mask on the diagonal frame blocks of the shorter group), merged
  as ``(e^{l_v} o_v + e^{l_t} o_t) / (e^{l_v} + e^{l_t})``: no frame branch, ``V + T`` frames of keys
  per query instead of ``V + T + 1``.

Branches are merged in order into one normalised float accumulator in the token layout (the
first branch's output is that accumulator): with the log-sum-exp ``l`` so far, a branch ``b`` of
sign ``s`` gives ``l' = log(e^l + s e^{l_b})`` and ``acc <- acc + w (o_b - acc)``,
``w = s e^{l_b - l'}`` (one ``lerp`` pass). The frame is subtracted last, when the view and time
branches have counted it twice (``e^l >= 2 e^{l_f}``), so the subtraction loses no precision. The backward reuses the merged output and log-sum-exp in each branch (see
:mod:`video4d.attention.kernels`: FlashAttention-style backward kernels take them as they are)
and adds the branch gradients with the same signs.

The view and frame groupings are views of the inputs; the time grouping needs copies, so branches
run over chunks of their groups (views, times or frames) of at most :data:`CHUNK_BYTES` of kernel
inputs. On CPU the time branch runs in chunks of at most :data:`STAGE_BYTES` per copied input,
copied into buffers that every chunk reuses: small blocks that the allocator hands back without
new pages, where one copy of a whole ``[B, N, H, D]`` tensor (and each kernel output and zeroed
gradient of that size) is fresh memory the kernel faults in page by page (measured: the page
faults, not the copies, were most of the non-kernel time). No score matrix is stored. Tensors are handled as grid views ``[B, V, T, P, H, *rest]``
(``P = h * w``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from video4d.attention.dense import full_attention
from video4d.attention.kernels import MASKED_KERNELS, accumulation_dtype, attention_backward, attention_with_lse, kernel_for
from video4d.attention.masks import check_pattern
from video4d.grid import GridShape

__all__ = ["CHUNK_BYTES", "MASK_BYTES", "STAGE_BYTES", "Branch", "branch_plan", "split_attention"]

CHUNK_BYTES = 512 * 2**20  # kernel inputs per call; bounds the copies of the time grouping
STAGE_BYTES = 4 * 2**20  # CPU: one copied kernel input per call of the time grouping (see _chunks)
MASK_BYTES = 32 * 2**20  # the largest own-frame mask (float32 [L, L]) of the two-branch plan

Branch = tuple[str, float, bool]  # (grouping "view" / "time" / "frame", sign, without the own frame)


def branch_plan(grid: GridShape, kernel: str) -> tuple[Branch, ...]:
    """The branches (see the module docstring) for ``kernel`` (:func:`~video4d.attention.kernels.kernel_for`):
    two where the kernel takes the own-frame mask and the shorter group's mask fits :data:`MASK_BYTES`, else three."""
    shorter = min(grid.V, grid.T) * grid.tokens_per_frame
    if kernel in MASKED_KERNELS and shorter**2 * 4 <= MASK_BYTES:
        masked = "time" if grid.V <= grid.T else "view"
        return tuple((by, 1.0, by == masked) for by in ("view", "time"))
    return (("view", 1.0, False), ("time", 1.0, False), ("frame", -1.0, False))


def _grid_view(x: torch.Tensor, grid: GridShape) -> torch.Tensor:
    """``[B, N, H, *rest]`` -> ``[B, V, T, P, H, *rest]``."""
    return x.reshape(x.shape[0], grid.V, grid.T, grid.tokens_per_frame, *x.shape[2:])


def _chunks(x6: torch.Tensor, by: str, tensors: int) -> list[slice]:
    """Group index ranges of branch ``by`` whose ``tensors`` kernel inputs stay within :data:`CHUNK_BYTES`
    (on CPU, the time grouping's copies also within :data:`STAGE_BYTES` each)."""
    B, V, T = x6.shape[:3]
    count = {"view": V, "time": T, "frame": V * T}[by]
    group_bytes = x6[0].numel() * B * x6.element_size() // count  # of one tensor
    limit = CHUNK_BYTES // tensors
    if by == "time" and x6.device.type == "cpu":
        limit = min(limit, STAGE_BYTES)
    step = max(1, limit // max(group_bytes, 1))
    return [slice(i, min(i + step, count)) for i in range(0, count, step)]


def _staging(x6s: list[torch.Tensor], by: str, chunks: list[slice]) -> list[torch.Tensor | None]:
    """One flat buffer per tensor for the copies of the time grouping, reused by every chunk (None: views)."""
    if by != "time":
        return [None] * len(x6s)
    groups = chunks[0].stop - chunks[0].start
    return [x6.new_empty(x6.numel() // x6.shape[2] * groups) for x6 in x6s]


def _slot(x6: torch.Tensor, by: str, groups: slice) -> torch.Tensor:
    """View of grid tensor ``x6`` for some groups: ``[B, c, L_1, ..., H, *rest]``, groups second."""
    if by == "view":
        return x6[:, groups]
    if by == "time":
        return x6[:, :, groups].transpose(1, 2)
    return x6.flatten(1, 2)[:, groups]


def _grouped(x6: torch.Tensor, by: str, groups: slice, tail: int, buffer: torch.Tensor | None = None) -> torch.Tensor:
    """Kernel input ``[B * c, H, L, *rest]`` for some groups (``tail``: trailing dims H, *rest); a
    grouping that needs a copy is copied into ``buffer`` (flat, large enough) where one is given."""
    slot = _slot(x6, by, groups)
    if buffer is not None:
        slot = buffer[: slot.numel()].view(slot.shape).copy_(slot)
    return slot.reshape(slot.shape[0] * slot.shape[1], -1, *slot.shape[-tail:]).transpose(1, 2)


def _ungrouped(y: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """Kernel output ``[B * c, H, L, *rest]`` viewed like ``slot`` (no copy where the strides allow)."""
    return y.transpose(1, 2).reshape(slot.shape)


class _ViewOrTime(torch.autograd.Function):
    """Fused view-or-time attention on ``[B, N, H, D]`` (see the module docstring)."""

    @staticmethod
    def forward(ctx, q, k, v, grid: GridShape, impl: str):
        qkv = [_grid_view(x, grid) for x in (q, k, v)]
        acc_dtype = accumulation_dtype(q.dtype)
        acc = lse = None  # the normalised output and log-sum-exp of the branches so far
        P = grid.tokens_per_frame
        plan = branch_plan(grid, kernel_for(q, impl))
        for by, sign, no_own in plan:
            chunks = _chunks(qkv[0], by, 3)
            buffers = _staging(qkv, by, chunks)
            for groups in chunks:
                inputs = [_grouped(x, by, groups, 2, buf) for x, buf in zip(qkv, buffers)]
                out_c, lse_c = attention_with_lse(*inputs, impl, P if no_own else None)
                if acc is None and len(chunks) == 1:  # the whole first branch: its output is the accumulator
                    acc = _ungrouped(out_c, qkv[0]).to(acc_dtype).contiguous()
                    lse = _ungrouped(lse_c, qkv[0][..., 0]).contiguous()
                    continue
                if acc is None:
                    acc = torch.empty(qkv[0].shape, dtype=acc_dtype, device=q.device)
                    lse = torch.empty(acc.shape[:-1], dtype=acc_dtype, device=q.device)
                acc_s, lse_s = _slot(acc, by, groups), _slot(lse, by, groups)
                out_c, lse_c = _ungrouped(out_c, acc_s).to(acc_dtype), _ungrouped(lse_c, lse_s)
                if by == "view":  # the first branch, in chunks
                    acc_s.copy_(out_c)
                    lse_s.copy_(lse_c)
                    continue
                if sign > 0:
                    merged = torch.logaddexp(lse_s, lse_c)
                else:  # the frame, counted twice so far: e^{lse} >= 2 e^{l_f}
                    merged = lse_s + torch.log1p(-torch.exp(lse_c - lse_s))
                acc_s.lerp_(out_c, (lse_c - merged).exp_().mul_(sign)[..., None])  # acc + w (o_b - acc)
                lse_s.copy_(merged)
        out = acc.to(q.dtype).reshape(q.shape)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.grid, ctx.impl, ctx.plan = grid, impl, plan
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        grid = ctx.grid
        tensors = [_grid_view(x, grid) for x in (grad_out, q, k, v, out)]
        acc_dtype = accumulation_dtype(q.dtype)
        grads = None
        for by, sign, no_own in ctx.plan:
            chunks = _chunks(tensors[0], by, 5)
            buffers = _staging(tensors + [lse], by, chunks)
            for groups in chunks:
                inputs = [_grouped(x, by, groups, 2 if x is not lse else 1, buf) for x, buf in zip(tensors + [lse], buffers)]
                branch = attention_backward(*inputs, ctx.impl, grid.tokens_per_frame if no_own else None)
                if grads is None and len(chunks) == 1:  # the whole first branch: its gradients are the accumulators
                    grads = [_ungrouped(g, tensors[1]).to(acc_dtype).contiguous() for g in branch]
                    continue
                if grads is None:
                    grads = [torch.empty(tensors[1].shape, dtype=acc_dtype, device=q.device) for _ in range(3)]
                for total, g in zip(grads, branch):
                    slot = _slot(total, by, groups)
                    if by == "view":
                        slot.copy_(_ungrouped(g, slot))
                    else:
                        slot.add_(_ungrouped(g, slot), alpha=sign)
        dq, dk, dv = (g.to(q.dtype).reshape(q.shape) for g in grads)
        return dq, dk, dv, None, None


def _grouped_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: GridShape, by: str) -> torch.Tensor:
    """SDPA within each view or each time step: ``[B, N, H, D]`` in and out."""
    every = slice(None)
    out = F.scaled_dot_product_attention(*(_grouped(_grid_view(x, grid), by, every, 2) for x in (q, k, v)))
    out = _ungrouped(out, _slot(_grid_view(q, grid), by, every))
    return (out.transpose(1, 2) if by == "time" else out).reshape(q.shape)


def split_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: GridShape, pattern: str = "view_or_time", impl: str = "auto") -> torch.Tensor:
    """Exact masked attention ``q, k, v [B, N, H, D]`` -> ``[B, N, H, D]`` without an ``N x N`` mask.

    ``pattern``: see :mod:`video4d.attention.masks`. "view" / "time" are batched SDPA over views /
    times; "view_or_time" merges the branches of :func:`branch_plan` (full attention if V or T is 1).
    ``impl``: branch kernel for "view_or_time" (:func:`~video4d.attention.kernels.kernel_for`: "auto"
    takes ATen's fused kernel for the device and dtype).
    """
    check_pattern(pattern)
    if pattern == "view_or_time" and min(grid.V, grid.T) == 1:
        pattern = "full"
    if pattern == "full":
        return full_attention(q, k, v)
    if pattern in ("view", "time"):
        return _grouped_sdpa(q, k, v, grid, pattern)
    return _ViewOrTime.apply(q, k, v, grid, impl)
