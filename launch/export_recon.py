"""Export one reconstructed scene: per-timestep 3DGS PLYs, cameras.json and novel-view / novel-time mp4s.

Used by ``launch/train_recon.py`` after training and in ``mode=export``::

    python launch/train_recon.py mode=export recon_model.weights=outputs/.../export/model.safetensors \
        scene_export.scene=/data/generated/scene_0001 scene_export.out=/tmp/scene_0001

Everything is in the predicted frame of the reconstructor (no ground truth is needed); the files
written and their frames of reference are those of :func:`recon.inference.export_scene`.
"""
from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig, OmegaConf

from recon.inference import export_scene, fit_frames
from recon.train_task import LOADER_KEYS, ReconTask, split_views

__all__ = ["export_from_config"]

log = logging.getLogger(__name__)


def _scene_frames(cfg: DictConfig, task: ReconTask) -> torch.Tensor:
    """Input frames ``[V, T, 3, H, W]`` of the scene named by ``scene_export`` (see configs/train_recon.yaml)."""
    node, data = cfg.scene_export, cfg.recon_data
    if node.scene is None:
        sample = task.scenes.sample(node.index, int(data.num_frames), False, held_out=True)
        inputs, _ = split_views(sample["frames"].shape[0], data.input_views)
        return sample["frames"][inputs]
    from fourd.data import read_scene

    frames = read_scene(node.scene, with_depth=False, with_masks=False).frames
    if node.views is not None:
        frames = frames[list(node.views)]
    return fit_frames(frames, (data.height, data.width))


def export_from_config(cfg: DictConfig, weights: str, out_dir: str) -> list[str]:
    """Load the reconstructor from ``weights`` (config ``recon_model`` minus its loader keys) and export
    the configured scene to ``out_dir``; returns the URLs written."""
    from fourd.train.distributed import dist_env
    from recon.model import load_reconstructor

    node = OmegaConf.to_container(cfg.recon_model, resolve=True)
    for key in LOADER_KEYS:
        node.pop(key)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_reconstructor(node, weights=weights).to(device).eval()
    frames = _scene_frames(cfg, ReconTask(cfg, dist_env())).to(device)
    e = cfg.scene_export
    written = export_scene(model, frames, out_dir, e.path_frames, e.time, e.fps, list(cfg.render.background))
    log.info("exported scene (%d views, %d timesteps) to %s", frames.shape[0], frames.shape[1], out_dir)
    return written
