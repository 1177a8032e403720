"""Attention patterns on the view-major token grid, and their element and block sparsity.

A pattern is decided per pair of frames: token ``(v, t, y, x)`` may attend to ``(v', t', y', x')``
iff the frame pair ``((v, t), (v', t'))`` is allowed:

- ``"full"``: always;
- ``"view_or_time"``: ``v == v'`` or ``t == t'`` (the fused 4D mask; the same frame is included);
- ``"view"``: ``v == v'`` (a fixed-view video);
- ``"time"``: ``t == t'`` (a freeze-time video).

Block sparsity is derived from per-block frame token counts (memory ``O(N + blocks^2)``), never from
an ``N x N`` matrix. A :class:`BlockLayout` sets the query and key block sizes and whether frames are
padded to a multiple of the block size: then a frame occupies ``frame_stride`` positions, the first
``h * w`` of them real tokens; padded keys are masked out and padded queries attend like the real
tokens of their frame (their output is dropped), so padding never changes a result.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from video4d.grid import GridShape

__all__ = [
    "PATTERNS",
    "check_pattern",
    "frame_mask",
    "dense_mask",
    "frame_stride",
    "BlockLayout",
    "mask_mod",
    "BlockStructure",
    "block_structure",
    "SparsityReport",
    "sparsity_report",
]

PATTERNS = ("full", "view_or_time", "view", "time")


def check_pattern(pattern: str) -> None:
    """Raise ``ValueError`` unless ``pattern`` is one of :data:`PATTERNS`."""
    if pattern not in PATTERNS:
        raise ValueError(f"unknown attention pattern {pattern!r}; use one of {', '.join(PATTERNS)}")


def frame_mask(V: int, T: int, pattern: str, device: torch.device | str | None = None) -> torch.Tensor:
    """Allowed frame pairs: bool ``[V*T, V*T]`` indexed by flat frame ``v * T + t`` (query, key)."""
    check_pattern(pattern)
    frames = torch.arange(V * T, device=device)
    view, time = frames // T, frames % T
    same_view = view[:, None] == view[None, :]
    same_time = time[:, None] == time[None, :]
    return {
        "full": torch.ones_like(same_view),
        "view_or_time": same_view | same_time,
        "view": same_view,
        "time": same_time,
    }[pattern]


def dense_mask(grid: GridShape, pattern: str, device: torch.device | str | None = None) -> torch.Tensor:
    """Token mask (True = attend): bool ``[N, N]``, ``N = grid.num_tokens``. Memory ``N^2`` bytes."""
    frames = grid.token_frame(device)
    return frame_mask(grid.V, grid.T, pattern, device)[frames[:, None], frames[None, :]]


@dataclass(frozen=True)
class BlockLayout:
    """How a grid's token sequence is cut into FlexAttention blocks.

    ``q_block`` / ``kv_block``: tokens per query / key block (powers of two >= 16 run on the GPU
    kernels). ``pad_frames``: every frame is padded to a multiple of ``max(q_block, kv_block)``
    positions so that no block straddles two frames; padded keys are masked out and padded
    queries dropped (they never change a result).
    """

    q_block: int = 128
    kv_block: int = 128
    pad_frames: bool = False

    def __post_init__(self) -> None:
        for name in ("q_block", "kv_block"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BlockLayout.{name} must be a positive int, got {value!r}")

    def stride(self, grid: GridShape) -> int:
        """Sequence positions per frame: ``h * w``, or that rounded up to the larger block when padding."""
        return frame_stride(grid, max(self.q_block, self.kv_block), self.pad_frames)

    def __str__(self) -> str:
        return f"{self.q_block}x{self.kv_block}{' padded' if self.pad_frames else ''}"


def frame_stride(grid: GridShape, block_size: int, pad_frames: bool) -> int:
    """Sequence positions per frame: ``h * w``, or that rounded up to a multiple of ``block_size``."""
    tokens = grid.tokens_per_frame
    return math.ceil(tokens / block_size) * block_size if pad_frames else tokens


def mask_mod(grid: GridShape, pattern: str, stride: int | None = None):
    """FlexAttention mask function ``(b, h, q_idx, kv_idx) -> bool`` for a (padded) grid sequence.

    ``stride``: positions per frame (default ``h * w``: no padding). With padding, keys at
    positions ``>= h * w`` within their frame are masked out.
    """
    check_pattern(pattern)
    T, tokens = grid.T, grid.tokens_per_frame
    stride = tokens if stride is None else stride

    def allowed(b, h, q_idx, kv_idx):
        q_frame, kv_frame = q_idx // stride, kv_idx // stride
        same_view = (q_frame // T) == (kv_frame // T)
        same_time = (q_frame % T) == (kv_frame % T)
        keep = {
            "full": torch.ones_like(same_view),
            "view_or_time": same_view | same_time,
            "view": same_view,
            "time": same_time,
        }[pattern]
        if stride != tokens:
            keep = keep & ((kv_idx % stride) < tokens)
        return keep

    return allowed


@dataclass(frozen=True)
class BlockStructure:
    """Block-level view of a mask on a (padded) grid sequence cut as ``layout`` says.

    ``partial``/``full``: bool ``[nq, nk]`` (``nq = ceil(seq_len / q_block)``, ``nk`` likewise):
    blocks with some / all of their ``q_block x kv_block`` pairs allowed (a short last block is
    never full); the other blocks are skipped. ``allowed_pairs``: allowed (real query, real key) pairs.
    """

    layout: BlockLayout
    seq_len: int
    stride: int
    partial: torch.Tensor
    full: torch.Tensor
    allowed_pairs: int


def _block_frame_counts(grid: GridShape, stride: int, block_size: int, real_only: bool) -> torch.Tensor:
    """Tokens of each frame in each block: float32 ``[num_blocks, V*T]``, exact integers
    (padding positions counted with their frame unless ``real_only``)."""
    frames = grid.num_frames
    pos = torch.arange(frames * stride)
    if real_only:
        pos = pos[(pos % stride) < grid.tokens_per_frame]
    blocks = math.ceil(frames * stride / block_size)
    flat = (pos // block_size) * frames + pos // stride
    return torch.bincount(flat, minlength=blocks * frames).reshape(blocks, frames).float()


def block_structure(grid: GridShape, pattern: str, layout: BlockLayout = BlockLayout()) -> BlockStructure:
    """Classify the blocks of ``pattern`` on ``grid`` (memory ``O(nq * nk)``, never ``N x N``).

    Padded queries attend like the real tokens of their frame (as :func:`mask_mod` says), so a
    block of padded queries only is computed too and counts as computed work.
    """
    stride = layout.stride(grid)
    allowed = frame_mask(grid.V, grid.T, pattern).float()
    q_counts = _block_frame_counts(grid, stride, layout.q_block, real_only=False)
    kv_counts = _block_frame_counts(grid, stride, layout.kv_block, real_only=True)
    pairs = q_counts @ allowed @ kv_counts.T  # [nq, nk] allowed (query, real key) pairs per block
    full = pairs == layout.q_block * layout.kv_block
    real = torch.full((grid.num_frames,), float(grid.tokens_per_frame), dtype=torch.float64)
    return BlockStructure(
        layout=layout,
        seq_len=grid.num_frames * stride,
        stride=stride,
        partial=(pairs > 0) & ~full,
        full=full,
        allowed_pairs=int(real @ allowed.double() @ real),
    )


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity and computed work of one pattern on one grid under one block layout.

    ``element_sparsity``: fraction of (real query, real key) pairs masked out, in [0, 1].
    ``block_sparsity``: fraction of the ``q_block x kv_block`` blocks skipped (as FlexAttention's
    ``BlockMask.sparsity() / 100``); ``seq_len``: sequence length after optional frame padding.
    ``computed_blocks = full_blocks + partial_blocks``; ``needed_blocks``: the allowed (real)
    pairs over the block area, the blocks element sparsity needs; ``work_ratio``: their ratio
    (1.0: no pair computed in vain).
    """

    layout: BlockLayout
    element_sparsity: float
    block_sparsity: float
    num_blocks: int
    full_blocks: int
    partial_blocks: int
    seq_len: int
    needed_blocks: float

    @property
    def computed_blocks(self) -> int:
        """Blocks the kernel computes: ``full_blocks + partial_blocks``."""
        return self.full_blocks + self.partial_blocks

    @property
    def work_ratio(self) -> float:
        """``computed_blocks / needed_blocks``: computed pairs per attended pair."""
        return self.computed_blocks / self.needed_blocks


def sparsity_report(grid: GridShape, layout: BlockLayout = BlockLayout(), pattern: str = "view_or_time") -> SparsityReport:
    """Element and block sparsity of ``pattern`` on ``grid`` (``1 - (V+T-1)/(VT)`` elements for view_or_time)."""
    blocks = block_structure(grid, pattern, layout)
    full, partial = int(blocks.full.sum()), int(blocks.partial.sum())
    return SparsityReport(
        layout=layout,
        element_sparsity=1.0 - blocks.allowed_pairs / grid.num_tokens**2,
        block_sparsity=1.0 - (full + partial) / blocks.full.numel(),
        num_blocks=blocks.full.numel(),
        full_blocks=full,
        partial_blocks=partial,
        seq_len=blocks.seq_len,
        needed_blocks=blocks.allowed_pairs / (layout.q_block * layout.kv_block),
    )
