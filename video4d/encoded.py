"""Pre-encoded training data: the layout ``launch/precompute.py`` writes and the sources that read it.

Layout under ``data.encoded`` (any fsspec URL)::

    index.json                          the index (below); written last, by rank 0
    latents/<id>-<hash>.safetensors     VAE latents [cells, T', z_dim, h, w] per (source, scene, clip
                                        length, window, variant) (:class:`video4d.vae.LatentCache`)
    contexts/<source>/<i:06d>.safetensors  the text context [L, text_dim] of scene i's caption
    contexts/empty.safetensors          the empty prompt's context (caption dropout target)
    parts/<source>/<i:06d>.json         scene i's index record, written after its files: a scene
                                        with a part is done (a restarted job skips it)

``index.json``: ``{"version": 1, "fingerprint": the data settings the latents depend on,
"vae": hash of the VAE's config and weights, "frames": clip lengths, "contexts": bool,
"skipped": corrupt scenes, "sources": {name: [record, ...]}}``, a record per scene in the order
training enumerates them: ``{"name", "url", "kind", "num_views", "num_frames", "height",
"width", "caption", "clips": {"<F>": {"grid": [V, F, H, W], "windows": n, "variants": k}}}`` or
``{"url", "error"}`` for a scene that could not be read (skipped at training like a corrupt one).

Cells: a multi-view scene's views (every window ``c`` of ``F`` frames: its frames ``[c * span,
(c + 1) * span)``); a homography video's ``variants`` pseudo-view sets per window; a static scene's
trajectory frames, each a constant clip of ``F`` frames; a procedural sample's whole grid. All at the
bucket's (or ``data``'s) size, centre-cropped. Training draws from these exactly as the raw sources
draw with ``window: chunks`` and ``crop: center`` (:class:`EncodedScenes`), so for the same draws
the latents equal the raw frames' encodings.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from typing import Any, Mapping, Optional

import fsspec
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from fourd.data.buckets import Grid
from fourd.data.format import SceneFormatError, SceneMeta
from video4d.text_context import load_context
from video4d.vae.latent_cache import LatentCache

__all__ = ["INDEX", "EncodedIndex", "EncodedScenes", "EncodedProcedural", "fingerprint", "latent_id", "module_hash"]

INDEX = "index.json"
VERSION = 1
_PLAN_ONLY = ("ratio", "window", "crop")  # source options that do not change what is encoded


def latent_id(source: str, index: int, frames: int, window: int = 0, variant: int = 0) -> str:
    """The :class:`LatentCache` id of one encoded clip set."""
    return f"{source}/{index:06d}/f{frames}/w{window}/h{variant}"


def module_hash(module: nn.Module) -> str:
    """Short sha256 over a module's config and state dict (names, shapes, values): identifies the VAE."""
    h = hashlib.sha256(repr(getattr(module, "config", "")).encode())
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def fingerprint(data: DictConfig) -> dict[str, Any]:
    """The ``data`` settings pre-encoded latents depend on (not the mixture plan: ratios, epoch size,
    view reversal; not ``window`` / ``crop``, which pre-encoded data fixes to chunks / center)."""
    node = OmegaConf.to_container(data, resolve=True)
    keep = {k: v for k, v in node.items() if k not in ("encoded", "reverse_views_prob", "epoch_size", "sources")}
    if node.get("source") == "mixture":
        keep["sources"] = {name: {k: v for k, v in spec.items() if k not in _PLAN_ONLY} for name, spec in node["sources"].items()}
    return keep


