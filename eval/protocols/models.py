"""The models a benchmark evaluates, built lazily from the eval config (``configs/eval.yaml``).

``cfg.dit`` / ``cfg.vae`` / ``cfg.recon`` name a preset (or null: the config stored in the weights
file's safetensors metadata) plus overrides and weights; without weights a model is a seeded random
init (an *untrained* model, for smoke runs). ``cfg.text.encoder`` (a :func:`video4d.load_text_encoder`
argument mapping, e.g. ``configs/text_encoder/tiny.yaml``) encodes each scene's caption into the
DiT's context, as in training; without it every scene gets ``dit.context_file`` or zeros.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import torch
from omegaconf import DictConfig, OmegaConf

__all__ = ["Models", "model_config"]


def model_config(preset: Optional[str], overrides: Any, weights: Optional[str], metadata_key: str, loader: str) -> Any:
    """The ``config=`` argument of a ``load_*``: ``{"preset": preset, **overrides}``; with ``preset``
    null the weights file's ``metadata_key`` config plus ``overrides`` (None when there are none, so
    the loader reads the metadata itself)."""
    from fourd.weights import config_from_metadata

    extra = OmegaConf.to_container(overrides, resolve=True) if isinstance(overrides, DictConfig) else dict(overrides or {})
    if preset is not None:
        return {"preset": preset, **extra}
    if weights is None:
        raise ValueError(f"{loader}: the preset is null but no weights file is given; name a preset or a weights file with {metadata_key!r} metadata")
    return {**config_from_metadata(weights, metadata_key, loader), **extra} if extra else None


class Models:
    """The models named by ``cfg.dit``, ``cfg.vae``, ``cfg.recon`` and ``cfg.text``, built on first use on
    ``cfg.device`` (module docstring). Attributes may be assigned (ablations put trained models in)."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.device = torch.device(cfg.device)

    @functools.cached_property
    def vae(self) -> torch.nn.Module:
        from video4d import load_vae

        c = self.cfg.vae  # config null: the weights' metadata
        return _seeded(c.init_seed, lambda: load_vae(c.config, weights=c.weights, device=self.device))

    @functools.cached_property
    def dit(self) -> torch.nn.Module:
        from video4d import load_dit

        c = self.cfg.dit
        config = model_config(c.preset, c.overrides, c.weights, "dit_config", "load_dit")
        return _seeded(c.init_seed, lambda: load_dit(config, weights=c.weights, init="random", device=self.device))

    @functools.cached_property
    def recon(self) -> torch.nn.Module:
        from recon.model import load_reconstructor

        c = self.cfg.recon
        config = model_config(c.preset, c.overrides, c.weights, "recon_config", "load_reconstructor")
        return _seeded(c.init_seed, lambda: load_reconstructor(config, weights=c.weights).to(self.device))

    @functools.cached_property
    def text_encoder(self) -> Optional[torch.nn.Module]:
        """The text encoder of ``cfg.text.encoder`` (None when null)."""
        from video4d import load_text_encoder

        node = self.cfg.get("text", {}).get("encoder")
        if not node:
            return None
        return load_text_encoder(**OmegaConf.to_container(node, resolve=True), device=self.device).eval()

    @functools.cached_property
    def fixed_context(self) -> torch.Tensor:
        """``dit.context_file``'s embeddings, or zeros: ``[1, text_len, text_dim]`` on the device."""
        from video4d.text_context import empty_context, load_context, pad_contexts

        c = self.dit.config
        if self.cfg.dit.context_file is None:
            return empty_context(1, c.text_len, c.text_dim, device=self.device)
        return pad_contexts([load_context(self.cfg.dit.context_file, text_dim=c.text_dim)[: c.text_len].float()], c.text_len).to(self.device)

    def _encode(self, prompt: str) -> torch.Tensor:
        """``prompt`` through the text encoder one at a time, as training's ``CaptionContexts`` does, cut
        to and zero-padded to the DiT's ``text_len``: ``[1, text_len, text_dim]`` float32 on the device."""
        from video4d.text_context import pad_contexts

        text_len = self.dit.config.text_len
        (out,) = self.text_encoder.encode([prompt])
        return pad_contexts([out[:text_len].float()], text_len).to(self.device)

    def context(self, caption: Optional[str] = None) -> torch.Tensor:
        """Text context ``[1, text_len, text_dim]`` (float32, on the device) of a scene's ``caption``
        encoded by ``cfg.text.encoder`` (no caption = the empty prompt, as in caption dropout); without
        an encoder :attr:`fixed_context`."""
        if self.text_encoder is None:
            return self.fixed_context
        return self._encode(caption or "")

    @functools.cached_property
    def negative_context(self) -> torch.Tensor:
        """The encoded empty prompt ``[1, text_len, text_dim]`` (CFG's negative); needs ``cfg.text.encoder``."""
        if self.text_encoder is None:
            raise ValueError("classifier-free guidance (sampler.guidance_single != 1) needs text.encoder (e.g. text_encoder@text.encoder=tiny): "
                             "the negative is an encoded empty prompt, never zeros")
        return self._encode("")


def _seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` in eval mode, its random init (when no weights are given) drawn from ``seed`` in a
    forked RNG, so a seeded model is the same in every run and leaves the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()
