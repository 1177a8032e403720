"""DPT dense-prediction head as used by VGGT (depth, point, Gaussian heads, tracker features).

Facts followed (VGGT's DPT head): per read layer, patch tokens -> shared LayerNorm -> 1x1 conv to
``out_channels[i]`` -> (uv sin/cos positional embedding x 0.1) -> resize (transposed conv x4, x2,
identity, strided conv /2) -> 3x3 conv to ``features`` (no bias, "layer{i}_rn"); fusion blocks
``refinenet4 .. refinenet1`` (residual conv units, bilinear upsampling with align_corners, 1x1 out
conv); ``output_conv1`` (3x3); bilinear resize to the image size; positional embedding again; then
(unless ``feature_only``) ``output_conv2`` = 3x3 conv -> ReLU -> 1x1 conv to ``output_dim``.

The official residual unit uses an in-place ReLU on its input, so its skip connection adds
``relu(x)``, not ``x``; this module computes that effective function explicitly.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DPTHead", "uv_position_embedding"]


def _sincos(pos: torch.Tensor, dim: int, omega_0: float) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2.0)
    omega = 1.0 / omega_0**omega
    angles = pos.reshape(-1).double()[:, None] * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def uv_position_embedding(height: int, width: int, channels: int, aspect_ratio: float, device=None, omega_0: float = 100.0) -> torch.Tensor:
    """VGGT's DPT positional embedding ``[channels, height, width]`` (fp32).

    A uv grid spanning ``+-aspect/diag`` horizontally and ``+-1/diag`` vertically (``diag =
    sqrt(aspect^2 + 1)``, endpoints pulled in by ``(n - 1) / n``) embedded with sin/cos of
    ``channels / 2`` channels per axis (u first), frequencies ``omega_0^(-k / (channels / 4))``.
    """
    diag = (aspect_ratio**2 + 1) ** 0.5
    span_x, span_y = aspect_ratio / diag, 1.0 / diag
    u = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width, device=device)
    v = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, height, device=device)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    emb = torch.cat([_sincos(uu, channels // 2, omega_0), _sincos(vv, channels // 2, omega_0)], dim=-1)
    return emb.reshape(height, width, channels).permute(2, 0, 1)


class ResidualConvUnit(nn.Module):
    """``relu(x) + conv2(relu(conv1(relu(x))))`` with 3x3 convs (``[N, C, h, w]`` -> same)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, h, w]`` -> ``[N, C, h, w]``."""
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FeatureFusionBlock(nn.Module):
    """DPT fusion: ``out_conv(upsample(rcu2(x + rcu1(skip))))`` (``rcu1`` only with a skip input)."""

    def __init__(self, features: int, has_residual: bool = True) -> None:
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1)
        if has_residual:
            self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None, size: Optional[Sequence[int]] = None) -> torch.Tensor:
        """``x`` ``[N, C, h, w]`` (+ ``skip`` same shape) -> ``[N, C, *size]`` (default ``2h x 2w``)."""
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = tuple(size) if size is not None else (2 * x.shape[-2], 2 * x.shape[-1])
        return self.out_conv(F.interpolate(x, size=size, mode="bilinear", align_corners=True))


class DPTHead(nn.Module):
    """Multi-layer tokens -> dense map at image resolution.

    Args:
        dim_in: token channels (``2 * embed_dim``). patch_size: pixels per patch.
        output_dim: channels of the final map (ignored with ``feature_only``).
        features: fusion channels. out_channels: per-layer projection channels (4 entries).
        layers: aggregator layers read (4 entries). pos_embed: add the uv embeddings.
        feature_only: stop after ``output_conv1`` (``features`` channels). head_hidden: hidden
            channels of ``output_conv2`` (VGGT: 32).
    """

    def __init__(
        self,
        dim_in: int,
        patch_size: int = 14,
        output_dim: int = 2,
        features: int = 256,
        out_channels: Sequence[int] = (256, 512, 1024, 1024),
        layers: Sequence[int] = (4, 11, 17, 23),
        pos_embed: bool = True,
        feature_only: bool = False,
        head_hidden: int = 32,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.layers = tuple(layers)
        self.pos_embed = pos_embed
        self.feature_only = feature_only
        self.norm = nn.LayerNorm(dim_in)
        self.projects = nn.ModuleList(nn.Conv2d(dim_in, oc, 1) for oc in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
            ]
        )
        self.scratch = nn.Module()
        for i, oc in enumerate(out_channels, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(oc, features, 3, padding=1, bias=False))
        for i in (1, 2, 3, 4):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features, has_residual=i != 4))
        if feature_only:
            self.scratch.output_conv1 = nn.Conv2d(features, features, 3, padding=1)
        else:
            self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
            self.scratch.output_conv2 = nn.Sequential(
                nn.Conv2d(features // 2, head_hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(head_hidden, output_dim, 1)
            )

    def _add_pos(self, x: torch.Tensor, aspect: float) -> torch.Tensor:
        if not self.pos_embed:
            return x
        emb = uv_position_embedding(x.shape[-2], x.shape[-1], x.shape[1], aspect, device=x.device)
        return x + 0.1 * emb.to(x.dtype)

    def _forward_frames(self, tokens: Sequence[torch.Tensor], image_hw: tuple[int, int]) -> torch.Tensor:
        H, W = image_hw
        gh, gw = H // self.patch_size, W // self.patch_size
        aspect = W / H
        feats = []
        for i, x in enumerate(tokens):
            x = self.norm(x).transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
            feats.append(self.resize_layers[i](self._add_pos(self.projects[i](x), aspect)))
        s = self.scratch
        l1, l2, l3, l4 = (getattr(s, f"layer{i}_rn")(f) for i, f in enumerate(feats, start=1))
        out = s.refinenet4(l4, size=l3.shape[-2:])
        out = s.refinenet3(out, l3, size=l2.shape[-2:])
        out = s.refinenet2(out, l2, size=l1.shape[-2:])
        out = s.output_conv1(s.refinenet1(out, l1))
        out = F.interpolate(out, size=(gh * self.patch_size, gw * self.patch_size), mode="bilinear", align_corners=True)
        out = self._add_pos(out, aspect)
        return out if self.feature_only else s.output_conv2(out)

    def forward(
        self, layer_tokens: Mapping[int, torch.Tensor], image_hw: tuple[int, int], patch_start_idx: int, chunk_size: Optional[int] = None
    ) -> torch.Tensor:
        """Dense prediction for every frame.

        Args:
            layer_tokens: ``{layer: [F, P, dim_in]}`` per-frame tokens (must hold ``self.layers``).
            image_hw: ``(H, W)`` image size in pixels.
            patch_start_idx: index of the first patch token in ``P``.
            chunk_size: frames per chunk (None: all at once); results do not depend on it.
        Returns:
            ``[F, output_dim (or features), H', W']`` with ``H' = (H // p) * p`` (= H for valid inputs).
        """
        tokens = [layer_tokens[i][:, patch_start_idx:] for i in self.layers]
        n = tokens[0].shape[0]
        size = chunk_size or n
        outs = [self._forward_frames([t[s : s + size] for t in tokens], image_hw) for s in range(0, n, size)]
        return torch.cat(outs, dim=0)
