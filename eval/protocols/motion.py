"""A generation benchmark that needs 4D: long grids of moving objects, with the motion stated.

Held-out procedural scenes (:func:`fourd.data.procedural.procedural_scene`, kind ``dynamic``: V fixed
cameras on an arc, objects that slide, bounces or spin; seeds >= 1,000,000, never trained on) at
``benchmark.generation`` (3 views x 17 frames = 5 latent frames by default, ``configs/benchmark/motion17.yaml``).
Only scenes with at least one moving object are drawn. Over 17 frames (2 s at 8 fps) the objects travel
far enough that the same view's freeze-time frame is no longer almost the answer, which it is in the
5-frame grids of ``benchmark=shipped``.

Tables (:func:`eval.protocols.suites.motion`):

- **generation (held-out cells)**: the model rows and the baselines of
  :func:`eval.protocols.suites.generation_table` (VAE round trip, copy same view, copy same time, the
  same-view copy through the VAE), plus **per-pixel best of the two copies** (:func:`best_of_copies`),
  an *oracle*: it picks, per pixel, whichever copy is closer to the ground truth, so it uses the answer
  and is never a margin's reference. Margins are over the better of the two copies (non-oracle); the
  monocular row also gets ``margin_same_time_db``, its margin over copying the input video's frame at
  the same time (the only copy baseline monocular mode has the inputs for).
- **motion per frame index**: for each pixel frame ``t >= 1`` over the scored views (``!= reference.view``),
  the PSNR / SSIM of the freeze-time copy ``gt[v, 0]``, and :func:`motion_stats`: the mean absolute
  change ``|x_t - x_0|`` (8-bit levels, mean over RGB) inside the moving objects' masks at frame 0 or
  ``t``, and the share of the image those masks cover.
"""
from __future__ import annotations

from typing import Iterable

import torch

from eval.protocols import datasets
from eval.protocols.generation import latent_time_of_frames
from eval.protocols.scoring import Scoreboard

__all__ = ["ORACLE", "MOTION_TABLE", "best_of_copies", "moving_masks", "motion_stats", "motion_table"]

ORACLE = "per-pixel best of the two copies (oracle: picks with the ground truth)"
MOTION_TABLE = "motion per frame index (freeze-time copy PSNR/SSIM; change inside the moving objects' masks)"


def best_of_copies(gt: torch.Tensor, copies: Iterable[torch.Tensor]) -> torch.Tensor:
    """Per pixel, the copy with the smallest squared RGB error to ``gt``: ``[V, T, 3, H, W]`` (an oracle)."""
    stack = torch.stack(list(copies))  # [K, V, T, 3, H, W]
    best = (stack - gt).pow(2).sum(3, keepdim=True).argmin(0)  # [V, T, 1, H, W]
    return stack.gather(0, best[None].expand(1, *gt.shape))[0]


def moving_masks(masks: torch.Tensor, moving_ids: Iterable[int]) -> torch.Tensor:
    """Object-id masks ``[V, T, H, W]`` (object k has id k + 1) -> bool ``[V, T, H, W]``: pixels of the
    objects whose ids are ``moving_ids``."""
    ids = torch.tensor(sorted(moving_ids), dtype=masks.dtype)
    return torch.isin(masks, ids)


def motion_stats(frames: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For frames ``[V, T, 3, H, W]`` in [0, 1] and moving masks ``[V, T, H, W]``: per cell ``[V, T]``
    the mean ``|x_t - x_0|`` in 8-bit levels (mean over RGB) over the pixels moving at frame 0 or ``t``
    (0 where none), and the share of the image those pixels cover."""
    region = moving | moving[:, :1]  # [V, T, H, W]
    change = (frames - frames[:, :1]).abs().mean(2) * 255  # [V, T, H, W]
    count = region.flatten(2).sum(-1)
    mean_change = (change * region).flatten(2).sum(-1) / count.clamp(min=1)
    return mean_change, count.float() / region[0, 0].numel()


def motion_table(board: Scoreboard, clips: list[tuple[datasets.Clip, torch.Tensor]], ref_view: int) -> None:
    """Rows ``frame t (latent k)`` for t >= 1 (module docstring), over the views ``!= ref_view``."""
    for clip, moving in clips:
        gt = clip.frames
        views = [v for v in range(gt.shape[0]) if v != ref_view]
        latent = latent_time_of_frames(gt.shape[1])
        change, share = motion_stats(gt, moving)
        for t in range(1, gt.shape[1]):
            row = f"frame {t} (latent {int(latent[t])})"
            board.add_images(row, gt[views, 0], gt[views, t])
            board.add_scalar(row, "motion_l1_8bit", float(change[views, t].mean()))
            board.add_scalar(row, "moving_share", float(share[views, t].mean()))