def _differences(a: Any, b: Any, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{path}.{k}")]
    return [] if a == b else [f"{path} (index: {a!r}, config: {b!r})"]


class EncodedIndex:
    """``index.json`` of a pre-encoded root and access to its files (see the module docstring)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        fs, path = fsspec.core.url_to_fs(self.url(INDEX))
        if not fs.exists(path):
            raise FileNotFoundError(f"data.encoded={root} has no {INDEX}: run launch/precompute.py with this data config first")
        self.doc = json.loads(fs.cat_file(path))
        if self.doc.get("version") != VERSION:
            raise ValueError(f"{self.url(INDEX)}: index version {self.doc.get('version')} is not {VERSION}; rerun launch/precompute.py")
        self.store = LatentCache(self.url("latents"))

    def url(self, rel: str) -> str:
        """The URL of ``rel`` under the root."""
        return posixpath.join(self.root, rel)

    def check(self, data: DictConfig, frames: list[int]) -> None:
        """Raise naming the setting when this index was written for other data settings or clip lengths."""
        diff = _differences(self.doc["fingerprint"], fingerprint(data), "data")
        if diff:
            raise ValueError(f"data.encoded={self.root} was written for other data settings: {'; '.join(diff[:3])}; "
                             "rerun launch/precompute.py with this config (or another data.encoded root)")
        missing = sorted(set(frames) - set(self.doc["frames"]))
        if missing:
            raise ValueError(f"data.encoded={self.root} has clip lengths {self.doc['frames']}, not {missing} of schedule.frames; "
                             "rerun launch/precompute.py with this schedule")

    def records(self, source: str) -> list[dict[str, Any]]:
        """The scene records of ``source``, in training order."""
        return self.doc["sources"][source]

    def latents(self, source: str, index: int, frames: int, window: int = 0, variant: int = 0) -> torch.Tensor:
        """Stored latents ``[cells, T', z_dim, h, w]`` (float32)."""
        lid = latent_id(source, index, frames, window, variant)
        latents = self.store.get(lid)
        if latents is None:
            raise FileNotFoundError(f"{self.store.url(lid)} ({lid}) is missing from data.encoded={self.root}: rerun launch/precompute.py")
        return latents.float()

    def context(self, source: str, index: int) -> Optional[torch.Tensor]:
        """Scene ``index``'s text context ``[L, text_dim]``, or None when the index has no contexts."""
        return load_context(self.url(f"contexts/{source}/{index:06d}.safetensors")).float() if self.doc["contexts"] else None

    @property
    def vae(self) -> str:
        """:func:`module_hash` of the VAE the latents were encoded with."""
        return self.doc["vae"]

    @property
    def empty_context_url(self) -> Optional[str]:
        """The empty prompt's context file (None without contexts)."""
        return self.url("contexts/empty.safetensors") if self.doc["contexts"] else None


def _sample(index: EncodedIndex, source: str, i: int, record: Mapping[str, Any], latents: torch.Tensor, kind: str) -> dict[str, Any]:
    return {"latents": latents, "scene": record["name"], "caption": record["caption"], "kind": kind,
            "drop_freeze_time_frame_cond": kind == "static", "context": index.context(source, i)}


class EncodedScenes:
    """One mixture source on pre-encoded data: the same scenes, bucket fits and draws as ``raw`` (the
    :mod:`fourd.data.datasets` source built with ``window: chunks``, ``crop: center`` and the
    index's scene list), samples from the stored latents (``latents [V, T', z_dim, h, w]``,
    ``context``, ``scene``, ``caption``, ``kind``, ``skipped``; no frames, no cameras)."""

    def __init__(self, raw, name: str, index: EncodedIndex):
        self.raw, self.name, self.index = raw, name, index
        self.records = index.records(name)
        self.kind = raw.kind

    def __len__(self) -> int:
        return len(self.records)

    def meta(self, i: int) -> Optional[SceneMeta]:
        """Scene ``i``'s metadata from the index (None for a scene that failed to encode)."""
        r = self.records[i]
        if "error" in r:
            return None
        return SceneMeta(name=r["name"], kind=r["kind"], num_views=r["num_views"], num_frames=r["num_frames"],
                         height=r["height"], width=r["width"], caption=r["caption"] or None)

    def fits(self, meta: SceneMeta, grid: Grid) -> bool:
        """As the raw source."""
        return self.raw.fits(meta, grid)

    def sample(self, index: int, rng: np.random.Generator, grid: Optional[Grid] = None) -> dict[str, Any]:
        """Scene ``index``'s sample at ``grid``; a scene that failed to encode is skipped (counted) for
        the next one, as :meth:`fourd.data.SceneSource.sample` skips corrupt scenes."""
        grid = grid or self.raw.grid
        for skipped in range(self.raw.max_skips + 1):
            i = (index + skipped) % len(self.records)
            meta = self.meta(i)
            if meta is None:
                continue
            clip = self.records[i]["clips"].get(str(grid.frames))
            if clip is None or clip["grid"] != list(grid):
                raise SceneFormatError(f"scene {meta.name}: data.encoded={self.index.root} holds no {list(grid)} clips of it "
                                       f"(has {self.records[i]['clips']}): it does not fit that grid")
            sample = _sample(self.index, self.name, i, self.records[i], self._latents(i, meta, rng, grid), self.kind)
            sample["skipped"] = skipped
            return sample
        raise RuntimeError(f"{self.name}: {self.raw.max_skips + 1} scenes in a row failed to encode, starting at {self.records[index]['url']}")

    def _latents(self, i: int, meta: SceneMeta, rng: np.random.Generator, grid: Grid) -> torch.Tensor:
        if self.kind == "static":
            cells = self.raw.draw(meta, rng, grid)  # (view, frame): view 0's trajectory, or a single-frame scene's views
            picks = [v if meta.num_frames == 1 else t for v, t in cells]
            return self.index.latents(self.name, i, grid.frames)[picks]
        if self.kind == "homography":
            _, _, window, variant = self.raw.draw(meta, rng, grid)
            return self.index.latents(self.name, i, grid.frames, window, variant)
        views, _, window = self.raw.draw(meta, rng, grid)
        return self.index.latents(self.name, i, grid.frames, window)[views]


class EncodedProcedural:
    """Procedural training samples (``data.source: procedural``) from their stored latents:
    ``sample(index, num_frames)`` is scene ``index % num_scenes`` as the raw source renders it."""

    def __init__(self, index: EncodedIndex):
        self.index = index
        self.records = index.records("procedural")

    def sample(self, index: int, num_frames: int) -> dict[str, Any]:
        """Sample ``index`` at ``num_frames`` frames (``latents [V, T', z_dim, h, w]``, ``context``, ...)."""
        i = index % len(self.records)
        record = self.records[i]
        return _sample(self.index, "procedural", i, record, self.index.latents("procedural", i, num_frames), record["kind"])
