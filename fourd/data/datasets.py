"""Datasets ("sources") that turn stored scenes into fixed-size multi-view video samples.

Every source yields dicts with the same keys, so that samples of different sources collate:

- ``frames``: float32 [V, T, 3, H, W] in [0, 1];
- ``cameras``: ``{"extrinsics": [V, T, 3, 4], "intrinsics": [V, T, 3, 3]}`` (OpenCV
  camera-from-world in the scene's world frame, pixels of the output size); all NaN when unknown;
- ``has_cameras``: bool; ``kind``: "dynamic" | "static" | "homography"; ``scene``: the scene id;
- ``caption``: the scene's caption (``scene.json``, or the ``.txt`` next to a plain video; "" when none);
- ``drop_freeze_time_frame_cond``: bool, True for static (time-duplicated) samples: training must not
  condition on their freeze-time reference column (see docs/data_format.md);
- ``skipped``: how many corrupt scenes were skipped to produce this sample;
- ``depth`` float32 [V, T, H, W] metres (0 = unknown), only with ``with_depth=True``.

Sources: :class:`MultiViewSource` (multi-view 4D scenes), :class:`HomographyVideoSource` (a video
-> V pseudo-views by smooth random homographies) and :class:`StaticSceneSource` (a camera
trajectory over a static scene, each trajectory frame a view repeated over time). Each serves the
grid shape it was built with or, per sample, a bucket's :class:`~fourd.data.buckets.Grid`
(``fits(meta, grid)`` says whether a scene can fill it).
"""
from __future__ import annotations

import logging
import zlib
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from fourd.data.buckets import Grid
from fourd.data.format import CorruptSampleError, SceneFormatError, SceneMeta
from fourd.data.homography import pseudo_views
from fourd.data.scene_io import SceneReader, list_scenes, open_scene, read_meta
from fourd.data.transforms import ResizeCrop

__all__ = ["SceneSource", "MultiViewSource", "HomographyVideoSource", "StaticSceneSource", "sample_clip"]

logger = logging.getLogger(__name__)

Stride = Union[int, tuple[int, int]]


def _draw_stride(stride: Stride, rng: np.random.Generator) -> int:
    if isinstance(stride, int):
        return stride
    return int(rng.integers(stride[0], stride[1] + 1))


def _min_stride(stride: Stride) -> int:
    return stride if isinstance(stride, int) else int(stride[0])


def _span(count: int, stride: int) -> int:
    """Frames covered by ``count`` frames ``stride`` apart."""
    return (count - 1) * stride + 1


def sample_clip(available: int, count: int, stride: int, rng: np.random.Generator, scene: str, what: str = "frames") -> list[int]:
    """``count`` indices ``start + stride * i`` inside ``range(available)`` with a random start.

    Raises :class:`SceneFormatError` naming ``scene`` when ``available`` is too small.
    """
    span = _span(count, stride)
    if available < span:
        raise SceneFormatError(
            f"scene {scene}: has {available} {what}, needs {span} ({count} {what} at stride {stride})"
        )
    start = int(rng.integers(0, available - span + 1))
    return [start + stride * i for i in range(count)]


