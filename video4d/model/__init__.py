"""The Wan2.1 DiT of the 4D video model, key-compatible with the official checkpoints.

``load_dit(config, weights=None, init="official", device="cpu", dtype=float32)`` builds a
:class:`WanDiT4D`; its forward is
``model(latents [B, V, T, C, h, w], timestep [B] (sigma * 1000), context [B, L, text_dim],
reference: ReferenceLatents | None) -> velocity [B, V, T, C, h, w]``.
"""
from video4d.model.config import PRESETS, DiTConfig, resolve_config
from video4d.model.keymap import from_diffusers, to_diffusers
from video4d.model.loading import load_dit, load_weights
from video4d.model.trainable import DEFAULT_TRAINABLE, TrainableCounts, select_trainable
from video4d.model.wan import WanDiT4D

__all__ = [
    "DiTConfig",
    "PRESETS",
    "resolve_config",
    "WanDiT4D",
    "load_dit",
    "load_weights",
    "to_diffusers",
    "from_diffusers",
    "select_trainable",
    "TrainableCounts",
    "DEFAULT_TRAINABLE",
]
