"""Configurations of the umT5 text encoder (the encoder half of umT5, as Wan2.1 uses it).

``"umt5-xxl"`` is Wan2.1's encoder (``models_t5_umt5-xxl-enc-bf16.pth``, google/umt5-xxl
tokenizer); ``"tiny"`` has the same architecture at width 32 (the tiny DiT's ``text_dim``) with a
bundled word-level tokenizer (``video4d/assets/tiny_words.txt``) and a seeded init, so every machine
builds the same tiny encoder without any file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Union

from fourd.config import resolve_preset_config

__all__ = ["TextEncoderConfig", "PRESETS", "CLEANERS", "resolve_config"]

CLEANERS = ("whitespace", "none")


@dataclass(frozen=True)
class TextEncoderConfig:
    """Hyper-parameters of the umT5 encoder and its tokenizer.

    ``vocab_size`` rows of the token embedding; ``dim`` width of the output tokens ``[L, dim]``;
    ``dim_attn`` query/key/value width (``num_heads * head_dim``); ``ffn_dim`` hidden width of the
    gated-GELU FFN; ``num_buckets`` / ``max_distance`` relative-position bucketing (bidirectional,
    each layer has its own bias table as in umT5); ``eps`` of the T5 RMS norms; ``text_len``
    maximum tokens per prompt (longer prompts are truncated, the end-of-sequence token kept);
    ``clean`` prompt cleaning before tokenisation (``"whitespace"``: Wan's, see
    :func:`video4d.text_encoder.tokenizer.clean_text`); ``bundled_tokenizer`` uses the word-level
    tokenizer built from ``video4d/assets/tiny_words.txt`` instead of a tokenizer folder;
    ``init_seed`` seeds the random init used when no weights are given (independent of the global RNG).
    """

    vocab_size: int
    dim: int
    dim_attn: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    text_len: int = 512
    clean: str = "whitespace"
    bundled_tokenizer: bool = False
    init_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "dim_attn", "ffn_dim", "num_heads", "num_layers", "num_buckets", "max_distance", "text_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TextEncoderConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.dim_attn % self.num_heads:
            raise ValueError(f"TextEncoderConfig.dim_attn={self.dim_attn} is not divisible by num_heads={self.num_heads}")
        if self.num_buckets % 2:
            raise ValueError(f"TextEncoderConfig.num_buckets={self.num_buckets} must be even (bidirectional buckets)")
        if self.clean not in CLEANERS:
            raise ValueError(f"TextEncoderConfig.clean={self.clean!r} is not one of {', '.join(CLEANERS)}")

    @property
    def head_dim(self) -> int:
        """Channels per attention head, ``dim_attn // num_heads``."""
        return self.dim_attn // self.num_heads


PRESETS: dict[str, TextEncoderConfig] = {
    # Wan2.1's umT5-XXL encoder (wan/modules/t5.py umt5_xxl, shared_pos=False; text_len 512).
    "umt5-xxl": TextEncoderConfig(vocab_size=256384, dim=4096, dim_attn=4096, ffn_dim=10240, num_heads=64, num_layers=24),
    # Tests and the tiny base models: the tiny DiT's text_dim is 32. vocab_size is a fixed upper
    # bound of the word list, so appending words never changes existing embeddings.
    "tiny": TextEncoderConfig(vocab_size=1024, dim=32, dim_attn=32, ffn_dim=64, num_heads=4, num_layers=2,
                              text_len=64, bundled_tokenizer=True, init_seed=20261130),
}


def resolve_config(config: Union[str, TextEncoderConfig, Mapping[str, Any]]) -> TextEncoderConfig:
    """A preset name (``"umt5-xxl"``, ``"tiny"``), a :class:`TextEncoderConfig`, or a mapping of its
    fields (``preset: <name>`` plus overrides, or every size field). Unknown names/fields raise
    (:func:`fourd.config.resolve_preset_config`)."""
    return resolve_preset_config(config, TextEncoderConfig, PRESETS, "text encoder")