class SceneSource(Dataset):
    """Base of the sources: scene list, seeding, resize/crop and the skip-corrupt-samples policy.

    ``scenes``: a dataset root URL (see :func:`list_scenes`) or a list of scene URLs.
    ``num_views`` V and ``num_frames`` T of every sample; ``size`` (H, W) output pixels (together
    :attr:`grid`, the default of :meth:`sample`'s ``grid``); ``crop`` "center" | "random".
    ``__getitem__(i)`` is deterministic in (``seed``, epoch, ``i``); a
    corrupt scene is logged, counted in ``self.skipped`` (this process) and in the sample's
    ``skipped``, and replaced by the next scene (``i + 1``, ...), up to ``max_skips`` times.
    Format errors (too few frames or views, mismatched sizes) are raised, naming the scene.
    """

    kind = "dynamic"

    def __init__(self, scenes: Union[str, Sequence[str]], num_views: int, num_frames: int, size: tuple[int, int],
                 crop: str = "center", seed: int = 0, max_skips: int = 8) -> None:
        self.scenes = list_scenes(scenes) if isinstance(scenes, str) else list(scenes)
        if not self.scenes:
            raise ValueError(f"{type(self).__name__}: no scenes given")
        self.num_views, self.num_frames, self.size = num_views, num_frames, tuple(size)
        self.crop, self.seed, self.max_skips = crop, seed, max_skips
        self.epoch = 0
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.scenes)

    @property
    def grid(self) -> Grid:
        """The grid shape this source was built with."""
        return Grid(self.num_views, self.num_frames, *self.size)

    def meta(self, index: int) -> SceneMeta:
        """Scene ``index``'s metadata (:func:`read_meta`: no frame decoded where the format allows)."""
        return read_meta(self.scenes[index])

    def fits(self, meta: SceneMeta, grid: Grid) -> bool:
        """Whether a scene with ``meta`` can fill ``grid`` (implemented by each source)."""
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch that seeds ``__getitem__``."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        return self.sample(index, np.random.default_rng([self.seed, self.epoch, index]))

    def sample(self, index: int, rng: np.random.Generator, grid: Optional[Grid] = None) -> dict:
        """The sample for scene ``index`` drawn with ``rng`` at ``grid`` (default :attr:`grid`; see the
        class docstring for skipping)."""
        skipped = 0
        for attempt in range(self.max_skips + 1):
            url = self.scenes[(index + attempt) % len(self.scenes)]
            try:
                sample = self.load(open_scene(url), rng, grid or self.grid)
            except CorruptSampleError as e:
                self.skipped += 1
                skipped += 1
                logger.warning("%s: skipping corrupt sample %s (%s); %d skipped so far", type(self).__name__, url, e, self.skipped)
                continue
            sample["skipped"] = skipped
            return sample
        raise RuntimeError(f"{type(self).__name__}: {skipped} corrupt scenes in a row starting at {self.scenes[index]}")

    def load(self, reader: SceneReader, rng: np.random.Generator, grid: Grid) -> dict:
        """Build one sample of ``grid``'s shape from an opened scene (implemented by each source)."""
        raise NotImplementedError

    def _plan(self, reader: SceneReader, rng: np.random.Generator, grid: Grid) -> ResizeCrop:
        return ResizeCrop.plan((reader.meta.height, reader.meta.width), (grid.height, grid.width), self.crop, rng)

    def _pack(self, frames: torch.Tensor, reader: SceneReader, extrinsics: Optional[torch.Tensor],
              intrinsics: Optional[torch.Tensor]) -> dict:
        V, T = frames.shape[:2]
        if extrinsics is None:
            extrinsics = torch.full((V, T, 3, 4), float("nan"))
            intrinsics = torch.full((V, T, 3, 3), float("nan"))
        return {
            "frames": frames,
            "cameras": {"extrinsics": extrinsics.contiguous(), "intrinsics": intrinsics.contiguous()},
            "has_cameras": bool(torch.isfinite(extrinsics).all()),
            "kind": self.kind,
            "scene": reader.name,
            "caption": reader.meta.caption or "",
            "drop_freeze_time_frame_cond": self.kind == "static",
        }


class _Windowed(SceneSource):
    """A source that reads a clip of ``frame_stride``-spaced frames from a scene: ``window`` "random"
    (a random start and, for a (min, max) ``frame_stride``, a random stride) or "chunks" (one of the
    scene's non-overlapping windows ``[c * span, (c + 1) * span)`` from frame 0, the first
    ``windows`` of them at most; an int stride): the draw that pre-encoded latents can reproduce
    (``launch/precompute.py`` encodes every chunk)."""

    def __init__(self, scenes, num_views: int, num_frames: int, size: tuple[int, int], frame_stride: Stride = 1,
                 window: str = "random", windows: Optional[int] = None, **kwargs) -> None:
        super().__init__(scenes, num_views, num_frames, size, **kwargs)
        if window not in ("random", "chunks"):
            raise ValueError(f"{type(self).__name__}: window must be 'random' or 'chunks', got {window!r}")
        if window == "chunks" and not isinstance(frame_stride, int):
            raise ValueError(f"{type(self).__name__}: window='chunks' needs an int frame_stride, got {frame_stride!r}")
        self.frame_stride, self.window, self.windows = frame_stride, window, windows

    def window_count(self, meta: SceneMeta, frames: int) -> int:
        """Chunks of ``frames`` frames at the (int) stride in a scene with ``meta`` (``windows`` at most)."""
        count = meta.num_frames // _span(frames, _min_stride(self.frame_stride))
        return min(count, self.windows) if self.windows else count

    def _times(self, meta: SceneMeta, frames: int, rng: np.random.Generator) -> tuple[list[int], Optional[int]]:
        """Frame indices of the clip and its chunk (None for a random window)."""
        if self.window == "random":
            return sample_clip(meta.num_frames, frames, _draw_stride(self.frame_stride, rng), rng, meta.name), None
        count = self.window_count(meta, frames)
        if count < 1:
            span = _span(frames, self.frame_stride)
            raise SceneFormatError(f"scene {meta.name}: has {meta.num_frames} frames, needs {span} ({frames} frames at stride {self.frame_stride})")
        chunk = int(rng.integers(count))
        return self.chunk_times(frames, chunk), chunk

    def chunk_times(self, frames: int, chunk: int) -> list[int]:
        """Frame indices of chunk ``chunk`` of ``frames`` frames (``window="chunks"``)."""
        return [chunk * _span(frames, self.frame_stride) + self.frame_stride * i for i in range(frames)]


