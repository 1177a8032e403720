"""Ablation runners: train each variant with the project's training entry, then evaluate it; one table.

- ``ablation_attention`` (paper Table 2 / Fig. 3): the DiT's attention variant (``fused`` vs
  ``sequential`` vs ``parallel_blend`` / ``parallel_linear``), each trained from the same init with
  the same budget (``configs/train_video4d.yaml`` + ``benchmark.train_overrides``), then the
  generation protocol on held-out synthetic scenes (one row per variant, plus the baselines).
- ``ablation_recon`` (paper Table 6): the reconstructor with / without temporal attention and camera
  token replacement (``configs/train_recon.yaml`` at ``stage=dynamic`` + ``benchmark.train_overrides``),
  then dynamic NVS on held-out synthetic scenes with test-time cameras (oracle table alongside).

Training runs go to ``<out_dir>/train/<variant>`` through :func:`fourd.train.hydra_app.run_task`
(``launcher=plain``); the exported ``model.safetensors`` is what gets evaluated.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from eval.protocols import datasets
from eval.protocols.scoring import Scoreboard
from eval.protocols.suites import Models, generation_table, held_out_seeds, nvs_tables

__all__ = ["ABLATIONS", "compose_training", "train_variant", "attention_ablation", "recon_ablation"]

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def compose_training(config_name: str, overrides: list[str]) -> DictConfig:
    """The composed training config ``configs/<config_name>.yaml`` with ``overrides`` (Hydra syntax);
    works inside a running Hydra app (launch/eval.py) and outside it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def train_variant(train_cfg: DictConfig, make_task: Callable[[Any], Any], run_dir: str) -> tuple[str, Any]:
    """Train with :func:`fourd.train.hydra_app.run_task`; returns ``(exported full weights URL, task)``."""
    from fourd.train.hydra_app import run_task

    made = {}

    def build(env):
        made["task"] = make_task(env)
        return made["task"]

    result = run_task(train_cfg, build, run_dir)
    full = [p for p in result.exports if p.endswith("model.safetensors")]
    if not full:
        raise ValueError(f"training in {run_dir} exported no full model.safetensors; keep train.export=full")
    return full[0], made["task"]


def _run_dir(out_dir: str, variant: str) -> str:
    return os.path.join(out_dir, "train", re.sub(r"[^A-Za-z0-9_.-]+", "_", variant))


def attention_ablation(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """Train the DiT once per ``benchmark.variants`` and score generation on held-out synthetic grids."""
    from fourd.data.procedural import procedural_scene
    from video4d import load_dit
    from video4d.train_task import VideoTask

    b = cfg.benchmark
    board = None
    for i, variant in enumerate(b.variants):
        overrides = ["launcher=plain", f"model.attention_variant={variant}", *b.train_overrides]
        train_cfg = compose_training("train_video4d", overrides)
        weights, task = train_variant(train_cfg, lambda env, c=train_cfg: VideoTask(c, env), _run_dir(out_dir, variant))
        model_cfg = {k: v for k, v in OmegaConf.to_container(train_cfg.model, resolve=True).items()
                     if k not in ("weights", "trainable", "init", "init_seed")}
        trained = Models(cfg)
        trained.dit = load_dit(model_cfg, weights=weights, device=trained.device).eval()
        trained.vae = task.vae.to(trained.device)
        d = train_cfg.data
        frames = int(train_cfg.schedule.frames[-1][1])
        scenes = (procedural_scene(seed, d.views, frames, d.height, d.width, "dynamic") for seed in held_out_seeds(b, moving_only=True))
        clips = (datasets.Clip(s.name, s.frames, s.extrinsics, s.intrinsics, s.depth) for s in scenes)
        board = generation_table(cfg, trained, clips, board, method=f"{variant} ({train_cfg.train.steps} steps)", baselines=i == len(b.variants) - 1)
    return {"generation (attention ablation)": board}


def recon_ablation(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """Train the reconstructor once per ``benchmark.variants`` (name -> recon_model overrides) and score
    dynamic NVS on held-out synthetic scenes."""
    from fourd.data import generate_scene
    from recon.model import load_reconstructor
    from recon.train_task import LOADER_KEYS, ReconTask, split_views

    b = cfg.benchmark
    boards: dict[str, Scoreboard] = {}
    for i, (variant, settings) in enumerate(b.variants.items()):
        overrides = ["launcher=plain", "stage=dynamic", "scene_export.enabled=false",
                     *[f"recon_model.{k}={v}" for k, v in settings.items()], *b.train_overrides]
        train_cfg = compose_training("train_recon", overrides)
        weights, _ = train_variant(train_cfg, lambda env, c=train_cfg: ReconTask(c, env), _run_dir(out_dir, variant))
        node = OmegaConf.to_container(train_cfg.recon_model, resolve=True)
        trained = Models(cfg)
        trained.recon = load_reconstructor({k: v for k, v in node.items() if k not in LOADER_KEYS}, weights=weights).to(trained.device).eval()
        d = train_cfg.recon_data
        inputs, targets = split_views(d.input_views + d.target_views, d.input_views)
        scenes = (generate_scene(seed, d.input_views + d.target_views, d.num_frames, d.height, d.width, "dynamic", arc_degrees=d.arc_degrees)
                  for seed in held_out_seeds(b))
        clips = ((datasets.Clip(s.name, s.frames, s.extrinsics, s.intrinsics), inputs, targets, s.depth) for s in scenes)
        nvs_tables(cfg, trained, clips, boards, suffix=" (reconstructor ablation)", method=variant, baselines=i == len(b.variants) - 1)
    return boards


ABLATIONS: dict[str, Callable[[DictConfig, Models, str], dict[str, Scoreboard]]] = {
    "ablation_attention": attention_ablation, "ablation_recon": recon_ablation,
}
