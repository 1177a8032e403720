"""DINOv2 ViT patch embedding with register tokens (VGGT's ``aggregator.patch_embed``).

Facts followed (DINOv2 ViT-L/14-reg4 as used by VGGT): tokens ``[cls, registers (4), patches]``; the
learned positional embedding covers ``cls + 37 x 37`` patches (518 px) and is added to cls and
patch tokens (not to registers); for other image sizes the patch part is resized bicubically with
antialias (fp32); blocks are pre-norm with LayerNorm eps 1e-6, qkv bias, LayerScale (init 1.0) and
exact GELU; the final ``norm`` is applied and only the normalised patch tokens are returned.
``mask_token`` is DINOv2's masked-image-modelling token: it is never used here and kept frozen,
only so that checkpoints load key-for-key.
"""
from __future__ import annotations

from functools import partial

import torch
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["DinoPatchEmbed"]


class DinoPatchEmbed(nn.Module):
    """DINOv2-with-registers encoder mapping images to normalised patch tokens.

    Args:
        img_size: default (square) image size in pixels; sets the positional-embedding grid.
        patch_size: patch size in pixels. embed_dim, depth, num_heads, mlp_ratio: ViT sizes.
        num_register_tokens: register tokens. init_values: LayerScale init.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        num_register_tokens: int = 4,
        init_values: float = 1.0,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.gradient_checkpointing = False
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid + 1, embed_dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim), requires_grad=False)
        self.patch_embed = PatchEmbed(img_size, patch_size, 3, embed_dim, strict_img_size=False)
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, init_values=init_values, norm_layer=norm)
            for _ in range(depth)
        )
        self.norm = norm(embed_dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        nn.init.normal_(self.register_tokens, std=1e-6)

    def interpolate_pos_embed(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Positional embedding ``[1, 1 + grid_h * grid_w, C]`` for a ``grid_h x grid_w`` patch grid.

        Returns the stored table at the default grid, else its patch part resized bicubically with
        antialias in fp32 (cls position unchanged), cast back to the table's dtype (timm's
        ``resample_abs_pos_embed``, the same operation as DINOv2's ``interpolate_pos_encoding``).
        """
        return resample_abs_pos_embed(self.pos_embed, [grid_h, grid_w], num_prefix_tokens=1, interpolation="bicubic", antialias=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` ``[F, 3, H, W]`` (ImageNet-normalised; H, W multiples of the patch size) ->
        normalised patch tokens ``[F, (H/p) * (W/p), C]`` in row-major patch order."""
        n, _, H, W = images.shape
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        x = x + self.interpolate_pos_embed(H // self.patch_size, W // self.patch_size)
        x = torch.cat([x[:, :1], self.register_tokens.expand(n, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x)[:, 1 + self.register_tokens.shape[1]:]
