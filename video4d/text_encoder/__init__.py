"""The umT5 text encoder of Wan2.1 (and a tiny one with a bundled tokenizer).

``load_text_encoder(config=None, weights=None, *, tokenizer=None, device="cpu", dtype=None)``
returns a :class:`TextEncoder`; ``encoder.encode(prompts)`` gives one ``[L_i, dim]`` tensor per
prompt, trimmed to its real token count as Wan2.1's ``T5EncoderModel`` does.
"""
from video4d.text_encoder.config import PRESETS, TextEncoderConfig, resolve_config
from video4d.text_encoder.model import (
    METADATA_KEY,
    WAN_NEGATIVE_PROMPT,
    TextEncoder,
    load_text_encoder,
    official_keys,
    official_to_hf,
    text_encoder_metadata,
)
from video4d.text_encoder.tokenizer import TokenizerNotFoundError, build_word_tokenizer, clean_text, tiny_words

__all__ = [
    "PRESETS",
    "TextEncoderConfig",
    "resolve_config",
    "METADATA_KEY",
    "WAN_NEGATIVE_PROMPT",
    "TextEncoder",
    "load_text_encoder",
    "official_keys",
    "official_to_hf",
    "text_encoder_metadata",
    "TokenizerNotFoundError",
    "build_word_tokenizer",
    "clean_text",
    "tiny_words",
]
