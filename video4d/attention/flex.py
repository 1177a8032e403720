"""FlexAttention backend: block-sparse masked attention (compiled on CUDA; forward-only on CPU).

The ``BlockMask`` is built from the analytic block structure of :mod:`video4d.attention.masks`
(memory ``O(N + blocks^2)``, never an ``N x N`` mask; equal to ``create_block_mask`` with
``B=None, H=None``) once per (grid, pattern, layout, device) and cached.

The block layout (:class:`~video4d.attention.masks.BlockLayout`: query / key block sizes and
optional per-frame padding) is chosen per grid by :func:`choose_layout` so that the blocks the
kernel computes are at most :data:`MAX_WORK_RATIO` times the blocks element sparsity needs, with
the largest blocks that allow it (larger tiles run faster on the GPU kernels). With 128 x 128
blocks a 144-token frame straddles blocks and FlexAttention computes 1.7x the needed pairs at
V = T = 8; frames of 144 tokens are exact with 16-token blocks, 576 with 64, and 1560-token frames
cost 3 % extra with 64 x 64 blocks (``python -m eval.perf.attention_bench`` prints the table).
"""
from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from video4d.attention.masks import BlockLayout, block_structure, check_pattern, mask_mod, sparsity_report
from video4d.grid import GridShape

__all__ = ["BLOCK_SIZES", "MAX_WORK_RATIO", "block_mask", "choose_layout", "flex_attention_grid"]

BLOCK_SIZES = (128, 64, 32, 16)  # powers of two the Triton kernels tile with (16 is their minimum)
MAX_WORK_RATIO = 1.05  # computed blocks / blocks element sparsity needs
MAX_MASK_BLOCKS = 2**24  # q blocks x kv blocks: larger layouts are not considered (BlockMask memory)


@functools.cache
def _compiled_flex():
    """``torch.compile(flex_attention, dynamic=False)``, created once per process."""
    return torch.compile(flex_attention, dynamic=False)


def _ordered(blocks: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense bool ``[nq, nk]`` -> (counts int32 ``[1, 1, nq]``, key-block indices int32 ``[1, 1, nq, nk]``)."""
    counts = blocks.sum(-1, dtype=torch.int32)
    order = torch.argsort(blocks.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return counts[None, None].to(device), order[None, None].to(device)


@functools.lru_cache(maxsize=64)
def _cached_block_mask(grid: GridShape, pattern: str, layout: BlockLayout, device: torch.device) -> BlockMask:
    blocks = block_structure(grid, pattern, layout)
    partial, full = _ordered(blocks.partial, device), _ordered(blocks.full, device)
    return BlockMask.from_kv_blocks(
        *partial,
        *full,
        BLOCK_SIZE=(layout.q_block, layout.kv_block),
        mask_mod=mask_mod(grid, pattern, blocks.stride),
        seq_lengths=(blocks.seq_len, blocks.seq_len),
    )


def block_mask(grid: GridShape, pattern: str, device: torch.device | str, layout: BlockLayout = BlockLayout()) -> BlockMask:
    """Cached ``BlockMask`` of ``pattern`` (not "full") over the (padded) sequence of ``grid`` on ``device``."""
    check_pattern(pattern)
    if pattern == "full":
        raise ValueError("pattern 'full' needs no BlockMask")
    return _cached_block_mask(grid, pattern, layout, torch.device(device))


def _candidates(grid: GridShape) -> list[BlockLayout]:
    """Layouts from :data:`BLOCK_SIZES`, most preferred first: larger block area, then squarer, then larger q block."""
    layouts = []
    for q, kv, pad in itertools.product(BLOCK_SIZES, BLOCK_SIZES, (False, True)):
        layout = BlockLayout(q, kv, pad)
        seq_len = grid.num_frames * layout.stride(grid)
        padding_changes_nothing = pad and layout.stride(grid) == grid.tokens_per_frame
        if not padding_changes_nothing and -(-seq_len // q) * -(-seq_len // kv) <= MAX_MASK_BLOCKS:
            layouts.append(layout)
    return sorted(layouts, key=lambda l: (-l.q_block * l.kv_block, -min(l.q_block, l.kv_block), -l.q_block, l.pad_frames))


@functools.lru_cache(maxsize=64)
def choose_layout(grid: GridShape, pattern: str, max_work_ratio: float = MAX_WORK_RATIO) -> BlockLayout:
    """The block layout for ``pattern`` on ``grid``: the first of :func:`_candidates` (largest
    blocks) whose computed blocks are at most ``max_work_ratio`` times the needed ones; where no
    layout reaches that, the one with the least work. Deterministic; cached."""
    check_pattern(pattern)
    best, best_ratio = BlockLayout(), float("inf")
    for layout in _candidates(grid):
        ratio = sparsity_report(grid, layout, pattern).work_ratio
        if ratio <= max_work_ratio:
            return layout
        if ratio < best_ratio:
            best, best_ratio = layout, ratio
    return best


def _pad(x: torch.Tensor, grid: GridShape, stride: int) -> torch.Tensor:
    """``[B, N, H, D]`` -> ``[B, H, V*T*stride, D]`` with each frame zero-padded to ``stride`` tokens."""
    B, _, H, D = x.shape
    P = grid.tokens_per_frame
    frames = x.reshape(B, grid.num_frames, P, H, D)
    if stride != P:
        frames = F.pad(frames, (0, 0, 0, 0, 0, stride - P))
    return frames.reshape(B, grid.num_frames * stride, H, D).transpose(1, 2)


def _unpad(y: torch.Tensor, grid: GridShape, stride: int) -> torch.Tensor:
    """Inverse of :func:`_pad` (padded query rows dropped): ``[B, H, L, D]`` -> ``[B, N, H, D]``."""
    B, H, _, D = y.shape
    P = grid.tokens_per_frame
    frames = y.transpose(1, 2).reshape(B, grid.num_frames, stride, H, D)[:, :, :P]
    return frames.reshape(B, grid.num_tokens, H, D)


def flex_attention_grid(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    grid: GridShape,
    pattern: str = "view_or_time",
    layout: BlockLayout | None = None,
    compile: bool | None = None,
) -> torch.Tensor:
    """Masked attention with FlexAttention: ``q, k, v [B, N, H, D]`` -> ``[B, N, H, D]``.

    ``layout``: block sizes and frame padding (None: :func:`choose_layout`).
    ``compile``: use the compiled kernel (None: on CUDA only). On CPU FlexAttention has no
    backward, so inputs requiring grad raise ``ValueError`` there (use the "split" backend).
    """
    check_pattern(pattern)
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v)):
        raise ValueError("FlexAttention has no backward on CPU: use backend='split' for training on CPU")
    compile = q.device.type == "cuda" if compile is None else compile
    attend = _compiled_flex() if compile else flex_attention
    if pattern == "full":
        return attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    layout = choose_layout(grid, pattern) if layout is None else layout
    mask = block_mask(grid, pattern, q.device, layout)
    stride = layout.stride(grid)
    out = attend(*(_pad(x, grid, stride) for x in (q, k, v)), block_mask=mask)
    return _unpad(out, grid, stride)
