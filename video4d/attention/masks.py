"""Attention patterns on the view-major token grid, and their element and block sparsity.

A pattern is decided per pair of frames: token ``(v, t, y, x)`` may attend to ``(v', t', y', x')``
iff the frame pair ``((v, t), (v', t'))`` is allowed:

- ``"full"``: always;
- ``"view_or_time"``: ``v == v'`` or ``t == t'`` (the fused 4D mask; the same frame is included);
- ``"view"``: ``v == v'`` (a fixed-view video);
- ``"time"``: ``t == t'`` (a freeze-time video).

Block sparsity is derived from per-block frame token counts (memory ``O(N + blocks^2)``), never from
an ``N x N`` matrix. Frames may be padded to a multiple of the block size (``pad_frames``): then a
frame occupies ``frame_stride`` positions, the first ``h * w`` of them real tokens; padded keys are
masked out and padded queries attend like the real tokens of their frame (their output is dropped).
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
    """Block-level view of a mask on a sequence of ``seq_len`` positions cut in ``block_size`` blocks.

    ``partial``/``full``: bool ``[nq, nk]`` (``nq = nk = ceil(seq_len / block_size)``): blocks with
    some / all ``block_size x block_size`` pairs allowed (a short last block is never full);
    the other blocks are skipped. ``allowed_pairs``: number of allowed (real query, real key) pairs.
    """

    seq_len: int
    block_size: int
    stride: int
    partial: torch.Tensor
    full: torch.Tensor
    allowed_pairs: int


def _block_frame_counts(grid: GridShape, stride: int, block_size: int, real_only: bool) -> torch.Tensor:
    """Tokens of each frame in each block: float64 ``[num_blocks, V*T]`` (padding counted unless ``real_only``)."""
    frames = grid.num_frames
    pos = torch.arange(frames * stride)
    frame = pos // stride
    if real_only:
        keep = (pos % stride) < grid.tokens_per_frame
        pos, frame = pos[keep], frame[keep]
    blocks = math.ceil(frames * stride / block_size)
    flat = (pos // block_size) * frames + frame
    return torch.bincount(flat, minlength=blocks * frames).reshape(blocks, frames).double()


def block_structure(grid: GridShape, pattern: str, block_size: int = 128, pad_frames: bool = False) -> BlockStructure:
    """Classify the ``block_size`` blocks of ``pattern`` on ``grid`` (padded per frame if asked)."""
    if block_size < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    stride = frame_stride(grid, block_size, pad_frames)
    allowed = frame_mask(grid.V, grid.T, pattern).double()
    q_counts = _block_frame_counts(grid, stride, block_size, real_only=False)
    kv_counts = _block_frame_counts(grid, stride, block_size, real_only=True)
    pairs = q_counts @ allowed @ kv_counts.T
    partial_any = pairs > 0
    full = pairs == block_size * block_size
    real = torch.full((grid.num_frames,), float(grid.tokens_per_frame), dtype=torch.float64)
    return BlockStructure(
        seq_len=grid.num_frames * stride,
        block_size=block_size,
        stride=stride,
        partial=partial_any & ~full,
        full=full,
        allowed_pairs=int(real @ allowed @ real),
    )


@dataclass(frozen=True)
class SparsityReport:
    """Sparsity of one pattern on one grid.

    ``element_sparsity``: fraction of (real query, real key) pairs masked out, in [0, 1].
    ``block_sparsity``: fraction of ``block_size x block_size`` blocks skipped (as FlexAttention's
    ``BlockMask.sparsity() / 100``). ``seq_len``: sequence length after optional frame padding.
    """

    element_sparsity: float
    block_sparsity: float
    num_blocks: int
    full_blocks: int
    partial_blocks: int
    seq_len: int


def sparsity_report(grid: GridShape, block_size: int = 128, pad_frames: bool = False, pattern: str = "view_or_time") -> SparsityReport:
    """Element and block sparsity of ``pattern`` on ``grid`` (``1 - (V+T-1)/(VT)`` elements for view_or_time)."""
    blocks = block_structure(grid, pattern, block_size, pad_frames)
    total = blocks.full.numel()
    full, partial = int(blocks.full.sum()), int(blocks.partial.sum())
    return SparsityReport(
        element_sparsity=1.0 - blocks.allowed_pairs / grid.num_tokens**2,
        block_sparsity=1.0 - (full + partial) / total,
        num_blocks=total,
        full_blocks=full,
        partial_blocks=partial,
        seq_len=blocks.seq_len,
    )
