"""FlexAttention backend: block-sparse masked attention (compiled on CUDA; forward-only on CPU).

The ``BlockMask`` is built from the analytic block structure of :mod:`video4d.attention.masks`
(memory ``O(N + blocks^2)``, never an ``N x N`` mask; equal to ``create_block_mask`` with
``B=None, H=None``) once per (grid, pattern, block size, padding, device) and cached.
With ``pad_frames`` every frame is padded to a multiple of the block size so that block sparsity
equals element sparsity; padded keys are masked out and padded queries dropped from the output.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from video4d.attention.masks import block_structure, check_pattern, mask_mod
from video4d.grid import GridShape

__all__ = ["block_mask", "choose_padding", "flex_attention_grid"]


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
def _cached_block_mask(grid: GridShape, pattern: str, block_size: int, pad_frames: bool, device: torch.device) -> BlockMask:
    blocks = block_structure(grid, pattern, block_size, pad_frames)
    partial, full = _ordered(blocks.partial, device), _ordered(blocks.full, device)
    return BlockMask.from_kv_blocks(
        *partial,
        *full,
        BLOCK_SIZE=block_size,
        mask_mod=mask_mod(grid, pattern, blocks.stride),
        seq_lengths=(blocks.seq_len, blocks.seq_len),
    )


def block_mask(grid: GridShape, pattern: str, device: torch.device | str, block_size: int = 128, pad_frames: bool = False) -> BlockMask:
    """Cached ``BlockMask`` of ``pattern`` (not "full") over the (padded) sequence of ``grid`` on ``device``."""
    check_pattern(pattern)
    if pattern == "full":
        raise ValueError("pattern 'full' needs no BlockMask")
    return _cached_block_mask(grid, pattern, block_size, bool(pad_frames), torch.device(device))


@functools.lru_cache(maxsize=64)
def choose_padding(grid: GridShape, pattern: str, block_size: int = 128) -> bool:
    """True when padding frames to the block size leaves fewer blocks to compute."""
    def computed(pad: bool) -> int:
        blocks = block_structure(grid, pattern, block_size, pad)
        return int(blocks.partial.sum() + blocks.full.sum())

    return computed(True) < computed(False)


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
    pad_frames: bool | None = None,
    block_size: int = 128,
    compile: bool | None = None,
) -> torch.Tensor:
    """Masked attention with FlexAttention: ``q, k, v [B, N, H, D]`` -> ``[B, N, H, D]``.

    ``pad_frames``: pad frames to ``block_size`` (None: whichever computes fewer blocks).
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
    if pad_frames is None:
        pad_frames = choose_padding(grid, pattern, block_size)
    mask = block_mask(grid, pattern, q.device, block_size, pad_frames)
    stride = mask.seq_lengths[0] // grid.num_frames
    out = attend(*(_pad(x, grid, stride) for x in (q, k, v)), block_mask=mask)
    return _unpad(out, grid, stride)
