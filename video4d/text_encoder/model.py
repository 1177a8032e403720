"""The umT5 encoder module (transformers' ``UMT5EncoderModel`` encoder stack, built from a config)
and :func:`load_text_encoder`.

Weights come in two layouts, both read through fsspec: Wan2.1's ``models_t5_umt5-xxl-enc-bf16.pth``
(its own T5 module names, :func:`official_to_hf`) and the transformers/diffusers ``text_encoder/``
folder (``shared.weight``, ``encoder.block.{i}.layer.{0,1}...``; a single safetensors file or a
sharded one with its index). The module's own keys are the transformers names without ``shared``
(``encoder.embed_tokens.weight`` is the one embedding). Loading is strict and names every missing,
unexpected or mis-shaped key.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from fourd.weights import check_state_dict, config_from_metadata, config_metadata, read_state_dict, resolve_dtype
from video4d.text_encoder.config import TextEncoderConfig, resolve_config
from video4d.text_encoder.tokenizer import TokenizerNotFoundError, build_word_tokenizer, count_tokens, load_tokenizer_folder, tiny_words, tokenize

__all__ = [
    "TextEncoder",
    "load_text_encoder",
    "official_keys",
    "official_to_hf",
    "text_encoder_metadata",
    "METADATA_KEY",
    "WAN_NEGATIVE_PROMPT",
]

METADATA_KEY = "text_encoder_config"

# Wan2.1's default negative prompt (wan/configs/shared_config.py, wan_shared_cfg.sample_neg_prompt),
# used by its samplers when no negative prompt is given.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# Wan's per-block names -> transformers' (encoder.block.{i}.<name>).
_BLOCK_MAP = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # GELU branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_TOP_MAP = {"token_embedding.weight": "encoder.embed_tokens.weight", "norm.weight": "encoder.final_layer_norm.weight"}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def official_keys(num_layers: int) -> list[str]:
    """The key names of Wan2.1's encoder checkpoint (``T5Encoder`` with ``shared_pos=False``)."""
    return list(_TOP_MAP) + [f"blocks.{i}.{name}" for i in range(num_layers) for name in _BLOCK_MAP]


def official_to_hf(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a state dict to this module's keys: Wan2.1 names are mapped, transformers names kept
    (``shared.weight`` becomes ``encoder.embed_tokens.weight``, its tied twin); others pass through
    unchanged so the strict check names them."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if key in _TOP_MAP:
            out[_TOP_MAP[key]] = value
        elif match and match.group(2) in _BLOCK_MAP:
            out[f"encoder.block.{match.group(1)}.{_BLOCK_MAP[match.group(2)]}"] = value
        elif key == "shared.weight":
            out.setdefault("encoder.embed_tokens.weight", value)
        else:
            out[key] = value
    return out


def _hf_config(cfg: TextEncoderConfig):
    from transformers import UMT5Config

    return UMT5Config(
        vocab_size=cfg.vocab_size, d_model=cfg.dim, d_kv=cfg.head_dim, d_ff=cfg.ffn_dim, num_layers=cfg.num_layers,
        num_heads=cfg.num_heads, relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=cfg.max_distance, dropout_rate=0.0, layer_norm_epsilon=cfg.eps,
        feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, tie_word_embeddings=False,
    )


class TextEncoder(nn.Module):
    """umT5 encoder: token embedding, ``num_layers`` blocks (T5 RMS norm, self-attention without
    1/sqrt(d) scaling plus a per-layer relative-position bias, T5 RMS norm, gated-GELU FFN), final
    RMS norm. The math is transformers' ``UMT5EncoderModel`` (identical to Wan2.1's ``T5Encoder``).

    ``tokenizer``: a :class:`tokenizers.Tokenizer` (None: :meth:`encode` raises, :meth:`forward`
    works on ids). Build it with :func:`load_text_encoder`.
    """

    def __init__(self, config: TextEncoderConfig, tokenizer=None):
        super().__init__()
        from transformers import UMT5EncoderModel

        self.config = config
        self.tokenizer = tokenizer
        self.encoder = UMT5EncoderModel(_hf_config(config)).encoder

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``ids``, ``mask`` ``[B, L]`` (mask 1 = real token) -> hidden states ``[B, L, dim]``."""
        return self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Encode ``prompts`` (cleaned, tokenised, truncated to ``config.text_len`` tokens) like
        Wan2.1's ``T5EncoderModel``: one tensor ``[L_i, dim]`` per prompt, trimmed to its real token
        count (``</s>`` included), on the module's device and dtype. The DiT zero-pads them to its
        ``text_len`` (:func:`video4d.text_context.pad_contexts`)."""
        ids, mask = tokenize(self._needs_tokenizer(), prompts, self.config.text_len, self.config.clean)
        device = self.encoder.embed_tokens.weight.device
        hidden = self(ids.to(device), mask.to(device))
        return [h[: int(n)] for h, n in zip(hidden, mask.sum(dim=1))]

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        """Tokens of each prompt before truncation (``</s>`` included): what a prompt longer than
        ``config.text_len`` really has."""
        return count_tokens(self._needs_tokenizer(), prompts, self.config.clean)

    def _needs_tokenizer(self):
        if self.tokenizer is None:
            raise TokenizerNotFoundError("this text encoder was built without a tokenizer, so it encodes token ids only "
                                         "(forward(ids, mask)): for text, load_text_encoder(..., tokenizer=<folder with tokenizer.json>)")
        return self.tokenizer

    def encode_negative(self, prompt: Optional[str] = None) -> torch.Tensor:
        """The CFG negative context ``[L, dim]``: the encoded ``prompt``; None = Wan2.1's default
        negative prompt (:data:`WAN_NEGATIVE_PROMPT`, what Wan's samplers use). Pass ``""`` for the
        empty prompt (what caption dropout trains towards, e.g. the tiny models). Never zeros."""
        return self.encode([WAN_NEGATIVE_PROMPT if prompt is None else prompt])[0]

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """Seeded random init (CPU generator, the global RNG untouched), Wan2.1's ``init_weights``
        scales except the relative-position bias (std 1 instead of (2 * buckets * heads)^-0.5, so each
        head attends to its own offsets and a token's output carries its neighbours, e.g. colour and
        shape). Same values on every machine for the same config."""
        cfg = self.config
        gen = torch.Generator().manual_seed(int(seed))
        std = {
            "embed_tokens": 1.0, "q": (cfg.dim * cfg.dim_attn) ** -0.5, "k": cfg.dim**-0.5, "v": cfg.dim**-0.5,
            "o": (cfg.num_heads * cfg.dim_attn) ** -0.5, "relative_attention_bias": 1.0,
            "wi_0": cfg.dim**-0.5, "wi_1": cfg.dim**-0.5, "wo": cfg.ffn_dim**-0.5,
        }
        for name, param in self.named_parameters():
            kind = name.split(".")[-2]
            if kind in ("layer_norm", "final_layer_norm"):
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * std[kind])


