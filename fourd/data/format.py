"""The on-disk multi-view video scene format (version 1): metadata, paths and the in-memory scene.

A scene is a directory (any fsspec URL) holding ``scene.json`` and per-view RGB as a folder of
PNG/JPEG frames ``views/<v:03d>/<t:05d>.png`` or one video file ``views/<v:03d>.mp4``; optional
depth ``depth/<v:03d>/<t:05d>.npy`` (float32 metres, 0 = unknown) and instance masks
``masks/<v:03d>/<t:05d>.png`` (uint8, 0 = background). ``docs/data_format.md`` is the full
specification; this module is its single source of truth in code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import torch

__all__ = [
    "FORMAT_VERSION",
    "SCENE_KINDS",
    "RGB_FORMATS",
    "SceneFormatError",
    "CorruptSampleError",
    "SceneMeta",
    "Scene",
    "view_dir",
    "frame_path",
    "video_path",
    "depth_path",
    "mask_path",
]

FORMAT_VERSION = 1
SCENE_KINDS = ("dynamic", "static", "monocular")
RGB_FORMATS = ("png", "jpg", "mp4")


class SceneFormatError(ValueError):
    """A scene violates the format or cannot serve a request (too few frames/views, size mismatch)."""


class CorruptSampleError(RuntimeError):
    """A file of a scene could not be decoded (corrupt or truncated image, video or array)."""


def view_dir(kind: str, view: int) -> str:
    """Relative folder of one view's per-frame files, e.g. ``views/003`` (``kind``: views|depth|masks)."""
    return f"{kind}/{view:03d}"


def frame_path(view: int, frame: int, ext: str = "png") -> str:
    """Relative path of one RGB frame, ``views/<v:03d>/<t:05d>.<ext>``."""
    return f"{view_dir('views', view)}/{frame:05d}.{ext}"


def video_path(view: int) -> str:
    """Relative path of one view's video file, ``views/<v:03d>.mp4``."""
    return f"views/{view:03d}.mp4"


def depth_path(view: int, frame: int) -> str:
    """Relative path of one depth map, ``depth/<v:03d>/<t:05d>.npy`` (float32 [H, W], metres)."""
    return f"{view_dir('depth', view)}/{frame:05d}.npy"


def mask_path(view: int, frame: int) -> str:
    """Relative path of one instance mask, ``masks/<v:03d>/<t:05d>.png`` (uint8 [H, W])."""
    return f"{view_dir('masks', view)}/{frame:05d}.png"


def _camera_tensor(value: Any, num_views: int, num_frames: int, rows: int, cols: int, what: str, name: str) -> torch.Tensor:
    """Parse per-view ``[V, r, c]`` or per-view-and-frame ``[V, T, r, c]`` nested lists to ``[V, T, r, c]``."""
    try:
        t = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError) as e:
        raise SceneFormatError(f"scene {name}: cameras.{what} is not a numeric array ({e})") from None
    if t.shape == (num_views, rows, cols):
        t = t[:, None].expand(num_views, num_frames, rows, cols)
    if t.shape != (num_views, num_frames, rows, cols):
        raise SceneFormatError(
            f"scene {name}: cameras.{what} has shape {tuple(t.shape)}, expected "
            f"[{num_views}, {rows}, {cols}] or [{num_views}, {num_frames}, {rows}, {cols}]"
        )
    if not torch.isfinite(t).all():
        raise SceneFormatError(f"scene {name}: cameras.{what} holds non-finite values")
    return t.float().contiguous()


