"""Objaverse-style multi-view renders (per-view frame folders + one camera JSON) -> dynamic scenes.

Layout::

    <root>/<object>/cameras.json            cameras (below)
    <root>/<object>/<view>/<frame>.png      each view's frames, sorted by file name (RGBA is composited over ``background``)
    <root>/<object>/caption.txt             optional caption (or "caption" in cameras.json; or a captions file, e.g. Cap3D's csv)

``cameras.json`` states its convention (transforms-style keys, as nerfstudio / Blender NeRF files)::

    {"convention": "opengl",          # matrix axes: "opengl" = "blender" (x right, y up, z back; default) or "opencv"
     "matrix": "camera_to_world",     # or "world_to_camera"
     "camera_angle_x": 0.6911,        # horizontal field of view in radians, or fl_x, fl_y, cx, cy [, w, h] in pixels
     "fps": 24,                       # optional
     "views": [{"file_path": "000", "transform_matrix": <4x4 or 3x4>},        # a fixed camera
               {"file_path": "001", "transform_matrix": [<4x4>, <4x4>, ...]}]}  # or one matrix per frame (moving camera)

Views may override the intrinsics keys. All views must hold the same number of frames (a
synchronized capture); Blender's ``matrix_world`` of the camera object is exactly ``camera_to_world``
in ``opengl`` axes. Renders with a transparent background get a white one by default (the paper's
Objaverse grids have white backgrounds).
"""
from __future__ import annotations

import posixpath
from typing import Optional

import numpy as np

from fourd.data.readers.common import (BrokenItem, Item, Reader, SceneWriter, find_scene_dirs, item_name, load_rgb,
                                       parse_background, read_text)
from fourd.data.readers.geometry import c2w_to_w2c, invert_pose, undistort_image
from fourd.data.readers.nerfstudio import json_intrinsics, load_json
from fourd.data.scene_io import IMAGE_EXTENSIONS

__all__ = ["ObjaverseRenders"]


def _extrinsics(matrix, convention: str, kind: str, num_frames: int, what: str) -> np.ndarray:
    """One view's ``transform_matrix`` -> OpenCV camera-from-world ``[num_frames, 3, 4]``."""
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape[-2:] not in ((4, 4), (3, 4)) or m.ndim not in (2, 3) or not np.isfinite(m).all():
        raise BrokenItem(f"{what}: transform_matrix must be a 4x4 / 3x4 matrix or one per frame, got shape {m.shape}")
    if m.ndim == 3 and len(m) != num_frames:
        raise BrokenItem(f"{what}: {len(m)} matrices for {num_frames} frames")
    if kind == "world_to_camera":  # bring to camera-to-world, then convert the axes
        m = invert_pose(m)
    elif kind != "camera_to_world":
        raise BrokenItem(f"{what}: matrix must be 'camera_to_world' or 'world_to_camera', got {kind!r}")
    if convention not in ("opengl", "blender", "opencv"):
        raise BrokenItem(f"{what}: convention must be 'opengl', 'blender' or 'opencv', got {convention!r}")
    w2c = c2w_to_w2c(m, convention)
    return np.broadcast_to(w2c, (num_frames, 3, 4)) if w2c.ndim == 2 else w2c


class ObjaverseRenders(Reader):
    """Reader of per-view render folders with a ``cameras.json`` (see the module docstring).

    Options: ``background`` ("white" default | "black" | [r, g, b] 0-255 | "none" to drop alpha),
    ``cameras_file`` (name of the camera JSON, default ``cameras.json``).
    """

    name = "objaverse"
    kind = "dynamic"
    rgb_format = "png"
    layout = "<root>/<object>/cameras.json with <root>/<object>/<view>/<frame>.png folders"

    def __init__(self, root: str, background="white", cameras_file: str = "cameras.json") -> None:
        super().__init__(root)
        self.background, self.cameras_file = parse_background(background), cameras_file

    def items(self) -> list[Item]:
        dirs = find_scene_dirs(self.fs, self.root, self.cameras_file)
        if not dirs:
            raise self.none_found()
        return [Item(item_name(self.root, d), d) for d in dirs]

    def caption(self, item: Item) -> Optional[str]:
        text = read_text(self.fs, posixpath.join(item.url, "caption.txt"))
        if text is None:
            doc = load_json(self.fs, posixpath.join(item.url, self.cameras_file), f"scene {item.name}")
            text = str(doc["caption"]) if doc.get("caption") else None
        return text

    def convert(self, item: Item, writer: SceneWriter) -> Optional[float]:
        doc = load_json(self.fs, posixpath.join(item.url, self.cameras_file), f"scene {item.name}")
        views = doc.get("views")
        if not isinstance(views, list) or not views or not all(isinstance(v, dict) and "file_path" in v for v in views):
            raise BrokenItem(f"scene {item.name}: {self.cameras_file} needs a non-empty 'views' list of {{file_path, transform_matrix}}")
        files = []
        for view in views:
            folder = posixpath.join(item.url, str(view["file_path"]))
            names = sorted(p for p in self.fs.ls(folder, detail=False) if p.lower().endswith(IMAGE_EXTENSIONS)) if self.fs.isdir(folder) else []
            if not names:
                raise BrokenItem(f"scene {item.name}: view folder {folder} holds no frames")
            files.append(names)
        if len({len(f) for f in files}) != 1:
            raise BrokenItem(f"scene {item.name}: views have different frame counts {[len(f) for f in files]}")
        convention, kind = str(doc.get("convention", "opengl")), str(doc.get("matrix", "camera_to_world"))
        for v, (view, names) in enumerate(zip(views, files)):
            what = f"scene {item.name} view {view['file_path']}"
            extrinsics = _extrinsics(view.get("transform_matrix"), convention, kind, len(names), what)
            for t, path in enumerate(names):
                image = load_rgb(self.fs, path, self.background)
                K, radial, tangential = json_intrinsics(view, doc, image.shape[:2], what)
                if any(radial) or any(tangential):
                    image = undistort_image(image, K, radial, tangential)
                writer.add(v, image, K, extrinsics[t])
        return doc.get("fps")
