"""Text context for the DiT's cross-attention: precomputed embeddings, no text encoder.

Wan2.1 conditions on umT5-XXL token embeddings ``[L, 4096]`` (up to 512 tokens; the DiT pads them
with zero rows to 512 before its text-embedding MLP). The encoder (~5.7B parameters) is not part of
this codebase: compute embeddings once with the official Wan2.1 text encoder and store them with
:func:`save_context`; read them with :func:`load_context`.

:func:`empty_context` gives all-zero embeddings, a stand-in for tests and for unconditional
sampling with random weights. For real use (the CFG negative branch, or "no prompt"), precompute
Wan's embedding of the empty prompt (or of its default negative prompt) instead: umT5 emits
non-zero embeddings even for an empty string.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from fourd.weights import read_state_dict, write_safetensors

__all__ = ["CONTEXT_KEY", "empty_context", "load_context", "save_context", "pad_contexts"]

CONTEXT_KEY = "context"


def empty_context(batch: int, length: int, text_dim: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """All-zero context ``[batch, length, text_dim]`` (see the module docstring for real use)."""
    return torch.zeros(batch, length, text_dim, device=device, dtype=dtype)


def load_context(url: str, text_dim: Optional[int] = None) -> torch.Tensor:
    """Read precomputed text embeddings ``[L, text_dim]`` (dtype as stored) from a safetensors file.

    ``url``: any fsspec URL of a safetensors file holding the key ``"context"``. When ``text_dim``
    is given the width is checked. Raises a one-line error naming the file otherwise.
    """
    state = read_state_dict(url, what="text context file")
    if CONTEXT_KEY not in state:
        raise KeyError(f"text context file {url} has no key {CONTEXT_KEY!r} (found: {sorted(state)[:5]})")
    context = state[CONTEXT_KEY]
    if context.dim() != 2:
        raise ValueError(f"text context in {url} must be [L, text_dim], got {list(context.shape)}")
    if text_dim is not None and context.shape[1] != text_dim:
        raise ValueError(f"text context in {url} has width {context.shape[1]}, the model expects text_dim={text_dim}")
    return context


def save_context(url: str, context: torch.Tensor) -> None:
    """Write text embeddings ``[L, text_dim]`` to a safetensors file (key ``"context"``) via fsspec."""
    if context.dim() != 2:
        raise ValueError(f"text context must be [L, text_dim], got {list(context.shape)}")
    write_safetensors(url, {CONTEXT_KEY: context})


def pad_contexts(contexts: Sequence[torch.Tensor], length: int) -> torch.Tensor:
    """Stack per-prompt embeddings ``[L_i, D]`` into ``[B, length, D]``, zero-padded at the end.

    This is Wan2.1's padding to its text length (512). Raises when a prompt is longer than ``length``.
    """
    if not contexts:
        raise ValueError("pad_contexts needs at least one context")
    out = contexts[0].new_zeros(len(contexts), length, contexts[0].shape[-1])
    for i, c in enumerate(contexts):
        if c.shape[0] > length:
            raise ValueError(f"context {i} has {c.shape[0]} tokens, more than the text length {length}")
        out[i, : c.shape[0]] = c
    return out
