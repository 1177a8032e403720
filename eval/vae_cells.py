"""The VAE's round trip on a generation benchmark's scored cells, per latent frame (no DiT needed).

The "VAE round trip" row of ``benchmark=motion17`` (or any procedural generation benchmark) without
sampling anything: each held-out grid's views are encoded and decoded as ``F``-frame clips
(:func:`eval.protocols.generation.vae_round_trip`) and scored on the cells no reference latent encodes,
plus the PSNR per latent frame (over the views ``!= reference view``) and of frame 0.

    python -m eval.vae_cells --vae checkpoints/base/vae.safetensors                      # motion17's scenes
    python -m eval.vae_cells --vae outputs/train_vae/<run>/export/model.safetensors --seed 0   # validation seeds 1_000_000+

``--seed`` is the benchmark's ``seed`` (held-out scene i = ``scene_seed(i, "held_out", seed)``, moving
scenes only); 100000 = ``configs/benchmark/motion17.yaml``.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

__all__ = ["vae_cells", "main"]


@torch.no_grad()
def vae_cells(weights: str, seed: int = 100000, num_scenes: int = 8, views: int = 3, frames: int = 17, size: int = 64) -> dict[str, Any]:
    """Mean PSNR (dB) of decode(encode(grid)) on the scored cells of ``num_scenes`` held-out moving
    procedural grids ``[views, frames, 3, size, size]`` (reference view 0, latent time 0), per latent
    frame (all non-reference views) and of frame 0; ``cpu_s``: process CPU seconds."""
    from eval.protocols.generation import latent_time_of_frames, scored_cells, vae_round_trip
    from eval.protocols.scoring import grid_psnr
    from eval.protocols.suites import held_out_seeds
    from fourd.data.procedural import procedural_scene
    from video4d import load_vae

    start = time.process_time()
    vae = load_vae(None, weights=weights)
    mask, latent = scored_cells(views, frames), latent_time_of_frames(frames, vae.config.temporal_factor)
    cells, per_latent = [], []
    for s in held_out_seeds(OmegaConf.create({"num_scenes": num_scenes, "seed": seed}), moving_only=True):
        gt = procedural_scene(s, views, frames, size, size, "dynamic").frames
        p = grid_psnr(vae_round_trip(vae, gt), gt)  # [V, F]
        cells.append(p[mask].mean())
        per_latent.append(torch.stack([p[1:, latent == k].mean() for k in range(int(latent.max()) + 1)]))
    per = torch.stack(per_latent).mean(0)
    return {"weights": weights, "seed": seed, "scenes": num_scenes, "cells_psnr": round(float(torch.stack(cells).mean()), 3),
            "per_latent_frame_psnr": [round(float(v), 2) for v in per], "cpu_s": round(time.process_time() - start, 1)}


def main(argv: Optional[list[str]] = None) -> None:
    """Command line entry (module docstring): prints one JSON line."""
    parser = argparse.ArgumentParser(description="VAE round trip on a generation benchmark's scored cells")
    parser.add_argument("--vae", required=True, help="VAE weights with vae_config metadata (a train_vae export)")
    parser.add_argument("--seed", type=int, default=100000, help="benchmark seed (100000 = motion17; 0 = the validation seeds 1_000_000+)")
    parser.add_argument("--num-scenes", type=int, default=8)
    parser.add_argument("--frames", type=int, default=17)
    args = parser.parse_args(argv)
    print(json.dumps(vae_cells(args.vae, args.seed, args.num_scenes, frames=args.frames)))


if __name__ == "__main__":
    main()
