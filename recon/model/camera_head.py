"""VGGT's camera head: iterative refinement of the pose encoding from camera tokens.

Facts followed: the camera token of the last aggregator layer (``2C`` channels) is normalised
(``token_norm``) and refined for ``num_iterations`` (4) rounds. Each round embeds the current
(detached) pose encoding (an all-zero learned ``empty_pose_tokens`` in the first round), turns it into
AdaLN shift/scale/gate (``poseLN_modulation`` = SiLU + Linear), modulates the tokens
``gate * (LN(x) * (1 + scale) + shift) + x``, runs the trunk (pre-norm blocks with LayerScale 0.01,
LayerNorm eps 1e-5, attention across the views of one set), and adds
``pose_branch(trunk_norm(.))`` to the encoding. Each round's activated encoding is returned.
"""
from __future__ import annotations

import torch
from timm.layers import Mlp
from timm.models.vision_transformer import Block
from torch import nn

from .pose_encoding import POSE_ENCODING_DIM, activate_pose_encoding

__all__ = ["CameraHead"]


class CameraHead(nn.Module):
    """Camera tokens -> pose encodings.

    Args:
        dim_in: token channels (``2 * embed_dim``). trunk_depth: trunk blocks. num_heads: trunk heads.
        mlp_ratio: trunk MLP ratio. init_values: trunk LayerScale init.
    """

    def __init__(self, dim_in: int, trunk_depth: int = 4, num_heads: int = 16, mlp_ratio: float = 4.0, init_values: float = 0.01) -> None:
        super().__init__()
        self.empty_pose_tokens = nn.Parameter(torch.zeros(1, 1, POSE_ENCODING_DIM))
        self.trunk = nn.Sequential(
            *(
                Block(dim_in, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, init_values=init_values, norm_layer=nn.LayerNorm)
                for _ in range(trunk_depth)
            )
        )
        self.token_norm = nn.LayerNorm(dim_in)
        self.trunk_norm = nn.LayerNorm(dim_in)
        self.embed_pose = nn.Linear(POSE_ENCODING_DIM, dim_in)
        self.poseLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim_in, 3 * dim_in))
        self.adaln_norm = nn.LayerNorm(dim_in, elementwise_affine=False, eps=1e-6)
        self.pose_branch = Mlp(dim_in, dim_in // 2, POSE_ENCODING_DIM)

    def forward(self, camera_tokens: torch.Tensor, num_iterations: int = 4) -> list[torch.Tensor]:
        """``camera_tokens`` ``[N, S, dim_in]`` (``S`` views of one multi-view set) -> list of
        ``num_iterations`` activated pose encodings ``[N, S, 9]`` (the last is the prediction)."""
        tokens = self.token_norm(camera_tokens)
        N, S, _ = tokens.shape
        encoding = None
        outputs = []
        for _ in range(num_iterations):
            pose_in = self.empty_pose_tokens.expand(N, S, -1) if encoding is None else encoding.detach()
            shift, scale, gate = self.poseLN_modulation(self.embed_pose(pose_in)).chunk(3, dim=-1)
            x = gate * (self.adaln_norm(tokens) * (1 + scale) + shift) + tokens
            delta = self.pose_branch(self.trunk_norm(self.trunk(x)))
            encoding = delta if encoding is None else encoding + delta
            outputs.append(activate_pose_encoding(encoding))
        return outputs
