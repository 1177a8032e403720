"""VGGT's track head, CARRIED ONLY FOR CHECKPOINT COMPATIBILITY.

Point tracking is not part of this system: these modules exist so that the static ``"vggt-1b"``
layout equals the official checkpoint key-for-key and its track weights load (and can be saved back)
unchanged. They have no forward pass. The 4D presets disable the head (``enable_track=False``) and
the loader reports the checkpoint's ``track_head.*`` keys as dropped.

Layout (keys and shapes of the official head): ``feature_extractor`` = a feature-only DPT head
(``track_features`` channels, no positional embedding); ``tracker`` = query tokens, a correlation
MLP, an "EfficientUpdateFormer" (time blocks, virtual-track self-attention blocks and
point<->virtual cross-attention blocks built on ``nn.MultiheadAttention``, tanh-GELU MLPs,
LayerNorm eps 1e-6) and small norm/update/visibility/confidence layers.
"""
from __future__ import annotations

from functools import partial

import torch
from timm.layers import Mlp
from torch import nn

from .config import ReconstructorConfig
from .dpt import DPTHead

__all__ = ["TrackHead"]

_norm = partial(nn.LayerNorm, eps=1e-6)


class _AttnBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = _norm(dim)
        self.norm2 = _norm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = Mlp(dim, 4 * dim, act_layer=partial(nn.GELU, approximate="tanh"))


class _CrossAttnBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = _norm(dim)
        self.norm_context = _norm(dim)
        self.norm2 = _norm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = Mlp(dim, 4 * dim, act_layer=partial(nn.GELU, approximate="tanh"))


class _UpdateFormer(nn.Module):
    def __init__(self, input_dim: int, hidden: int, output_dim: int, depth: int, heads: int, virtual_tracks: int) -> None:
        super().__init__()
        self.virual_tracks = nn.Parameter(torch.randn(1, virtual_tracks, 1, hidden))
        self.input_norm = nn.LayerNorm(input_dim)
        self.input_transform = nn.Linear(input_dim, hidden)
        self.output_norm = nn.LayerNorm(hidden)
        self.flow_head = nn.Linear(hidden, output_dim)
        self.time_blocks = nn.ModuleList(_AttnBlock(hidden, heads) for _ in range(depth))
        self.space_virtual_blocks = nn.ModuleList(_AttnBlock(hidden, heads) for _ in range(depth))
        self.space_point2virtual_blocks = nn.ModuleList(_CrossAttnBlock(hidden, heads) for _ in range(depth))
        self.space_virtual2point_blocks = nn.ModuleList(_CrossAttnBlock(hidden, heads) for _ in range(depth))


class _Tracker(nn.Module):
    def __init__(self, cfg: ReconstructorConfig) -> None:
        super().__init__()
        latent = cfg.tracker_latent_dim
        corr_dim = cfg.tracker_corr_levels * (2 * cfg.tracker_corr_radius + 1) ** 2
        transformer_dim = 3 * latent + 4
        self.query_ref_token = nn.Parameter(torch.zeros(1, 2, transformer_dim))
        self.corr_mlp = Mlp(corr_dim, cfg.tracker_hidden, latent)
        self.updateformer = _UpdateFormer(
            transformer_dim, cfg.tracker_hidden, latent + 2, cfg.tracker_depth, cfg.tracker_heads, cfg.tracker_virtual_tracks
        )
        self.fmap_norm = nn.LayerNorm(latent)
        self.ffeat_norm = nn.GroupNorm(1, latent)
        self.ffeat_updater = nn.Sequential(nn.Linear(latent, latent), nn.GELU())
        self.vis_predictor = nn.Sequential(nn.Linear(latent, 1))
        self.conf_predictor = nn.Sequential(nn.Linear(latent, 1))


class TrackHead(nn.Module):
    """Parameter container matching the official track head (no forward; see module docstring)."""

    def __init__(self, cfg: ReconstructorConfig) -> None:
        super().__init__()
        self.feature_extractor = DPTHead(
            2 * cfg.embed_dim,
            cfg.patch_size,
            features=cfg.track_features,
            out_channels=cfg.dpt_out_channels,
            layers=cfg.dpt_layers,
            pos_embed=False,
            feature_only=True,
        )
        self.tracker = _Tracker(cfg)

    def forward(self, *args, **kwargs):
        """Not available: tracking is not part of this system (weights carried for checkpoints only)."""
        raise NotImplementedError("VGGT's track head is carried for checkpoint compatibility only; tracking is not implemented")