def text_encoder_metadata(config: Union[str, TextEncoderConfig, Mapping[str, Any]]) -> dict[str, str]:
    """Safetensors metadata (``text_encoder_config``: the resolved config's fields as JSON) that lets
    ``load_text_encoder(weights=file)`` rebuild ``config``."""
    return config_metadata(METADATA_KEY, resolve_config(config))


def _tokenizer_for(cfg: TextEncoderConfig, tokenizer):
    if tokenizer is not None and not isinstance(tokenizer, str):
        return tokenizer  # an already built tokenizers.Tokenizer
    if tokenizer is not None:
        return load_tokenizer_folder(tokenizer)
    if cfg.bundled_tokenizer:
        words = tiny_words()
        if len(words) + 3 > cfg.vocab_size:
            raise ValueError(f"the bundled word list has {len(words) + 3} tokens, more than vocab_size={cfg.vocab_size}")
        return build_word_tokenizer(words)
    return None  # forward(ids, mask) works; encode() names what to provide


def load_text_encoder(
    config: Union[None, str, TextEncoderConfig, Mapping[str, Any]] = None,
    weights: Union[None, str, Mapping[str, torch.Tensor]] = None,
    *,
    tokenizer=None,
    device: Union[str, torch.device] = "cpu",
    dtype: Union[None, str, torch.dtype] = None,
) -> TextEncoder:
    """Build the umT5 text encoder, optionally with weights, and its tokenizer.

    ``config``: preset name (``"umt5-xxl"``, ``"tiny"``), :class:`TextEncoderConfig` or mapping
    (``preset`` + overrides); None = read from the weights file's ``text_encoder_config`` metadata.
    ``weights``: None (seeded random init, ``config.init_seed``), an fsspec URL of Wan2.1's
    ``models_t5_umt5-xxl-enc-bf16.pth``, of a transformers/diffusers ``text_encoder/`` folder or its
    (sharded) safetensors, or an in-memory state dict (either layout).
    ``tokenizer``: a folder (or fsspec URL) holding ``tokenizer.json`` or a built
    :class:`tokenizers.Tokenizer`; None = the bundled word tokenizer for presets that have one
    (tiny), else none: :meth:`TextEncoder.forward` works on ids, :meth:`TextEncoder.encode` raises
    naming what to provide.
    ``device="meta"`` builds without memory (key inspection; no tokenizer needed); with ``weights``
    their keys and shapes are checked as when loading.
    ``dtype``: parameter dtype (torch dtype or name such as ``"bfloat16"``; None = float32).
    Returns the module in eval mode (parameters keep ``requires_grad``; :meth:`TextEncoder.encode`
    runs without grad).
    """
    dtype = resolve_dtype(dtype)
    if config is None:
        config = config_from_metadata(weights, METADATA_KEY, "load_text_encoder")
    cfg = resolve_config(config)
    on_meta = torch.device(device).type == "meta"
    tok = None if on_meta and tokenizer is None else _tokenizer_for(cfg, tokenizer)
    state = None
    if weights is not None:
        state = weights if isinstance(weights, Mapping) else read_state_dict(weights, what="text encoder weights file")
    with torch.device("meta"):
        model = TextEncoder(cfg, tok)
    if state is None:
        if on_meta:
            return model.to(dtype).eval()
        model.to_empty(device="cpu")
        model.reset_parameters(cfg.init_seed)
        return model.to(device=device, dtype=dtype).eval()
    state = official_to_hf(state)
    source = "text encoder state dict" if isinstance(weights, Mapping) else f"text encoder weights {weights}"
    check_state_dict(model, state, source=f"{source} (dim {cfg.dim}, {cfg.num_layers} layers)")
    if on_meta:
        return model.to(dtype).eval()
    model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, strict=True, assign=True)
    return model.eval()

