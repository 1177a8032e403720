"""The Wan2.1 causal 3D VAE on 4D grids ``[B, V, T, C, H, W]``.

Every view is its own causal video: its first frame is the causal first frame, and views never
mix (they are stacked along the batch axis). Encoding streams chunks of ``1, 4, 4, ...`` frames and
decoding one latent frame at a time through a :class:`CausalCache`, so activation memory does not
grow with the number of frames.
"""
from __future__ import annotations

from typing import Optional

import torch
from einops import rearrange
from torch import nn

from video4d.vae.causal import CausalCache, CausalConv3d
from video4d.vae.coders import Decoder3d, Encoder3d
from video4d.vae.config import VAEConfig

__all__ = ["WanVAE"]


class WanVAE(nn.Module):
    """Wan2.1 VAE. ``state_dict()`` keys equal the official ``WanVAE_`` checkpoint's.

    ``encode``: frames ``[B, V, T, 3, H, W]`` in [0, 1] -> normalised latents
    ``[B, V, (T-1)/4+1, z_dim, H/8, W/8]``; ``decode`` inverts it (factors for the Wan2.1 config;
    see :attr:`VAEConfig.temporal_factor` / :attr:`VAEConfig.spatial_factor`).
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(2 * config.z_dim, 2 * config.z_dim, 1)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, 1)
        self.decoder = Decoder3d(config)

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype (inputs are cast to it)."""
        return self.conv2.weight.dtype

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.config.latents_mean, dtype=torch.float32, device=like.device).view(shape)
        std = torch.tensor(self.config.latents_std, dtype=torch.float32, device=like.device).view(shape)
        return mean, std

    def encode_videos(self, x: torch.Tensor, chunk_frames: Optional[int] = 4) -> torch.Tensor:
        """Posterior mean of videos ``x [N, 3, T, H, W]`` in [-1, 1] -> raw latents ``[N, z_dim, T', h, w]``
        (float32, not normalised).

        ``chunk_frames``: frames per streamed chunk after the first single frame (a multiple of
        :attr:`VAEConfig.temporal_factor`); ``None`` encodes in one pass (same result, more memory).
        """
        factor = self.config.temporal_factor
        if chunk_frames is not None and (chunk_frames < 1 or chunk_frames % factor):
            raise ValueError(f"chunk_frames must be a positive multiple of {factor}, got {chunk_frames}")
        x = x.to(self.dtype)
        cache = CausalCache()
        if chunk_frames is None:
            out = self.encoder(x, cache)
        else:
            starts = [0, *range(1, x.shape[2], chunk_frames)]
            ends = [1, *[min(s + chunk_frames, x.shape[2]) for s in starts[1:]]]
            out = torch.cat([self.encoder(x[:, :, s:e], cache) for s, e in zip(starts, ends)], dim=2)
        mean, _logvar = self.conv1(out).chunk(2, dim=1)
        return mean.float()

    def decode_videos(self, z: torch.Tensor, chunk_latents: Optional[int] = 1) -> torch.Tensor:
        """Raw latents ``z [N, z_dim, T', h, w]`` -> videos ``[N, 3, T, H, W]`` (float32, clamped to [-1, 1]).

        ``chunk_latents``: latent frames decoded per streamed step; ``None`` decodes in one pass.
        """
        if chunk_latents is not None and chunk_latents < 1:
            raise ValueError(f"chunk_latents must be positive, got {chunk_latents}")
        z = self.conv2(z.to(self.dtype))
        cache = CausalCache()
        step = chunk_latents or z.shape[2]
        out = torch.cat([self.decoder(z[:, :, s : s + step], cache) for s in range(0, z.shape[2], step)], dim=2)
        return out.float().clamp(-1.0, 1.0)

    def _check_frames(self, frames: torch.Tensor) -> None:
        if frames.ndim != 6 or frames.shape[3] != 3:
            raise ValueError(f"VAE.encode expects frames [B, V, T, 3, H, W], got {list(frames.shape)}")
        T, H, W = frames.shape[2], frames.shape[4], frames.shape[5]
        factor, space = self.config.temporal_factor, self.config.spatial_factor
        if (T - 1) % factor:
            raise ValueError(f"VAE.encode needs {factor}k+1 frames per view (1, {factor + 1}, {2 * factor + 1}, ...), got T={T}")
        if H % space or W % space:
            raise ValueError(f"VAE.encode needs H and W to be multiples of {space}, got {H}x{W}")

    def encode(self, frames: torch.Tensor, chunk_frames: Optional[int] = 4, max_videos: Optional[int] = None) -> torch.Tensor:
        """Frames ``[B, V, T, 3, H, W]`` in [0, 1] -> normalised latents ``[B, V, T', z_dim, H/8, W/8]`` (float32).

        ``T`` must be ``4k + 1`` and ``H, W`` multiples of 8 (Wan2.1 factors). Each view is encoded
        as its own causal video; ``max_videos`` bounds how many ``B * V`` videos run at once
        (``None``: all). Normalisation: ``(mu - latents_mean) / latents_std`` per channel.
        """
        self._check_frames(frames)
        B = frames.shape[0]
        videos = rearrange(frames, "b v t c h w -> (b v) c t h w") * 2.0 - 1.0
        step = max_videos or videos.shape[0]
        mu = torch.cat([self.encode_videos(videos[i : i + step], chunk_frames) for i in range(0, videos.shape[0], step)])
        mean, std = self._stats(mu)
        return rearrange((mu - mean) / std, "(b v) c t h w -> b v t c h w", b=B)

    def decode(self, latents: torch.Tensor, chunk_latents: Optional[int] = 1, max_videos: Optional[int] = None) -> torch.Tensor:
        """Normalised latents ``[B, V, T', z_dim, h, w]`` -> frames ``[B, V, 4(T'-1)+1, 3, 8h, 8w]`` in [0, 1] (float32).

        Decodes ``chunk_latents`` latent frames per step with the causal cache (default 1: memory
        independent of ``T'``); ``max_videos`` bounds how many ``B * V`` videos run at once.
        """
        if latents.ndim != 6 or latents.shape[3] != self.config.z_dim:
            raise ValueError(f"VAE.decode expects latents [B, V, T', {self.config.z_dim}, h, w], got {list(latents.shape)}")
        B = latents.shape[0]
        z = rearrange(latents.float(), "b v t c h w -> (b v) c t h w")
        mean, std = self._stats(z)
        z = z * std + mean
        step = max_videos or z.shape[0]
        videos = torch.cat([self.decode_videos(z[i : i + step], chunk_latents) for i in range(0, z.shape[0], step)])
        return rearrange((videos + 1.0) / 2.0, "(b v) c t h w -> b v t c h w", b=B)
