"""Reconstructor configuration and presets.

Presets:

- ``"vggt-1b"``: the static VGGT-1B layout (camera, depth, point and track heads); its
  ``state_dict`` equals the official checkpoint key-for-key (tests/data/reference/vggt-1b.keys.tsv).
- ``"vggt-1b-4d"``: VGGT-1B plus temporal attention, camera token replacement and the Gaussian head;
  the point and track heads are dropped (their checkpoint keys are reported and skipped on load).
- ``"tiny"`` / ``"tiny-4d"``: the same two layouts at toy size (embed 64, 2 heads, 4 alternating
  layers, 28 px images) for CPU tests.

:func:`resolve_config` accepts a preset name, a :class:`ReconstructorConfig`, or a mapping (plain dict
or OmegaConf) with an optional ``preset`` key plus field overrides.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from fourd.config import resolve_preset_config

__all__ = ["ReconstructorConfig", "GaussianHeadConfig", "PRESETS", "resolve_config"]


@dataclass(frozen=True)
class GaussianHeadConfig:
    """Activation and initialisation constants of the Gaussian head (see ``gaussian_head.py``).

    ``offset_scale``: centre refinement = ``offset_scale * depth * raw`` (camera frame, world units).
    ``init_opacity``: opacity of every Gaussian at initialisation (sigmoid bias).
    ``init_scale_px``: scales at initialisation, in pixel footprints (``depth / focal``).
    ``init_weight_gain``: factor on the default init of the output-layer weights for opacity,
    scale and rotation (position and colour weights start at zero).
    ``detach_depth``: the Gaussian centres (unprojection and offset) use the predicted depth without
    gradient, as Splatt3r detaches its points, so the rendering loss never moves the depth head or
    the backbone through the centres (docs/recon.md: the measurement behind the default).
    """

    offset_scale: float = 0.05
    init_opacity: float = 0.1
    init_scale_px: float = 0.5
    init_weight_gain: float = 0.1
    detach_depth: bool = True


@dataclass(frozen=True)
class ReconstructorConfig:
    """All hyper-parameters of :class:`recon.model.reconstructor.Reconstructor`.

    Sizes are in tokens/channels; ``img_size`` and ``patch_size`` in pixels. ``dpt_layers`` index the
    alternating-attention layers (0-based) read by the DPT heads.
    """

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    init_values: float = 0.01
    rope_freq: float = 100.0
    patch_embed_depth: int = 24
    patch_embed_heads: int = 16
    camera_trunk_depth: int = 4
    camera_heads: int = 16
    camera_iterations: int = 4
    dpt_layers: tuple[int, ...] = (4, 11, 17, 23)
    dpt_features: int = 256
    dpt_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    dpt_head_hidden: int = 32
    track_features: int = 128
    tracker_latent_dim: int = 128
    tracker_hidden: int = 384
    tracker_depth: int = 6
    tracker_heads: int = 8
    tracker_corr_levels: int = 7
    tracker_corr_radius: int = 4
    tracker_virtual_tracks: int = 64
    enable_camera: bool = True
    enable_depth: bool = True
    enable_point: bool = True
    enable_track: bool = True
    enable_gaussian: bool = False
    temporal: bool = False
    camera_token_replacement: bool = False
    gaussian: GaussianHeadConfig = field(default_factory=GaussianHeadConfig)
    patch_embed_chunk_size: Optional[int] = None
    head_chunk_size: Optional[int] = 8
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
            raise ValueError(f"embed_dim {self.embed_dim} / num_heads {self.num_heads} must give a head_dim divisible by 4 (2D RoPE)")
        if len(self.dpt_layers) != 4 or len(self.dpt_out_channels) != 4:
            raise ValueError("dpt_layers and dpt_out_channels need exactly 4 entries")
        if max(self.dpt_layers) >= self.depth:
            raise ValueError(f"dpt_layers {self.dpt_layers} must index layers below depth {self.depth}")
        if self.enable_gaussian and not (self.enable_camera and self.enable_depth):
            raise ValueError("the Gaussian head needs the camera and depth heads (enable_camera, enable_depth)")


_VGGT_1B = ReconstructorConfig()
_TINY = ReconstructorConfig(
    img_size=28,
    embed_dim=64,
    depth=4,
    num_heads=2,
    patch_embed_depth=2,
    patch_embed_heads=2,
    camera_trunk_depth=1,
    camera_heads=2,
    dpt_layers=(0, 1, 2, 3),
    dpt_features=16,
    dpt_out_channels=(8, 16, 32, 32),
    dpt_head_hidden=8,
    track_features=8,
    tracker_latent_dim=8,
    tracker_hidden=16,
    tracker_depth=1,
    tracker_heads=2,
    tracker_corr_levels=2,
    tracker_corr_radius=1,
    tracker_virtual_tracks=4,
)
_FOUR_D = dict(enable_point=False, enable_track=False, enable_gaussian=True, temporal=True, camera_token_replacement=True)

PRESETS: dict[str, ReconstructorConfig] = {
    "vggt-1b": _VGGT_1B,
    "vggt-1b-4d": dataclasses.replace(_VGGT_1B, **_FOUR_D),
    "tiny": _TINY,
    "tiny-4d": dataclasses.replace(_TINY, **_FOUR_D),
}


def _coerce(name: str, value: Any) -> Any:
    if name == "gaussian" and isinstance(value, Mapping):
        return GaussianHeadConfig(**dict(value))
    if isinstance(value, Sequence) and not isinstance(value, str):
        return tuple(value)
    return value


def resolve_config(config: Union[str, ReconstructorConfig, Mapping[str, Any]]) -> ReconstructorConfig:
    """Turn a preset name, a config or a mapping ``{"preset": name, **overrides}`` into a config.

    A mapping without ``preset`` starts from ``"vggt-1b-4d"``. Unknown presets or fields raise
    ``ValueError`` naming them (:func:`fourd.config.resolve_preset_config`).
    """
    return resolve_preset_config(config, ReconstructorConfig, PRESETS, "reconstructor", default="vggt-1b-4d", coerce=_coerce)