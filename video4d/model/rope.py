"""3D rotary position embedding of Wan2.1, with the 4D grid's (view, time) collapsed to one frame axis.

Each head's ``head_dim = d`` channels form ``d / 2`` pairs of ADJACENT channels ``(2i, 2i + 1)``,
each rotated as one complex number. The pairs are split over the axes as
``d - 4 * (d // 6)`` channels for the frame axis, then ``2 * (d // 6)`` for height and
``2 * (d // 6)`` for width (44/42/42 at d = 128). An axis with ``c`` channels uses inverse
frequencies ``theta ** (-(2k) / c)`` for ``k = 0 .. c/2 - 1``, theta = 10000. Wan keeps a fixed
table of 1024 positions per axis; we compute the same angles on demand (``position * inv_freq`` in
float64) and only enforce the table length.
"""
from __future__ import annotations

import functools

import torch

from video4d.grid import GridShape, collapsed_time_positions
from video4d.model.config import ROPE_TABLE_LEN

__all__ = ["axis_channels", "rope_angles", "apply_rope", "RopeCache", "rope_tables"]

ROPE_THETA = 10000.0


def axis_channels(head_dim: int) -> tuple[int, int, int]:
    """Channels of one head rotated by (frame, height, width): ``(d - 4*(d//6), 2*(d//6), 2*(d//6))``."""
    part = 2 * (head_dim // 6)
    return head_dim - 2 * part, part, part


def _inv_freq(channels: int, device) -> torch.Tensor:
    return ROPE_THETA ** (-torch.arange(0, channels, 2, dtype=torch.float64, device=device) / channels)


def rope_angles(head_dim: int, frame: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Rotation angles (radians, float64) ``[N, head_dim / 2]`` for per-token positions.

    ``frame``, ``y``, ``x``: long ``[N]`` positions on the frame, height and width axes (each must
    be below the 1024-entry table).
    """
    for name, pos in (("frame", frame), ("height", y), ("width", x)):
        if pos.numel() and int(pos.max()) >= ROPE_TABLE_LEN:
            raise ValueError(f"RoPE {name} position {int(pos.max())} exceeds the table length {ROPE_TABLE_LEN}")
    cf, ch, cw = axis_channels(head_dim)
    parts = [p.to(torch.float64)[:, None] * _inv_freq(c, p.device)[None, :] for p, c in ((frame, cf), (y, ch), (x, cw))]
    return torch.cat(parts, dim=1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x`` ``[B, N, H, D]`` by angles given as ``cos``/``sin``
    ``[N, D / 2]`` (float32). Computed in float32; returns float32 ``[B, N, H, D]``."""
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1).flatten(-2)


class RopeCache:
    """Angles for one token grid, shared by all blocks (built once per grid by :func:`rope_tables`).

    ``cos``/``sin``: float32 ``[N, head_dim / 2]`` for the view-major tokens of ``grid``; the frame
    position of cell (v, t) comes from :func:`video4d.grid.collapsed_time_positions`
    (``t_max`` and ``mode`` from the config), rows and columns of a frame use ``y`` and ``x``.
    """

    def __init__(self, head_dim: int, grid: GridShape, t_max: int, mode: str, device) -> None:
        frame_pos = collapsed_time_positions(grid.V, grid.T, t_max, mode, table_len=ROPE_TABLE_LEN).to(device)
        shape = (grid.V, grid.T, grid.h, grid.w)
        frame = frame_pos[:, :, None, None].expand(shape).reshape(-1)
        y = torch.arange(grid.h, device=device)[None, None, :, None].expand(shape).reshape(-1)
        x = torch.arange(grid.w, device=device)[None, None, None, :].expand(shape).reshape(-1)
        angles = rope_angles(head_dim, frame, y, x)
        self.cos = angles.cos().float()
        self.sin = angles.sin().float()


@functools.lru_cache(maxsize=16)
def rope_tables(head_dim: int, grid: GridShape, t_max: int, mode: str, device: torch.device) -> RopeCache:
    """The :class:`RopeCache` of a grid, built once per (head_dim, grid, t_max, mode, device): a
    sampler or training loop calls the DiT on the same grid every step (no recomputation, no host
    syncs for the table-length checks). Built outside inference mode so the tables can be reused
    by training after sampling under ``torch.inference_mode``."""
    with torch.inference_mode(False):
        return RopeCache(head_dim, grid, t_max, mode, device)