@dataclass
class SceneMeta:
    """Parsed ``scene.json``.

    ``extrinsics`` [V, T, 3, 4] OpenCV camera-from-world (world units, metres for synthetic data)
    and ``intrinsics`` [V, T, 3, 3] in pixels of the stored ``height x width`` frames, pixel
    ``(i, j)`` covering ``[j, j+1] x [i, i+1]`` (centre at ``+0.5``); both ``None`` when unknown.
    """

    name: str
    kind: str
    num_views: int
    num_frames: int
    height: int
    width: int
    fps: float = 24.0
    rgb_format: str = "png"
    has_depth: bool = False
    has_masks: bool = False
    extrinsics: Optional[torch.Tensor] = None
    intrinsics: Optional[torch.Tensor] = None
    caption: Optional[str] = None
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.version != FORMAT_VERSION:
            raise SceneFormatError(f"scene {self.name}: unsupported format version {self.version} (supported: {FORMAT_VERSION})")
        if self.kind not in SCENE_KINDS:
            raise SceneFormatError(f"scene {self.name}: kind {self.kind!r} not one of {SCENE_KINDS}")
        if self.rgb_format not in RGB_FORMATS:
            raise SceneFormatError(f"scene {self.name}: rgb_format {self.rgb_format!r} not one of {RGB_FORMATS}")
        for key in ("num_views", "num_frames", "height", "width"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise SceneFormatError(f"scene {self.name}: {key} must be a positive int, got {value!r}")
        if (self.extrinsics is None) != (self.intrinsics is None):
            raise SceneFormatError(f"scene {self.name}: cameras need both extrinsics and intrinsics")
        if self.caption is not None and not isinstance(self.caption, str):
            raise SceneFormatError(f"scene {self.name}: caption must be a string, got {type(self.caption).__name__}")

    @property
    def has_cameras(self) -> bool:
        """Whether calibrated cameras are stored."""
        return self.extrinsics is not None

    def to_json(self) -> str:
        """Serialise to the ``scene.json`` text (cameras stored per view and frame)."""
        doc: dict[str, Any] = {
            "version": self.version,
            "name": self.name,
            "kind": self.kind,
            "num_views": self.num_views,
            "num_frames": self.num_frames,
            "fps": self.fps,
            "height": self.height,
            "width": self.width,
            "rgb_format": self.rgb_format,
            "depth": self.has_depth,
            "masks": self.has_masks,
        }
        if self.caption is not None:
            doc["caption"] = self.caption
        if self.has_cameras:
            doc["cameras"] = {"extrinsics": self.extrinsics.tolist(), "intrinsics": self.intrinsics.tolist()}
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str, default_name: str) -> "SceneMeta":
        """Parse ``scene.json`` text; ``default_name`` (the directory name) is used when no name is stored.

        Raises :class:`SceneFormatError` naming the scene on any missing or malformed field.
        """
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise SceneFormatError(f"scene {default_name}: scene.json is not valid JSON ({e})") from None
        name = str(doc.get("name", default_name))
        missing = [k for k in ("version", "kind", "num_views", "num_frames", "height", "width") if k not in doc]
        if missing:
            raise SceneFormatError(f"scene {name}: scene.json lacks {', '.join(missing)}")
        meta = cls(
            name=name,
            kind=doc["kind"],
            num_views=doc["num_views"],
            num_frames=doc["num_frames"],
            height=doc["height"],
            width=doc["width"],
            fps=float(doc.get("fps", 24.0)),
            rgb_format=doc.get("rgb_format", "png"),
            has_depth=bool(doc.get("depth", False)),
            has_masks=bool(doc.get("masks", False)),
            caption=doc.get("caption"),
            version=doc["version"],
        )
        cams = doc.get("cameras")
        if cams is not None:
            if "extrinsics" not in cams or "intrinsics" not in cams:
                raise SceneFormatError(f"scene {name}: cameras need both extrinsics and intrinsics")
            V, T = meta.num_views, meta.num_frames
            meta.extrinsics = _camera_tensor(cams["extrinsics"], V, T, 3, 4, "extrinsics", name)
            meta.intrinsics = _camera_tensor(cams["intrinsics"], V, T, 3, 3, "intrinsics", name)
        return meta


@dataclass
class Scene:
    """A multi-view video scene in memory.

    - ``frames``: float32 [V, T, 3, H, W] in [0, 1].
    - ``depth``: float32 [V, T, H, W] camera z-depth in metres (0 = unknown), or ``None``.
    - ``masks``: uint8 [V, T, H, W] instance ids (0 = background), or ``None``.
    - ``extrinsics``: float32 [V, T, 3, 4] OpenCV camera-from-world, or ``None``.
    - ``intrinsics``: float32 [V, T, 3, 3] in pixels (pixel centres at ``+0.5``), or ``None``.
    - ``object_centers`` [K, T, 3] world positions and ``object_radii`` [K] bounding radii (metres)
      of the objects whose ids are ``1..K`` in ``masks``: set by the synthetic generator, not stored
      on disk.
    - ``caption``: text describing the scene (stored in ``scene.json``), or ``None``.
    """

    name: str
    kind: str
    frames: torch.Tensor
    fps: float = 24.0
    depth: Optional[torch.Tensor] = None
    masks: Optional[torch.Tensor] = None
    extrinsics: Optional[torch.Tensor] = None
    intrinsics: Optional[torch.Tensor] = None
    object_centers: Optional[torch.Tensor] = None
    object_radii: Optional[torch.Tensor] = None
    caption: Optional[str] = None

    def meta(self, rgb_format: str = "png") -> SceneMeta:
        """The :class:`SceneMeta` describing this scene when written with ``rgb_format``."""
        V, T, _, H, W = self.frames.shape
        return SceneMeta(
            name=self.name,
            kind=self.kind,
            num_views=V,
            num_frames=T,
            height=H,
            width=W,
            fps=float(self.fps),
            rgb_format=rgb_format,
            has_depth=self.depth is not None,
            has_masks=self.masks is not None,
            extrinsics=self.extrinsics,
            intrinsics=self.intrinsics,
            caption=self.caption,
        )
