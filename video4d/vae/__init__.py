"""The Wan2.1 causal 3D VAE: frames ``[B, V, T, 3, H, W]`` in [0, 1] <-> normalised latents
``[B, V, (T-1)/4+1, 16, H/8, W/8]``, every view encoded as its own causal video.

Entry point: :func:`load_vae`. :class:`LatentCache` stores per-sample latents (the store of
pre-encoded data, ``launch/precompute.py``), so a dataset is encoded once.
"""
from video4d.vae.config import VAE_CONFIGS, VAEConfig
from video4d.vae.latent_cache import LatentCache
from video4d.vae.loading import load_vae
from video4d.vae.model import WanVAE

__all__ = ["load_vae", "WanVAE", "VAEConfig", "VAE_CONFIGS", "LatentCache"]
