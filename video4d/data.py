"""The video model's training data: clip sources, the dataset the loader reads, the batch.

``data.source`` (:func:`build_source`): ``procedural`` (captioned procedural scenes rendered on the
fly, :class:`fourd.data.procedural.ProceduralSource`) or ``mixture`` (scenes on disk,
:class:`MixtureSource`); with ``data.encoded`` set, the pre-encoded latents and text contexts of
either (:class:`video4d.encoded.EncodedSource`, written by ``launch/precompute.py``). A source's
``sample(index, num_frames)`` is a pure function of its arguments. :class:`VideoSamples` serves
them by :class:`fourd.data.loader.SampleKey` (the clip length from ``schedule.frames`` at the key's
step) and :func:`collate` builds a :class:`VideoBatch`.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from fourd.data.buckets import Grid, parse_grids
from fourd.data.loader import SampleKey
from fourd.data.procedural import ProceduralSource
from fourd.train.schedule import StepSchedule
from video4d.encoded import EncodedIndex, EncodedProcedural, EncodedScenes

__all__ = ["MixtureSource", "VideoBatch", "VideoSamples", "build_source", "collate", "encodable_spec", "grids_of", "source_class"]


class MixtureSource:
    """On-disk scenes through :class:`fourd.data.MixtureDataset` (fixed ratios, seeded, resumable).

    ``sources``: ``{name: {type: multiview | homography | static, scenes: root URL or list of scene
    URLs, ratio: float, **source options}}``; every sample has ``views`` views of ``height x width``
    pixels, or, with ``grids`` (buckets, :mod:`fourd.data.buckets`), the shape of the bucket its
    micro-batch (``group_size`` positions) drew. Sample ``index`` is the mixture's global position
    ``index``. ``encodable``: read the scenes as pre-encoding does (``window: chunks``, ``crop:
    center``; :func:`encodable_spec`); ``encoded``: read the index's latents instead of the scenes
    (:class:`video4d.encoded.EncodedScenes`, same scenes, plan and draws).
    """

    TYPES = ("multiview", "homography", "static")

    def __init__(self, sources: Mapping[str, Mapping[str, Any]], views: int, height: int, width: int, seed: int = 0,
                 reverse_views_prob: float = 0.5, epoch_size: Optional[int] = None, grids: Optional[Sequence[Grid]] = None,
                 group_size: int = 1, encodable: bool = False, encoded: "Optional[EncodedIndex]" = None):
        from fourd.data import MixtureDataset

        self.views, self.height, self.width, self.index = views, height, width, encoded
        built, ratios = {}, {}
        for name, spec in sources.items():
            spec = dict(spec)
            kind, ratio = spec.pop("type"), spec.pop("ratio")
            if encodable or encoded is not None:
                spec = encodable_spec(name, kind, spec)
            if encoded is not None:
                spec["scenes"] = [r["url"] for r in encoded.records(name)]
            raw = source_class(kind, name)(num_views=views, num_frames=1, size=(height, width), seed=seed, **spec)
            built[name] = raw if encoded is None else EncodedScenes(raw, name, encoded)
            ratios[name] = ratio
        self.sources = built
        self.mixture = MixtureDataset(built, ratios, seed=seed, epoch_size=epoch_size, reverse_views_prob=reverse_views_prob,
                                      grids=grids, group_size=group_size, bucket_key="data.buckets")

    def sample(self, index: int, num_frames: int) -> dict[str, Any]:
        """Mixture position ``index`` as a clip of ``num_frames`` frames (``frames [V, F, 3, H, W]``, ...)."""
        return self.mixture.sample(index, num_frames, Grid(self.views, num_frames, self.height, self.width))


def source_class(kind: str, name: str):
    """The :mod:`fourd.data.datasets` class of a mixture source's ``type``."""
    from fourd.data import HomographyVideoSource, MultiViewSource, StaticSceneSource

    classes = dict(zip(MixtureSource.TYPES, (MultiViewSource, HomographyVideoSource, StaticSceneSource)))
    if kind not in classes:
        raise ValueError(f"data source {name!r}: unknown type {kind!r}; use one of {', '.join(MixtureSource.TYPES)}")
    return classes[kind]