class MultiViewSource(_Windowed):
    """Synchronized multi-view video scenes -> V of their views x a T-frame clip.

    ``frame_stride``: int or inclusive (min, max) range drawn per sample; ``window`` / ``windows``:
    where the clip lies (:class:`_Windowed`); ``view_selection``: "contiguous" (V consecutive
    views, order kept: a continuous arc of a camera ring) or "random" (V distinct views, sorted);
    ``with_depth`` adds ``depth`` (the scene must store depth).
    """

    kind = "dynamic"

    def __init__(self, scenes, num_views: int, num_frames: int, size: tuple[int, int], frame_stride: Stride = 1,
                 view_selection: str = "contiguous", with_depth: bool = False, **kwargs) -> None:
        super().__init__(scenes, num_views, num_frames, size, frame_stride, **kwargs)
        if view_selection not in ("contiguous", "random"):
            raise ValueError(f"MultiViewSource: view_selection must be 'contiguous' or 'random', got {view_selection!r}")
        self.view_selection, self.with_depth = view_selection, with_depth

    def fits(self, meta: SceneMeta, grid: Grid) -> bool:
        """Enough views and frames (at the smallest stride)."""
        return meta.num_views >= grid.views and meta.num_frames >= _span(grid.frames, _min_stride(self.frame_stride))

    def draw(self, meta: SceneMeta, rng: np.random.Generator, grid: Grid) -> tuple[list[int], list[int], Optional[int]]:
        """The views, frame indices and chunk (or None) of a sample."""
        if self.view_selection == "contiguous":
            views = sample_clip(meta.num_views, grid.views, 1, rng, meta.name, "views")
        else:
            if meta.num_views < grid.views:
                raise SceneFormatError(f"scene {meta.name}: has {meta.num_views} views, needs {grid.views}")
            views = sorted(rng.choice(meta.num_views, grid.views, replace=False).tolist())
        return (views, *self._times(meta, grid.frames, rng))

    def load(self, reader: SceneReader, rng: np.random.Generator, grid: Grid) -> dict:
        meta = reader.meta
        views, times, _ = self.draw(meta, rng, grid)
        plan = self._plan(reader, rng, grid)
        frames = plan.frames(torch.stack([reader.read_frames(v, times) for v in views]))
        extrinsics = intrinsics = None
        if meta.has_cameras:
            extrinsics = meta.extrinsics[views][:, times]
            intrinsics = plan.intrinsics(meta.intrinsics[views][:, times])
        sample = self._pack(frames, reader, extrinsics, intrinsics)
        if self.with_depth:
            sample["depth"] = plan.depth(torch.stack([reader.read_depth(v, times) for v in views]))
        return sample


class HomographyVideoSource(_Windowed):
    """Monocular videos -> V synchronized pseudo-views by random smooth 2D homographies.

    A T-frame clip of one view (view 0 of multi-view scenes unless ``random_source_view``) is
    resized/cropped to ``size``; pseudo-view ``v`` samples it through its own homography path
    (:func:`random_corner_path`: a random start and end region, smoothly interpolated over time).
    With ``identity_first_view`` view 0 is the clip itself. Cameras are unknown (NaN). With
    ``window="chunks"`` a sample draws its chunk and one of ``variants`` homography sets per chunk,
    each seeded by (``seed``, scene name, chunk, variant) (:meth:`variant_rng`).
    """

    kind = "homography"

    def __init__(self, scenes, num_views: int, num_frames: int, size: tuple[int, int], frame_stride: Stride = 1,
                 identity_first_view: bool = True, random_source_view: bool = False, min_scale: float = 0.7,
                 max_rotation_deg: float = 8.0, jitter: float = 0.08, variants: int = 4, **kwargs) -> None:
        super().__init__(scenes, num_views, num_frames, size, frame_stride, **kwargs)
        self.identity_first_view, self.random_source_view, self.variants = identity_first_view, random_source_view, variants
        self.path_args = {"min_scale": min_scale, "max_rotation_deg": max_rotation_deg, "jitter": jitter}

    def fits(self, meta: SceneMeta, grid: Grid) -> bool:
        """Enough frames (at the smallest stride) in a view."""
        return meta.num_frames >= _span(grid.frames, _min_stride(self.frame_stride))

    def variant_rng(self, scene: str, chunk: int, variant: int) -> np.random.Generator:
        """The generator of homography set ``variant`` of ``scene``'s ``chunk``."""
        return np.random.default_rng([self.seed, zlib.crc32(scene.encode("utf-8")), chunk, variant])

    def draw(self, meta: SceneMeta, rng: np.random.Generator, grid: Grid) -> tuple[int, list[int], Optional[int], Optional[int]]:
        """The source view, frame indices, chunk and homography variant (None, None for a random window)."""
        view = int(rng.integers(meta.num_views)) if self.random_source_view else 0
        times, chunk = self._times(meta, grid.frames, rng)
        return view, times, chunk, None if chunk is None else int(rng.integers(self.variants))

    def warp(self, clip: torch.Tensor, views: int, rng: np.random.Generator) -> torch.Tensor:
        """Pseudo-views ``[V, T, 3, H, W]`` of ``clip [T, 3, H, W]`` (:func:`pseudo_views` with this source's settings)."""
        return pseudo_views(clip, views, rng, self.identity_first_view, **self.path_args)

    def load(self, reader: SceneReader, rng: np.random.Generator, grid: Grid) -> dict:
        meta = reader.meta
        view, times, chunk, variant = self.draw(meta, rng, grid)
        clip = self._plan(reader, rng, grid).frames(reader.read_frames(view, times))  # [T, 3, H, W]
        paths = rng if chunk is None else self.variant_rng(meta.name, chunk, variant)
        return self._pack(self.warp(clip, grid.views, paths), reader, None, None)


