"""Export of a 4D reconstruction: per-timestep PLYs, cameras.json and the render videos in one folder
(the file formats themselves live in :mod:`fourd.formats`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from fourd.formats import save_cameras_json, save_ply, save_video

__all__ = ["export_sequence"]


def export_sequence(
    out_dir: str,
    gaussians: Sequence[Mapping[str, torch.Tensor]],
    cameras: Mapping,
    renders: Mapping[str, torch.Tensor],
    fps: float = 16.0,
) -> list[str]:
    """Write a 4D reconstruction to ``out_dir`` (any fsspec URL); returns the URLs written.

    Args:
        gaussians: per timestep a mapping with the keyword arguments of :func:`save_ply`
            (``means [N, 3]``, ``quats [N, 4]``, ``scales [N, 3]``, ``opacities [N]``, ``colors [N, 3]``),
            written as ``gaussians_t{t:04d}.ply``.
        cameras: the keyword arguments of :func:`save_cameras_json` (``extrinsics``, ``intrinsics``,
            ``width``, ``height``), written as ``cameras.json``.
        renders: name -> frames ``[T, H, W, 3]`` in [0, 1] made by the caller, written as ``{name}.mp4``
            (normally ``novel_views`` and ``novel_times``).
    """
    base = out_dir.rstrip("/")
    written = []
    for t, g in enumerate(gaussians):
        url = f"{base}/gaussians_t{t:04d}.ply"
        save_ply(url, **g)
        written.append(url)
    url = f"{base}/cameras.json"
    save_cameras_json(url, **cameras)
    written.append(url)
    for name, frames in renders.items():
        if not name.replace("_", "").isalnum():
            raise ValueError(f"render name {name!r} must be letters, digits and underscores (it becomes a file name)")
        url = f"{base}/{name}.mp4"
        save_video(url, frames, fps)
        written.append(url)
    return written