def encodable_spec(name: str, kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """A mixture source's options as pre-encoding reads them: centre crops, chunked windows (multiview,
    homography); ``random_source_view`` (one stored view per scene) is refused, naming the source."""
    if spec.get("random_source_view"):
        raise ValueError(f"data.sources.{name}.random_source_view=true cannot be pre-encoded (one view per scene is stored); set it false")
    spec = {**spec, "crop": "center"}
    if kind in ("multiview", "homography"):
        spec["window"] = "chunks"
        if not isinstance(spec.get("frame_stride", 1), int):
            raise ValueError(f"data.sources.{name}.frame_stride={spec['frame_stride']} is a range: pre-encoding needs one int stride")
    return spec


def grids_of(cfg: DictConfig, frames: Sequence[int]) -> Optional[list[Grid]]:
    """``data.buckets`` as grids, checked against the clip lengths ``frames`` of ``schedule.frames``
    (every length needs a bucket, every bucket one of the lengths); None without buckets."""
    grids = parse_grids(OmegaConf.to_container(cfg.buckets, resolve=True) if cfg.get("buckets") is not None else None)
    if grids is None:
        return None
    for i, grid in enumerate(grids):
        if grid.frames not in frames:
            raise ValueError(f"data.buckets[{i}] = {list(grid)}: {grid.frames} frames is no clip length of schedule.frames {sorted(frames)}")
    missing = sorted(set(frames) - {g.frames for g in grids})
    if missing:
        raise ValueError(f"schedule.frames uses clip lengths {missing} that no entry of data.buckets has")
    return grids


def build_source(cfg: DictConfig, frames: Sequence[int] = (), group_size: int = 1, raw: bool = False):
    """The data source named by ``data.source`` (``cfg`` is the ``data`` node): ``"procedural"``
    (:class:`fourd.data.procedural.ProceduralSource`) or ``"mixture"`` (:class:`MixtureSource`, with
    ``data.buckets`` checked against the clip lengths ``frames``, drawn per micro-batch of
    ``group_size``). With ``data.encoded`` (unless ``raw``) the same data from its pre-encoded
    latents (:mod:`video4d.encoded`; the index is checked against ``cfg`` and ``frames``): no frame
    is decoded."""
    if cfg.get("encoded") and not raw:
        index = EncodedIndex(cfg.encoded)
        index.check(cfg, list(frames))
        if cfg.source == "procedural":
            return EncodedProcedural(index)
        return MixtureSource(OmegaConf.to_container(cfg.sources, resolve=True), cfg.views, cfg.height, cfg.width, cfg.seed,
                             cfg.reverse_views_prob, cfg.epoch_size, grids_of(cfg, frames), group_size, encoded=index)
    if cfg.source == "procedural":
        if cfg.get("buckets") is not None:
            raise ValueError("data.buckets needs data.source=mixture (procedural clips have one shape: data.views x height x width)")
        return ProceduralSource(cfg.views, cfg.height, cfg.width, split=cfg.split, seed=cfg.seed, num_scenes=cfg.num_scenes,
                                static_fraction=cfg.static_fraction, moving_camera_fraction=cfg.moving_camera_fraction,
                                homography_fraction=cfg.homography_fraction)
    if cfg.source == "mixture":
        sources = OmegaConf.to_container(cfg.sources, resolve=True)
        return MixtureSource(sources, cfg.views, cfg.height, cfg.width, cfg.seed, cfg.reverse_views_prob, cfg.epoch_size,
                             grids_of(cfg, frames), group_size, encodable=raw and bool(cfg.get("encoded")))
    raise ValueError(f"unknown data.source {cfg.source!r}; use 'procedural' or 'mixture'")


class VideoBatch(dict):
    """One micro-batch: ``frames`` ``[B, V, F, 3, H, W]`` in [0, 1] (pre-encoded data: ``latents``
    ``[B, V, T, 16, H/8, W/8]`` and ``contexts``, a list of ``[L_i, text_dim]`` text embeddings),
    ``drop_time_ref`` bool ``[B]``, ``scenes`` (names), ``kinds``, ``captions`` (str, "" when none)."""


class VideoSamples(Dataset):
    """Samples by :class:`fourd.data.loader.SampleKey`: ``source.sample(key.index, frames(key.step))``."""

    def __init__(self, source, frames: StepSchedule):
        self.source, self.frames = source, frames

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        return self.source.sample(key.index, int(self.frames(key.step)))


def collate(samples: Sequence[Mapping[str, Any]]) -> VideoBatch:
    """Stack one micro-batch of samples (all of one shape) into a :class:`VideoBatch`."""
    batch = VideoBatch(
        drop_time_ref=torch.tensor([bool(s.get("drop_freeze_time_frame_cond", False)) for s in samples]),
        scenes=[s["scene"] for s in samples],
        kinds=[s["kind"] for s in samples],
        captions=[str(s.get("caption") or "") for s in samples],
    )
    if "latents" in samples[0]:
        batch["latents"] = torch.stack([s["latents"] for s in samples])
        if samples[0].get("context") is not None:
            batch["contexts"] = [s["context"] for s in samples]
    else:
        batch["frames"] = torch.stack([s["frames"] for s in samples])
    return batch