class StaticSceneSource(SceneSource):
    """Camera trajectories over static scenes -> V views, each one trajectory frame repeated T times.

    The trajectory is view 0's frame sequence (``random_source_view``: a random view) or, for a
    scene with a single frame per view, its views in order. Scenes of kind "dynamic" with more
    than one frame are rejected (their content moves). V trajectory frames ``view_stride``
    apart (int or (min, max)) become the views. Samples set ``drop_freeze_time_frame_cond``.
    """

    kind = "static"

    def __init__(self, scenes, num_views: int, num_frames: int, size: tuple[int, int], view_stride: Stride = 1,
                 random_source_view: bool = False, with_depth: bool = False, **kwargs) -> None:
        super().__init__(scenes, num_views, num_frames, size, **kwargs)
        self.view_stride, self.random_source_view, self.with_depth = view_stride, random_source_view, with_depth

    def fits(self, meta: SceneMeta, grid: Grid) -> bool:
        """Not moving content, and enough trajectory frames (at the smallest stride) for the views."""
        return (meta.num_frames == 1 or meta.kind != "dynamic") and self.trajectory_length(meta) >= _span(grid.views, _min_stride(self.view_stride))

    @staticmethod
    def trajectory_length(meta: SceneMeta) -> int:
        """Trajectory frames of a scene: its views for a single-frame scene, else its frames."""
        return meta.num_views if meta.num_frames == 1 else meta.num_frames

    def draw(self, meta: SceneMeta, rng: np.random.Generator, grid: Grid) -> list[tuple[int, int]]:
        """The (view, frame) of the scene shown by each output view."""
        along_views = meta.num_frames == 1
        if meta.kind == "dynamic" and not along_views:
            raise SceneFormatError(f"scene {meta.name}: kind 'dynamic' (moving content) cannot serve as a static scene")
        picks = sample_clip(self.trajectory_length(meta), grid.views, _draw_stride(self.view_stride, rng), rng, meta.name,
                            "views" if along_views else "trajectory frames")
        source = int(rng.integers(meta.num_views)) if self.random_source_view and not along_views else 0
        return [(p, 0) if along_views else (source, p) for p in picks]

    def load(self, reader: SceneReader, rng: np.random.Generator, grid: Grid) -> dict:
        meta = reader.meta
        cells = self.draw(meta, rng, grid)  # (view, frame) per output view
        plan = self._plan(reader, rng, grid)
        T = grid.frames
        images = plan.frames(torch.cat([reader.read_frames(v, [t]) for v, t in cells]))  # [V, 3, H, W]
        frames = images[:, None].expand(-1, T, -1, -1, -1).contiguous()
        extrinsics = intrinsics = None
        if meta.has_cameras:
            extrinsics = torch.stack([meta.extrinsics[v, t] for v, t in cells])[:, None].expand(-1, T, -1, -1)
            intrinsics = plan.intrinsics(torch.stack([meta.intrinsics[v, t] for v, t in cells]))[:, None].expand(-1, T, -1, -1)
        sample = self._pack(frames, reader, extrinsics, intrinsics)
        if self.with_depth:
            depth = plan.depth(torch.cat([reader.read_depth(v, [t]) for v, t in cells]))
            sample["depth"] = depth[:, None].expand(-1, T, -1, -1).contiguous()
        return sample
