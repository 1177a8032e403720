"""Configurations of the Wan2.1 causal 3D VAE.

``"wan2.1-vae"`` is the released model (the layout of ``Wan2.1_VAE.pth``); ``"tiny"`` has the same
structure with small channel counts, for tests; ``"tiny-s4"`` drops one spatial stage (4x spatial, 4x
temporal compression), the shipped tiny VAE (checkpoints/base/vae.safetensors). Latent normalisation statistics are per latent
channel: ``z_normalised = (z - latents_mean) / latents_std``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

from fourd.config import resolve_preset_config

__all__ = ["VAEConfig", "VAE_CONFIGS", "WAN21_LATENTS_MEAN", "WAN21_LATENTS_STD", "resolve_config"]

# The 16 per-channel statistics published with Wan2.1 (wan/modules/vae.py, class WanVAE; diffusers
# keeps the same numbers as AutoencoderKLWan's latents_mean / latents_std).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


@dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters of the causal 3D VAE.

    ``dim``: base channel count; stage ``i`` has ``dim * dim_mult[i]`` channels.
    ``z_dim``: latent channels (the encoder emits ``2 * z_dim``: mean and log-variance).
    ``num_res_blocks``: residual blocks per encoder stage (the decoder uses one more).
    ``temporal_downsample``: per stage transition (``len(dim_mult) - 1`` entries), whether time is
    halved too; the decoder mirrors it. Space is always halved at each transition.
    ``latents_mean`` / ``latents_std``: ``z_dim`` per-channel normalisation statistics.
    ``init_seed``: seed of the random init when no weights are given (:func:`video4d.load_vae` draws
    it in a forked RNG, so a random VAE depends on nothing else: the same on every machine and run).
    """

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    dropout: float = 0.0
    latents_mean: tuple[float, ...] = field(default=WAN21_LATENTS_MEAN)
    latents_std: tuple[float, ...] = field(default=WAN21_LATENTS_STD)
    init_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("dim_mult", "temporal_downsample", "latents_mean", "latents_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"VAEConfig.temporal_downsample needs {len(self.dim_mult) - 1} entries (one per stage transition), "
                f"got {len(self.temporal_downsample)}"
            )
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(f"VAEConfig.latents_mean/latents_std need z_dim={self.z_dim} entries each")
        if any(s <= 0 for s in self.latents_std):
            raise ValueError("VAEConfig.latents_std entries must be positive")

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent cell along H and W (8 for Wan2.1)."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        """Frames per latent frame after the first (4 for Wan2.1): ``T = temporal_factor * (T' - 1) + 1``."""
        return 2 ** sum(self.temporal_downsample)


VAE_CONFIGS: dict[str, VAEConfig] = {
    "wan2.1-vae": VAEConfig(),
    "tiny": VAEConfig(dim=8, latents_mean=(0.0,) * 16, latents_std=(1.0,) * 16),
    # 4x spatial / 4x temporal: at the tiny models' 64 x 64 frames Wan's 8x leaves 8 x 8 latents whose
    # round trip (18.8 dB) is below the copy baselines; 16 x 16 latents keep the checkered ground.
    "tiny-s4": VAEConfig(dim=8, dim_mult=(1, 2, 4), temporal_downsample=(True, True),
                         latents_mean=(0.0,) * 16, latents_std=(1.0,) * 16),
}


def resolve_config(config: Union[str, VAEConfig, Mapping]) -> VAEConfig:
    """A preset name from :data:`VAE_CONFIGS`, a :class:`VAEConfig`, or a mapping of its fields (e.g. a
    Hydra node; a ``preset`` entry selects a named config that the other entries override; without
    it the :class:`VAEConfig` defaults are the base). See :func:`fourd.config.resolve_preset_config`."""
    return resolve_preset_config(config, VAEConfig, VAE_CONFIGS, "VAE")