"""A store of per-sample VAE latents, so that a dataset is encoded once.

Each sample lives in ``{root_url}/{name}.safetensors`` (any fsspec URL), ``name`` being a readable,
filesystem-safe prefix of the sample id plus a hash of the full id; the file's metadata keeps
the id, checked on reading. Use one root per VAE (weights and config): latents of different
VAEs are not told apart.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
import struct
from typing import Optional

import fsspec
import torch
from safetensors.torch import load as load_safetensors_bytes

from fourd.weights import write_safetensors
from video4d.vae.model import WanVAE

__all__ = ["LatentCache"]


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (8-byte little-endian length, then JSON)."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]).get("__metadata__", {})


class LatentCache:
    """Latents ``[V, T', z_dim, h, w]`` of single samples, keyed by a stable sample id (a string).

    ``hits`` / ``misses`` count :meth:`get_or_encode` calls served from the store / encoded.
    """

    def __init__(self, root_url: str) -> None:
        self.root_url = root_url.rstrip("/")
        self.hits = 0
        self.misses = 0

    def url(self, sample_id: str) -> str:
        """Where ``sample_id``'s latents are stored."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id)[:64]
        digest = hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:16]
        return posixpath.join(self.root_url, f"{readable}-{digest}.safetensors")

    def get(self, sample_id: str) -> Optional[torch.Tensor]:
        """Stored latents ``[V, T', z_dim, h, w]`` of ``sample_id``, or None when absent."""
        url = self.url(sample_id)
        fs, path = fsspec.core.url_to_fs(url)
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as f:
            data = f.read()
        stored_id = _metadata(data).get("sample_id")
        if stored_id != sample_id:
            raise ValueError(f"latent cache file {url} holds sample {stored_id!r}, not {sample_id!r}")
        return load_safetensors_bytes(data)["latents"]

    def put(self, sample_id: str, latents: torch.Tensor) -> None:
        """Store ``latents [V, T', z_dim, h, w]`` for ``sample_id`` (atomically, overwriting)."""
        if latents.ndim != 5:
            raise ValueError(f"latent cache stores one sample's latents [V, T', C, h, w], got {list(latents.shape)} for {sample_id!r}")
        write_safetensors(self.url(sample_id), {"latents": latents}, metadata={"sample_id": sample_id})

    def get_or_encode(self, sample_id: str, frames: torch.Tensor, vae: WanVAE, **encode_kwargs) -> torch.Tensor:
        """Latents ``[V, T', z_dim, h, w]`` of one sample's frames ``[V, T, 3, H, W]`` in [0, 1].

        Served from the store when present (the encoder is not run; the stored shape must match
        what ``vae`` would produce, else a ValueError names the stale file); otherwise encoded with
        ``vae.encode(frames[None], **encode_kwargs)`` and stored.
        """
        if frames.ndim != 5:
            raise ValueError(f"latent cache encodes one sample's frames [V, T, 3, H, W], got {list(frames.shape)} for {sample_id!r}")
        cfg = vae.config
        V, T, _, H, W = frames.shape
        expected = (V, (T - 1) // cfg.temporal_factor + 1, cfg.z_dim, H // cfg.spatial_factor, W // cfg.spatial_factor)
        cached = self.get(sample_id)
        if cached is not None:
            if tuple(cached.shape) != expected:
                raise ValueError(
                    f"latent cache file {self.url(sample_id)} has shape {list(cached.shape)}, expected {list(expected)}: stale, delete it"
                )
            self.hits += 1
            return cached
        latents = vae.encode(frames[None], **encode_kwargs)[0]
        self.put(sample_id, latents)
        self.misses += 1
        return latents
