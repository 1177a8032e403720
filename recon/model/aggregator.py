"""VGGT's alternating-attention aggregator, extended with temporal attention for 4D grids.

Input: frames ``[B, V, T, 3, H, W]`` in [0, 1] (the ``video4d.grid`` layout). Internally and in the
output, tokens are **timestep-major** ``[B, T, V, P, C]``: each timestep ``t`` is one VGGT
multi-view set of the ``V`` views, and ``P = 1 + R + (H/p) * (W/p)`` tokens per frame laid out
``[camera, R registers, patches (row-major)]``; ``patch_start_idx = 1 + R``.

Layers (``depth`` of them), each:

1. frame block: attention among the ``P`` tokens of one frame ``(t, v)``, 2D RoPE.
2. temporal block (4D only): attention among the ``T`` tokens that share view ``v`` and token
   index ``p`` (the same patch position, or the same special token) across all timesteps.
3. global block: attention among the ``V * P`` tokens of one timestep ``t`` (all its views), 2D RoPE.
4. temporal block (4D only), as in 2.

Temporal blocks have the hyper-parameters of a global block (q/k norm, LayerScale 0.01), no
positional encoding (all tokens of one temporal sequence share their 2D position, so a 2D RoPE would
be a no-op), and are zero-initialised (output projections zeroed), so a fresh 4D model computes
exactly the static model applied per timestep. The layer's output is
``concat(frame-stage tokens, global-stage tokens)`` (``2C`` channels), each taken after its temporal
block.

Special tokens: ``camera_token`` and ``register_token`` have two entries; entry 0 is used for the
**first view (v = 0) of every timestep**, entry 1 for all other views (VGGT's first-frame rule
applied per multi-view set).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import RopeBlock, zero_init_block
from .config import ReconstructorConfig
from .patch_embed import DinoPatchEmbed
from .rope2d import RoPE2D, token_positions

__all__ = ["Aggregator"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Aggregator(nn.Module):
    """DINOv2 patch embedding + alternating frame/global (+ temporal) attention.

    Args:
        cfg: the reconstructor config (sizes, ``temporal``, chunking, checkpointing).
    """

    def __init__(self, cfg: ReconstructorConfig) -> None:
        super().__init__()
        C, R = cfg.embed_dim, cfg.num_register_tokens
        self.patch_size = cfg.patch_size
        self.patch_start_idx = 1 + R
        self.patch_embed_chunk_size = cfg.patch_embed_chunk_size
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.camera_token = nn.Parameter(torch.randn(1, 2, 1, C) * 1e-6)
        self.register_token = nn.Parameter(torch.randn(1, 2, R, C) * 1e-6)
        self.patch_embed = DinoPatchEmbed(
            cfg.img_size, cfg.patch_size, C, cfg.patch_embed_depth, cfg.patch_embed_heads, cfg.mlp_ratio, R, init_values=1.0
        )
        self.patch_embed.gradient_checkpointing = cfg.gradient_checkpointing

        def blocks() -> nn.ModuleList:
            return nn.ModuleList(RopeBlock(C, cfg.num_heads, cfg.mlp_ratio, cfg.init_values) for _ in range(cfg.depth))

        self.frame_blocks = blocks()
        self.global_blocks = blocks()
        self.temporal = cfg.temporal
        if cfg.temporal:
            self.frame_temporal_blocks = blocks()
            self.global_temporal_blocks = blocks()
            for block in (*self.frame_temporal_blocks, *self.global_temporal_blocks):
                zero_init_block(block)
        self.rope = RoPE2D(C // cfg.num_heads, cfg.rope_freq)
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(3, 1, 1), persistent=False)

    def _embed(self, frames: torch.Tensor) -> torch.Tensor:
        frames = ((frames.float() - self._mean.float()) / self._std.float()).to(self.patch_embed.pos_embed.dtype)
        size = self.patch_embed_chunk_size or frames.shape[0]
        return torch.cat([self.patch_embed(chunk) for chunk in frames.split(size)], dim=0)

    def _run(self, block: RopeBlock, x: torch.Tensor, rope) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, rope, use_reentrant=False)
        return block(x, rope)

    def _temporal(self, block: RopeBlock, x: torch.Tensor) -> torch.Tensor:
        B, T, V, P, C = x.shape
        seq = x.permute(0, 2, 3, 1, 4).reshape(B * V * P, T, C)
        seq = self._run(block, seq, None)
        return seq.reshape(B, V, P, T, C).permute(0, 3, 1, 2, 4)

    def forward(self, images: torch.Tensor, keep_layers: Iterable[int]) -> list[torch.Tensor]:
        """Run the backbone.

        Args:
            images: ``[B, V, T, 3, H, W]`` in [0, 1], H and W multiples of the patch size.
            keep_layers: indices of the layers whose outputs are returned.
        Returns:
            tokens ``[B, T, V, P, 2C]`` of each kept layer, in ascending layer order (timestep-major;
            see module doc). A list, not a dict keyed by layer: DeepSpeed ZeRO-3's module hooks
            read a dict output's keys as attribute names.
        """
        B, V, T, _, H, W = images.shape
        gh, gw = H // self.patch_size, W // self.patch_size
        frames = images.transpose(1, 2).reshape(B * T * V, 3, H, W)
        patches = self._embed(frames).reshape(B, T, V, gh * gw, -1)
        which = (torch.arange(V, device=images.device) > 0).long()
        special = torch.cat([self.camera_token[0, which], self.register_token[0, which]], dim=1)
        x = torch.cat([special.to(patches.dtype).expand(B, T, -1, -1, -1), patches], dim=3)
        P, C = x.shape[3], x.shape[4]
        cos, sin = self.rope.tables(token_positions(gh, gw, self.patch_start_idx, device=images.device), x.dtype)
        frame_rope, global_rope = (cos, sin), (cos.repeat(V, 1), sin.repeat(V, 1))
        keep = set(keep_layers)
        outputs: list[torch.Tensor] = []
        for i in range(len(self.frame_blocks)):
            x = self._run(self.frame_blocks[i], x.reshape(B * T * V, P, C), frame_rope).reshape(B, T, V, P, C)
            if self.temporal:
                x = self._temporal(self.frame_temporal_blocks[i], x)
            frame_out = x
            x = self._run(self.global_blocks[i], x.reshape(B * T, V * P, C), global_rope).reshape(B, T, V, P, C)
            if self.temporal:
                x = self._temporal(self.global_temporal_blocks[i], x)
            if i in keep:
                outputs.append(torch.cat([frame_out, x], dim=-1))
        return outputs
