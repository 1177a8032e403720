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

__all__ = ["LatentCache"]


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (8-byte little-endian length, then JSON)."""
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]).get("__metadata__", {})


class LatentCache:
    """Latents ``[N, T', z_dim, h, w]`` (N videos of one sample, e.g. its views), keyed by a stable
    sample id (a string). Written by ``launch/precompute.py`` (:mod:`video4d.precompute`), read by
    training on pre-encoded data (:mod:`video4d.encoded`)."""

    def __init__(self, root_url: str) -> None:
        self.root_url = root_url.rstrip("/")

    def url(self, sample_id: str) -> str:
        """Where ``sample_id``'s latents are stored."""
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", sample_id)[:64]
        digest = hashlib.sha256(sample_id.encode("utf-8")).hexdigest()[:16]
        return posixpath.join(self.root_url, f"{readable}-{digest}.safetensors")

    def get(self, sample_id: str) -> Optional[torch.Tensor]:
        """Stored latents ``[N, T', z_dim, h, w]`` of ``sample_id``, or None when absent."""
        url = self.url(sample_id)
        fs, path = fsspec.core.url_to_fs(url)
        try:
            with fs.open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        stored_id = _metadata(data).get("sample_id")
        if stored_id != sample_id:
            raise ValueError(f"latent cache file {url} holds sample {stored_id!r}, not {sample_id!r}")
        return load_safetensors_bytes(data)["latents"]

    def put(self, sample_id: str, latents: torch.Tensor) -> None:
        """Store ``latents [N, T', z_dim, h, w]`` for ``sample_id`` (atomically, overwriting)."""
        if latents.ndim != 5:
            raise ValueError(f"latent cache stores one sample's latents [N, T', C, h, w], got {list(latents.shape)} for {sample_id!r}")
        write_safetensors(self.url(sample_id), {"latents": latents}, metadata={"sample_id": sample_id})
