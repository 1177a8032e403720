"""The 4D grid layout: the one place that defines how views, times and tokens are ordered.

A 4D grid is a tensor ``[B, V, T, C, H, W]``: row ``v`` is a fixed-view video, column ``t`` a
freeze-time video. After patchification every frame ``(v, t)`` becomes ``h * w`` tokens and the
sequence is laid out **view-major**: token ``(v, t, y, x)`` sits at flat index
``((v * T + t) * h + y) * w + x``. Every module that flattens a grid into tokens (the DiT, the
attention backends, the reconstructor) goes through :class:`GridShape`.

Reference cells are the frames given as conditioning: a fixed-view row (one view, all times) and/or
a freeze-time column (one time, all views). Either may be missing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = [
    "GridShape",
    "ReferenceCells",
    "ReferenceLatents",
    "collapsed_time_positions",
    "grid_to_frames",
    "frames_to_grid",
    "TRAINED_GRID_KEY",
]

# Safetensors metadata key of a DiT export: JSON {"views", "frames", "height", "width"} of the grid
# (pixels; frames at the last training step) it was trained on. Inference warns outside it.
TRAINED_GRID_KEY = "trained_grid"


@dataclass(frozen=True)
class GridShape:
    """Shape of a token grid: ``V`` views x ``T`` times, each frame ``h x w`` tokens.

    ``h`` and ``w`` are token counts (after the VAE and the patch embedding), not pixels.
    """

    V: int
    T: int
    h: int
    w: int

    def __post_init__(self) -> None:
        for name in ("V", "T", "h", "w"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"GridShape.{name} must be a positive int, got {value!r}")

    @property
    def num_frames(self) -> int:
        """Number of frames ``V * T``."""
        return self.V * self.T

    @property
    def tokens_per_frame(self) -> int:
        """Tokens in one frame, ``h * w``."""
        return self.h * self.w

    @property
    def num_tokens(self) -> int:
        """Sequence length ``N = V * T * h * w``."""
        return self.num_frames * self.tokens_per_frame

    def frame_index(self, v: int, t: int) -> int:
        """Flat frame index of cell ``(v, t)``: ``v * T + t``."""
        return v * self.T + t

    def token_index(self, v: int, t: int, y: int, x: int) -> int:
        """Flat token index of ``(v, t, y, x)`` in the view-major layout."""
        return (self.frame_index(v, t) * self.h + y) * self.w + x

    def token_view(self, device: torch.device | str | None = None) -> torch.Tensor:
        """View index of every token: long ``[N]``."""
        frames = torch.arange(self.num_frames, device=device)
        return (frames // self.T).repeat_interleave(self.tokens_per_frame)

    def token_time(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Time index of every token: long ``[N]``."""
        frames = torch.arange(self.num_frames, device=device)
        return (frames % self.T).repeat_interleave(self.tokens_per_frame)

    def token_frame(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Frame index ``v * T + t`` of every token: long ``[N]``."""
        return torch.arange(self.num_frames, device=device).repeat_interleave(self.tokens_per_frame)

    def flatten(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens on a grid ``[B, V, T, h, w, C]`` -> sequence ``[B, N, C]`` (view-major)."""
        B = x.shape[0]
        if tuple(x.shape[1:5]) != (self.V, self.T, self.h, self.w):
            raise ValueError(f"expected [B, {self.V}, {self.T}, {self.h}, {self.w}, C], got {list(x.shape)}")
        return x.reshape(B, self.num_tokens, x.shape[-1])

    def unflatten(self, x: torch.Tensor) -> torch.Tensor:
        """Sequence ``[B, N, C]`` -> tokens on a grid ``[B, V, T, h, w, C]``."""
        if x.shape[1] != self.num_tokens:
            raise ValueError(f"expected {self.num_tokens} tokens for {self}, got {x.shape[1]}")
        return x.reshape(x.shape[0], self.V, self.T, self.h, self.w, x.shape[-1])


@dataclass(frozen=True)
class ReferenceCells:
    """Which cells of a ``V x T`` grid are given as clean conditioning frames.

    ``view``: index of the fixed-view reference row (all times of that view), or None.
    ``time``: index of the freeze-time reference column (all views at that time), or None.
    """

    view: Optional[int] = 0
    time: Optional[int] = 0

    def mask(self, V: int, T: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean ``[V, T]``: True at reference cells."""
        m = torch.zeros(V, T, dtype=torch.bool, device=device)
        if self.view is not None:
            if not 0 <= self.view < V:
                raise ValueError(f"reference view {self.view} outside 0..{V - 1}")
            m[self.view, :] = True
        if self.time is not None:
            if not 0 <= self.time < T:
                raise ValueError(f"reference time {self.time} outside 0..{T - 1}")
            m[:, self.time] = True
        return m

    @property
    def count(self) -> int:
        """How many reference videos are given (0, 1 or 2)."""
        return int(self.view is not None) + int(self.time is not None)


@dataclass
class ReferenceLatents:
    """Clean conditioning latents and where they sit.

    ``latents``: ``[B, V, T, C, h, w]`` (only the cells marked in ``cells`` are read).
    ``cells``: boolean ``[V, T]`` (see :meth:`ReferenceCells.mask`), or ``[B, V, T]`` per sample.
    """

    latents: torch.Tensor
    cells: torch.Tensor

    def cell_mask(self) -> torch.Tensor:
        """Boolean ``[B, V, T]`` mask of reference cells."""
        B = self.latents.shape[0]
        cells = self.cells.to(device=self.latents.device, dtype=torch.bool)
        return cells.expand(B, *cells.shape[-2:]) if cells.dim() == 2 else cells


def collapsed_time_positions(V: int, T: int, t_max: int, mode: str = "view_major", table_len: int = 1024) -> torch.Tensor:
    """Collapse (view, time) into one RoPE frame position per frame.

    ``mode="view_major"``: ``t' = v * t_max + t`` (the paper's default; requires ``T <= t_max``).
    ``mode="diagonal"``: ``t' = v + t`` (the appendix's ablation).
    Returns long ``[V, T]``. Raises if any position reaches ``table_len`` (Wan2.1's RoPE table has
    1024 positions per axis).
    """
    v = torch.arange(V).unsqueeze(1)
    t = torch.arange(T).unsqueeze(0)
    if mode == "view_major":
        if T > t_max:
            raise ValueError(f"T={T} frames exceed t_max={t_max}: raise rope t_max or use fewer frames")
        pos = v * t_max + t
    elif mode == "diagonal":
        pos = v + t
    else:
        raise ValueError(f"unknown position mode {mode!r}; use 'view_major' or 'diagonal'")
    if int(pos.max()) >= table_len:
        raise ValueError(
            f"collapsed position {int(pos.max())} (V={V}, T={T}, t_max={t_max}, mode={mode}) exceeds the "
            f"RoPE table length {table_len}: lower t_max or the number of views"
        )
    return pos


def grid_to_frames(x: torch.Tensor) -> torch.Tensor:
    """``[B, V, T, ...]`` -> ``[B * V * T, ...]`` (view-major frame order)."""
    return x.reshape(-1, *x.shape[3:])


def frames_to_grid(x: torch.Tensor, B: int, V: int, T: int) -> torch.Tensor:
    """``[B * V * T, ...]`` -> ``[B, V, T, ...]``; the inverse of :func:`grid_to_frames`."""
    return x.reshape(B, V, T, *x.shape[1:])
