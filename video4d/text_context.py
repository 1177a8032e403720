"""Text context for the DiT's cross-attention: precomputed embeddings, per-sample training contexts.

Wan2.1 conditions on umT5-XXL token embeddings ``[L, 4096]`` (up to 512 tokens; the DiT pads them
with zero rows to 512 before its text-embedding MLP). The encoder (~5.7B parameters) is not part of
this codebase: compute embeddings once with the official Wan2.1 text encoder and store them with
:func:`save_context`; read them with :func:`load_context`. :class:`CaptionContexts` gives training
its per-sample contexts (a text encoder such as the tiny one, or precomputed files per scene).

:func:`empty_context` gives all-zero embeddings, a stand-in for tests and for unconditional
sampling with random weights. For real use (the CFG negative branch, or "no prompt"), precompute
Wan's embedding of the empty prompt (or of its default negative prompt) instead: umT5 emits
non-zero embeddings even for an empty string.
"""
from __future__ import annotations

import posixpath
from collections import OrderedDict
from typing import Any, Mapping, Optional, Sequence

import torch

from fourd.weights import read_state_dict, write_safetensors

__all__ = ["CONTEXT_KEY", "empty_context", "load_context", "save_context", "pad_contexts", "CaptionContexts"]

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


def _context_url(root: str, scene: str) -> str:
    """``{root}/{scene}.safetensors``; a scene name that would leave ``root`` (``..``, an absolute path) raises."""
    name = posixpath.normpath(scene)
    if not scene or name.startswith(("/", "../")) or name in (".", ".."):
        raise ValueError(f"scene name {scene!r} leaves text.context_root {root}: a scene's name (scene.json 'name') must be a "
                         "path inside it, e.g. 'kubric/scene_0001'")
    return f"{root.rstrip('/')}/{name}.safetensors"


class CaptionContexts:
    """Per-sample text contexts for training, each caption encoded once, with caption dropout.

    Where a sample's embedding ``[L, text_dim]`` comes from, in order:

    0. the sample's own ``context`` (pre-encoded data, ``launch/precompute.py``);
    1. ``encoder`` (an object with ``encode(prompts: list[str]) -> list[Tensor [L_i, text_dim]]``,
       e.g. ``video4d.load_text_encoder``): the sample's ``caption`` ("" when it has none), encoded
       once per (scene, caption) and kept (``cache_size`` most recent);
    2. ``context_root``: the precomputed file ``{context_root}/{scene}.safetensors`` of the sample's
       scene (:func:`save_context` format), read once per scene;
    3. ``context_file``: one precomputed embedding for every sample;
    4. nothing: all-zero contexts (tests; the model is then unconditional).

    Caption dropout (for classifier-free guidance): each sample's context is replaced with
    probability ``dropout`` by the embedding of the empty prompt, ``encoder.encode([""])`` or
    ``empty_file`` (precomputed; required when ``dropout > 0`` with files), never zeros unless nothing
    is configured. Wan2.1 does not publish its rate; the default 0.1 (``configs/train_video4d.yaml``)
    is classifier-free guidance's usual ``p_uncond`` (Ho & Salimans 2022 train with 0.1 / 0.2) and
    what SimpleTuner's trainer (bghira/SimpleTuner, ``--caption_dropout_probability``) recommends for
    its video/image fine-tunes, Wan included.
    """

    def __init__(self, text_dim: int, text_len: int, encoder=None, context_root: Optional[str] = None,
                 context_file: Optional[str] = None, empty_file: Optional[str] = None, dropout: float = 0.0,
                 cache_size: int = 4096):
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"caption dropout must be in [0, 1], got {dropout}")
        if encoder is None and not empty_file and dropout > 0 and (context_root or context_file):
            raise ValueError("caption dropout > 0 with precomputed contexts needs text.empty_context_file (the encoded empty prompt)")
        self.text_dim, self.text_len, self.dropout = text_dim, text_len, dropout
        self.encoder, self.context_root, self.cache_size = encoder, context_root, cache_size
        self._fixed = load_context(context_file, text_dim).float() if context_file else None
        self._cache: "OrderedDict[tuple[str, str], torch.Tensor]" = OrderedDict()
        if encoder is not None:
            self.empty = self._encode("")
        elif empty_file:
            self.empty = load_context(empty_file, text_dim).float()
        else:
            self.empty = torch.zeros(0, text_dim)

    def _encode(self, caption: str) -> torch.Tensor:
        (out,) = self.encoder.encode([caption])
        if out.dim() != 2 or out.shape[1] != self.text_dim:
            raise ValueError(f"text encoder returned {list(out.shape)} for {caption!r}, the DiT expects [L, text_dim={self.text_dim}]")
        return out.detach().float().cpu()

    def embedding(self, sample: Mapping[str, Any]) -> torch.Tensor:
        """The (cached) embedding ``[L, text_dim]`` of one sample (``scene``, optional ``caption`` or ``context``)."""
        if sample.get("context") is not None:
            return sample["context"].float()
        if self.encoder is None and self.context_root is None:
            return self._fixed if self._fixed is not None else torch.zeros(0, self.text_dim)
        key = (str(sample.get("scene", "")), str(sample.get("caption") or ""))
        if key not in self._cache:
            if self.encoder is not None:
                self._cache[key] = self._encode(key[1])
            else:
                self._cache[key] = load_context(_context_url(self.context_root, key[0]), self.text_dim).float()
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def __call__(self, samples: Sequence[Mapping[str, Any]], generator: Optional[torch.Generator] = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
        """Contexts ``[B, text_len, text_dim]`` (float32, zero-padded) of ``samples``; with a
        ``generator`` each is dropped to the empty prompt with probability ``dropout``."""
        drop = [False] * len(samples)
        if generator is not None and self.dropout > 0:
            u = torch.rand(len(samples), generator=generator, device=generator.device).cpu()
            drop = (u < self.dropout).tolist()
        contexts = [self.empty if d else self.embedding(s) for s, d in zip(samples, drop)]
        return pad_contexts(contexts, self.text_len).to(device)
