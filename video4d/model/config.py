"""Configuration of the 4D DiT: architecture sizes (Wan2.1 presets) and the 4D choices.

A config is given as a preset name, a :class:`DiTConfig`, or a mapping of fields (a plain dict or
a Hydra/OmegaConf ``DictConfig``); a mapping may name a ``preset`` and override some fields.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Union

from fourd.config import resolve_preset_config

__all__ = ["DiTConfig", "PRESETS", "VARIANTS", "BACKENDS", "POSITION_MODES", "INITS", "REFERENCE_MODES", "ROPE_TABLE_LEN", "resolve_config"]

VARIANTS = ("fused", "full", "sequential", "parallel_blend", "parallel_linear")
BACKENDS = ("auto", "split", "flex", "dense")
POSITION_MODES = ("view_major", "diagonal")
INITS = ("official", "random")
REFERENCE_MODES = ("paper", "replace")  # see video4d.flow
ROPE_TABLE_LEN = 1024  # positions per axis of Wan2.1's fixed RoPE table


@dataclass(frozen=True)
class DiTConfig:
    """Sizes of a Wan2.1 DiT and the 4D options.

    Sizes (Wan2.1 names): ``dim`` hidden width, ``ffn_dim`` FFN width, ``num_heads``, ``num_layers``,
    ``in_dim``/``out_dim`` latent channels, ``text_dim`` width of the text encoder's tokens,
    ``text_len`` tokens the context is zero-padded to (Wan pads umT5 output to 512), ``freq_dim``
    width of the sinusoidal timestep features, ``patch_size`` (frames, height, width) of the patch
    embedding, ``eps`` of every norm.

    4D options: ``attention_variant`` (see :mod:`video4d.model.variants`), ``attention_backend``
    (passed to :func:`video4d.attention.attend`), ``rope_position_mode`` and ``rope_t_max`` (frame
    position of cell (v, t) is ``v * rope_t_max + t`` in "view_major" mode, ``v + t`` in "diagonal"
    mode; see :func:`video4d.grid.collapsed_time_positions`), ``gradient_checkpointing`` (recompute
    each block's activations in the backward pass), ``reference_mode`` (how reference cells enter
    the noisy input in training and sampling: ``"paper"`` noised latents, ``"replace"`` clean latents;
    see :mod:`video4d.flow`; the forward adds the reference's patch embedding in both, and
    :func:`video4d.sampler.sample` reads this field so a checkpoint is sampled as it was trained).
    """

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    text_len: int = 512
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    attention_variant: str = "fused"
    attention_backend: str = "auto"
    rope_position_mode: str = "view_major"
    rope_t_max: int = 32
    gradient_checkpointing: bool = False
    reference_mode: str = "paper"

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        for name in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "text_len", "freq_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DiTConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"DiTConfig.dim={self.dim} is not divisible by num_heads={self.num_heads}")
        if self.head_dim % 2 or self.head_dim < 6:
            raise ValueError(f"head_dim={self.head_dim} must be even and >= 6 for the 3-axis RoPE split")
        if self.freq_dim % 2:
            raise ValueError(f"DiTConfig.freq_dim={self.freq_dim} must be even")
        if len(self.patch_size) != 3 or self.patch_size[0] != 1:
            raise ValueError(f"patch_size must be (1, ph, pw) (one frame per token), got {self.patch_size}")
        _check_choice("attention_variant", self.attention_variant, VARIANTS)
        _check_choice("attention_backend", self.attention_backend, BACKENDS)
        _check_choice("rope_position_mode", self.rope_position_mode, POSITION_MODES)
        _check_choice("reference_mode", self.reference_mode, REFERENCE_MODES)
        if not 1 <= self.rope_t_max < ROPE_TABLE_LEN:
            raise ValueError(f"rope_t_max={self.rope_t_max} must be in 1..{ROPE_TABLE_LEN - 1} (RoPE table length)")

    @property
    def head_dim(self) -> int:
        """Channels per attention head, ``dim // num_heads``."""
        return self.dim // self.num_heads

    @property
    def patch_volume(self) -> int:
        """Latent values per patch and channel, ``prod(patch_size)``."""
        return self.patch_size[0] * self.patch_size[1] * self.patch_size[2]

    def replace(self, **changes: Any) -> "DiTConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"DiTConfig.{name}={value!r} is not one of {', '.join(allowed)}")


PRESETS: dict[str, DiTConfig] = {
    "wan2.1-t2v-1.3b": DiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30),
    "wan2.1-t2v-14b": DiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40),
    "tiny": DiTConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=8, freq_dim=32, rope_t_max=8),
    # the tiny base text-to-video model trained from scratch here (docs/base_models.md): captions of up
    # to 32 tiny-encoder tokens, clips of up to 16 latent frames
    "tiny-base": DiTConfig(dim=128, ffn_dim=384, num_heads=4, num_layers=4, text_dim=32, text_len=32, freq_dim=64, rope_t_max=16),
    # Wan-shaped models for CPU memory measurements (eval/perf/memory_plan.py, eval/perf/sharded_memory.py):
    # ~4.5M and ~205M parameters
    "small": DiTConfig(dim=256, ffn_dim=1024, num_heads=4, num_layers=4, text_dim=64, text_len=16, freq_dim=64, rope_t_max=16),
    "mid": DiTConfig(dim=1024, ffn_dim=4096, num_heads=8, num_layers=12, text_dim=512, text_len=32, freq_dim=256, rope_t_max=16),
}


def resolve_config(config: Union[str, DiTConfig, Mapping[str, Any]]) -> DiTConfig:
    """Turn a preset name, a :class:`DiTConfig` or a mapping of fields into a :class:`DiTConfig`.

    A mapping may hold ``preset: <name>`` plus overrides; without a preset it must give every size.
    Unknown presets and fields raise a ``ValueError`` naming them (:func:`fourd.config.resolve_preset_config`).
    """
    return resolve_preset_config(config, DiTConfig, PRESETS, "DiT")