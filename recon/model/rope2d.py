"""2D rotary position embedding of the VGGT aggregator.

Facts followed (VGGT): the head dimension ``D`` splits in two halves; the first half rotates with
the token's row ``y``, the second with its column ``x``. Each half of size ``D/2`` uses
``inv_freq_k = base^(-2k / (D/2))`` for ``k = 0 .. D/4 - 1`` (``base`` 100: ``100^(-k/16)`` at
``D = 64``) in rotate-half style (angles duplicated over both quarters of the half). Patch tokens sit
at ``(y + 1, x + 1)``; the special (camera and register) tokens at ``(0, 0)``, i.e. unrotated.
"""
from __future__ import annotations

import torch

__all__ = ["RoPE2D", "token_positions", "apply_rope"]


def token_positions(grid_h: int, grid_w: int, num_special: int, device=None) -> torch.Tensor:
    """Positions ``[num_special + grid_h * grid_w, 2]`` (long, ``(y, x)``) of one frame's tokens.

    Special tokens get ``(0, 0)``; the patch at row ``y``, column ``x`` gets ``(y + 1, x + 1)``.
    """
    y, x = torch.meshgrid(torch.arange(grid_h, device=device), torch.arange(grid_w, device=device), indexing="ij")
    patches = torch.stack([y.reshape(-1), x.reshape(-1)], dim=-1) + 1
    return torch.cat([torch.zeros(num_special, 2, dtype=patches.dtype, device=device), patches], dim=0)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` ``[B, heads, N, D]`` with tables ``cos``/``sin`` ``[N, D]``."""
    y_part, x_part = x.chunk(2, dim=-1)
    half = x.shape[-1] // 2
    rot_y = y_part * cos[:, :half] + _rotate_half(y_part) * sin[:, :half]
    rot_x = x_part * cos[:, half:] + _rotate_half(x_part) * sin[:, half:]
    return torch.cat([rot_y, rot_x], dim=-1)


class RoPE2D:
    """Builds the cos/sin tables of the 2D RoPE for given token positions (no parameters).

    Args:
        head_dim: attention head dimension ``D`` (divisible by 4).
        base: frequency base (VGGT: 100).
    """

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        if head_dim % 4:
            raise ValueError(f"2D RoPE needs a head_dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.base = base

    def tables(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)``, each ``[N, D]``, for positions ``[N, 2]`` (``(y, x)``, integers).

        Channels ``[:D/2]`` carry the ``y`` rotation, ``[D/2:]`` the ``x`` rotation.
        """
        half = self.head_dim // 2
        exponents = torch.arange(0, half, 2, device=positions.device).float() / half
        inv_freq = 1.0 / (self.base**exponents)
        angles = positions.float()[..., None] * inv_freq
        angles = torch.cat([angles, angles], dim=-1).to(dtype)
        angles = torch.cat([angles[:, 0], angles[:, 1]], dim=-1)
        return angles.cos(), angles.sin()
