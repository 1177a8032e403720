"""Ablation runners: train each variant with the project's training entry, then evaluate it; one table.

- ``ablation_attention`` (paper Table 2 / Fig. 3): the DiT's attention variant (``fused`` vs
  ``sequential`` vs ``parallel_blend`` / ``parallel_linear``), each trained from the same init with
  the same budget (``configs/train_video4d.yaml`` + ``benchmark.train_overrides``), then the
  generation protocol on held-out synthetic scenes (one row per variant, plus the baselines).
- ``ablation_recon`` (paper Table 6): the reconstructor with / without temporal attention and camera
  token replacement (``configs/train_recon.yaml`` at ``stage=dynamic`` + ``benchmark.train_overrides``),
  then dynamic NVS on held-out synthetic scenes with test-time cameras (oracle table alongside).

Variants are ``row name -> settings`` (:func:`variant_plan`): model field overrides plus optional
``train_config`` (another training config), ``overrides`` (more Hydra overrides) and ``weights`` (an
existing export evaluated as it is: no training). Training runs go to ``<out_dir>/train/<variant>``
through :func:`fourd.train.hydra_app.run_task` (``launcher=plain``); the exported
``model.safetensors`` is what gets evaluated.
"""
from __future__ import annotations

import os
import re
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from eval.protocols import datasets
from eval.protocols.models import model_config
from eval.protocols.scoring import Scoreboard
from eval.protocols.suites import Models, generation_table, held_out_seeds, nvs_tables
from fourd.train.hydra_app import compose_training

__all__ = ["ABLATIONS", "VARIANT_KEYS", "variant_plan", "train_variant", "attention_ablation", "recon_ablation"]


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


VARIANT_KEYS = ("weights", "train_config", "overrides")  # variant keys that are not model field overrides


def variant_plan(settings: Any, prefix: str, default_config: str, common: list[str]) -> tuple[str, Optional[str], list[str], dict]:
    """One ablation variant: ``settings`` maps model fields to values (each becomes the Hydra override
    ``<prefix>.<field>=<value>``) plus the optional keys ``train_config`` (training config name, default
    ``default_config``), ``weights`` (an existing export to evaluate: no training) and ``overrides``
    (more Hydra overrides). Returns ``(train config name, weights or None, overrides after common,
    model field overrides)``."""
    settings = OmegaConf.to_container(settings, resolve=True) if isinstance(settings, DictConfig) else dict(settings or {})
    fields = {k: v for k, v in settings.items() if k not in VARIANT_KEYS}
    overrides = ["launcher=plain", *common, *[f"{prefix}.{k}={_hydra_value(v)}" for k, v in fields.items()], *settings.get("overrides", [])]
    return settings.get("train_config") or default_config, settings.get("weights"), overrides, fields


def _hydra_value(value: Any) -> str:
    """A Python value as a Hydra override value (lists as ``[a,b]``, booleans lower case)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(repr(v) if isinstance(v, str) else _hydra_value(v) for v in value) + "]"  # quoted: "*" patterns
    return "null" if value is None else str(value)


def attention_ablation(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """One generation row per ``benchmark.variants`` entry (row name -> ``model`` field overrides, e.g.
    ``{attention_variant: sequential}`` or ``{trainable: all}``, see :func:`variant_plan`): trained with
    ``benchmark.train_config`` + ``train_overrides`` + its overrides, or, with ``weights``, that export
    evaluated as it is (config from its metadata + the field overrides; VAE of the training config).
    Scored on held-out synthetic grids at the training config's data size (views, last
    ``schedule.frames``, height x width)."""
    from fourd.data.procedural import procedural_scene
    from video4d import load_dit, load_vae
    from video4d.train_task import LOADER_KEYS, VideoTask

    b = cfg.benchmark
    board = None
    variants = list(b.variants.items())
    for i, (variant, settings) in enumerate(variants):
        config_name, weights, overrides, fields = variant_plan(settings, "model", b.get("train_config") or "train_video4d", list(b.train_overrides))
        train_cfg = compose_training(config_name, overrides)
        trained = Models(cfg)
        if weights is None:
            if train_cfg.data.get("encoded"):  # pre-encoded training data (e.g. train_dit_4d_tiny): encoded once, shared by the rows
                from video4d.precompute import precompute

                precompute(train_cfg)
            weights, task = train_variant(train_cfg, lambda env, c=train_cfg: VideoTask(c, env), _run_dir(out_dir, variant))
            model_cfg = {k: v for k, v in OmegaConf.to_container(train_cfg.model, resolve=True).items()
                         if k not in LOADER_KEYS}
            trained.vae, row = task.vae.to(trained.device), f"{variant} ({train_cfg.train.steps} steps)"
        else:
            model_cfg = model_config(None, {k: v for k, v in fields.items() if k not in LOADER_KEYS},
                                     weights, "dit_config", "load_dit")
            trained.vae = load_vae(train_cfg.vae.config, weights=train_cfg.vae.weights, device=trained.device).eval()
            row = f"{variant} (weights {os.path.basename(weights)})"
        trained.dit = load_dit(model_cfg, weights=weights, device=trained.device).eval()
        d = train_cfg.data
        frames = int(train_cfg.schedule.frames[-1][1])
        scenes = (procedural_scene(seed, d.views, frames, d.height, d.width, "dynamic") for seed in held_out_seeds(b, moving_only=True))
        clips = (datasets.Clip(s.name, s.frames, s.extrinsics, s.intrinsics, s.depth, caption=s.caption) for s in scenes)
        board = generation_table(cfg, trained, clips, board, method=row, baselines=i == len(variants) - 1)
    return {"generation (attention ablation)": board}


def recon_ablation(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """Train the reconstructor once per ``benchmark.variants`` (name -> ``recon_model`` overrides, plus
    the optional ``weights`` / ``train_config`` / ``overrides`` of :func:`variant_plan`; default config
    ``train_recon`` at ``stage=dynamic``) and score dynamic NVS on held-out synthetic scenes."""
    from fourd.data import generate_scene
    from recon.model import load_reconstructor
    from recon.train_task import LOADER_KEYS, ReconTask, split_views

    b = cfg.benchmark
    boards: dict[str, Scoreboard] = {}
    for i, (variant, settings) in enumerate(b.variants.items()):
        common = ["stage=dynamic", "scene_export.enabled=false", *b.train_overrides]
        config_name, weights, overrides, fields = variant_plan(settings, "recon_model", b.get("train_config") or "train_recon", common)
        train_cfg = compose_training(config_name, overrides)
        node = OmegaConf.to_container(train_cfg.recon_model, resolve=True)
        config = {k: v for k, v in node.items() if k not in LOADER_KEYS}
        if weights is None:
            weights, _ = train_variant(train_cfg, lambda env, c=train_cfg: ReconTask(c, env), _run_dir(out_dir, variant))
        else:
            config = model_config(None, {k: v for k, v in fields.items() if k not in LOADER_KEYS}, weights, "recon_config", "load_reconstructor")
        trained = Models(cfg)
        trained.recon = load_reconstructor(config, weights=weights).to(trained.device).eval()
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
