"""VBench-style temporal flickering (Huang et al., VBench / VBench++ "Temporal Flickering").

VBench reads each (static-camera) video as 8-bit frames, takes the mean absolute difference between
consecutive frames over all pixels and channels, averages it over the frame pairs, and scores
``(255 - mean) / 255`` (1 = no change between frames; higher is better). Here frames come as
floats in [0, 1]; with ``quantize=True`` (default) they are first rounded to 8 bits as a video file
would hold them, so the numbers match VBench on the same frames.
"""
from __future__ import annotations

import torch

__all__ = ["temporal_flickering", "grid_flickering"]


def temporal_flickering(videos: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Flickering score per video ``[N]`` (float64, in [0, 1], higher = steadier) of ``videos [N, F, 3, H, W]`` in [0, 1], F >= 2."""
    if videos.dim() != 5 or videos.shape[1] < 2:
        raise ValueError(f"temporal_flickering expects videos [N, F >= 2, C, H, W] in [0, 1], got {list(videos.shape)}")
    x = videos.double().clamp(0, 1) * 255
    if quantize:
        x = x.round()
    mae = (x[:, 1:] - x[:, :-1]).abs().flatten(2).mean(2)  # [N, F-1] per consecutive pair, 0..255
    return (255 - mae.mean(1)) / 255


def grid_flickering(grids: torch.Tensor, quantize: bool = True) -> torch.Tensor:
    """Flickering of every fixed-view video of ``grids [B, V, T, 3, H, W]`` -> ``[B, V]`` (average as you report)."""
    if grids.dim() != 6:
        raise ValueError(f"grid_flickering expects grids [B, V, T, 3, H, W], got {list(grids.shape)}")
    B, V = grids.shape[:2]
    return temporal_flickering(grids.flatten(0, 1), quantize).reshape(B, V)
