"""DL3DV and any nerfstudio-format capture (``transforms.json``) -> static scenes.

Layout::

    <root>/[<group>/]<scene>/transforms.json   e.g. DL3DV's 1K/<hash>/transforms.json (or <root> is one scene)
    <root>/[<group>/]<scene>/images*/...        the frames named by each frame's file_path
    <root>/[<group>/]<scene>/caption.txt        optional caption

``transforms.json`` (nerfstudio's format): ``frames`` = list of ``{"file_path", "transform_matrix"}``
where ``transform_matrix`` is the 4x4 camera-to-world in OpenGL/Blender camera axes (x right,
y up, z back); intrinsics ``fl_x, fl_y, cx, cy`` in pixels of an image of ``w x h`` (or
``camera_angle_x`` [, ``camera_angle_y``] in radians, as Blender/instant-ngp files have), shared at
the top level or given per frame; ``camera_model`` "OPENCV" (default; ``k1, k2, k3, p1, p2``
distortion, undistorted here) or "PINHOLE". Fisheye and equirectangular captures are not
supported (the scene is skipped). Frames are taken in file_path order (the capture order of
video-extracted frames) and become one view's trajectory. DL3DV's ``transforms.json`` names the
full-resolution ``images/`` while the 960P release ships ``images_4/``: pass ``image_dir=images_4``;
intrinsics are scaled from ``w x h`` to the size of the images read.
"""
from __future__ import annotations

import json
import math
import posixpath
from typing import Any, Mapping, Optional

import numpy as np

from fourd.data.format import CorruptSampleError
from fourd.data.readers.common import (BrokenItem, Item, Reader, SceneWriter, add_trajectory, find_scene_dirs, item_name, load_rgb,
                                       pick_frames)
from fourd.data.readers.geometry import c2w_to_w2c, pinhole_K, undistort_image

__all__ = ["Nerfstudio", "json_intrinsics", "load_json"]

def json_intrinsics(entry: Mapping[str, Any], shared: Mapping[str, Any], image_size: tuple[int, int], what: str
                    ) -> tuple[np.ndarray, tuple[float, ...], tuple[float, float]]:
    """Pixel intrinsics of an image of ``image_size`` (H, W) from nerfstudio/Blender keys (``entry``'s
    own keys win over ``shared``): ``K [3, 3]``, radial ``(k1, k2, k3)`` and tangential ``(p1, p2)``.

    ``fl_x``/``fl_y``/``cx``/``cy`` refer to an image of ``w x h`` (default: ``image_size``) and are
    scaled to ``image_size``; without ``fl_x``, ``camera_angle_x`` gives ``fl_x = w / 2 / tan(angle / 2)``
    (``fl_y`` from ``camera_angle_y``, else ``fl_x``). ``cx``/``cy`` default to the image centre.
    Raises :class:`BrokenItem` naming ``what`` when there is no focal length or the model is unsupported.
    """
    def get(key: str):
        return entry.get(key, shared.get(key))

    model = get("camera_model") or "OPENCV"
    if model not in ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE"):
        raise BrokenItem(f"{what}: camera_model {model!r} is not supported (OPENCV or PINHOLE; undistort fisheye captures first)")
    H, W = image_size
    w, h = float(get("w") or W), float(get("h") or H)
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None and get("camera_angle_x") is not None:
        fx = 0.5 * w / math.tan(0.5 * float(get("camera_angle_x")))
    if fy is None and get("camera_angle_y") is not None:
        fy = 0.5 * h / math.tan(0.5 * float(get("camera_angle_y")))
    if fx is None:
        raise BrokenItem(f"{what}: no focal length (fl_x or camera_angle_x)")
    fy = fx if fy is None else fy
    cx, cy = get("cx"), get("cy")
    cx, cy = (w / 2 if cx is None else cx), (h / 2 if cy is None else cy)
    sx, sy = W / w, H / h
    K = pinhole_K(float(fx) * sx, float(fy) * sy, float(cx) * sx, float(cy) * sy)
    radial = tuple(float(get(k) or 0.0) for k in ("k1", "k2", "k3"))
    tangential = (float(get("p1") or 0.0), float(get("p2") or 0.0))
    return K, radial, tangential


def load_json(fs, path: str, what: str) -> dict:
    """Parse a JSON object file; :class:`BrokenItem` naming ``what`` when missing or malformed."""
    try:
        doc = json.loads(fs.cat_file(path).decode("utf-8"))
    except FileNotFoundError:
        raise BrokenItem(f"{what}: missing {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BrokenItem(f"{what}: {path} is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BrokenItem(f"{what}: {path} is not a JSON object")
    return doc


class Nerfstudio(Reader):
    """Reader of nerfstudio ``transforms.json`` scenes such as DL3DV (see the module docstring).

    Options: ``image_dir`` (folder replacing the directory part of every ``file_path``, e.g.
    ``images_4``), ``frame_stride`` (keep every n-th frame), ``max_frames`` (cap per scene).
    """

    name = "dl3dv"
    kind = "static"
    rgb_format = "jpg"
    layout = "<root>/[<group>/]<scene>/transforms.json (nerfstudio format) with the images it names"

    def __init__(self, root: str, image_dir: Optional[str] = None, frame_stride: int = 1, max_frames: Optional[int] = None) -> None:
        super().__init__(root)
        self.image_dir, self.frame_stride, self.max_frames = image_dir, int(frame_stride), max_frames

    def items(self) -> list[Item]:
        dirs = find_scene_dirs(self.fs, self.root, "transforms.json")
        if not dirs:
            raise self.none_found()
        return [Item(item_name(self.root, d), d) for d in dirs]

    def convert(self, item: Item, writer: SceneWriter) -> Optional[float]:
        doc = load_json(self.fs, posixpath.join(item.url, "transforms.json"), f"scene {item.name}")
        frames = doc.get("frames")
        if not isinstance(frames, list) or not frames:
            raise BrokenItem(f"scene {item.name}: transforms.json has no frames")
        frames = sorted((f for f in frames if isinstance(f, dict) and "file_path" in f), key=lambda f: str(f["file_path"]))
        what = f"scene {item.name}"

        def load(frame):
            rel = str(frame["file_path"])
            if self.image_dir is not None:
                rel = posixpath.join(self.image_dir, posixpath.basename(rel))
            image = load_rgb(self.fs, posixpath.normpath(posixpath.join(item.url, rel)))
            K, radial, tangential = json_intrinsics(frame, doc, image.shape[:2], what)
            if any(radial) or any(tangential):
                image = undistort_image(image, K, radial, tangential)
            try:
                c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
            except (KeyError, TypeError, ValueError):
                c2w = np.zeros(0)
            if c2w.shape not in ((4, 4), (3, 4)) or not np.isfinite(c2w).all():
                raise CorruptSampleError(f"{what}: frame {rel} has no valid 4x4 transform_matrix")
            return {"image": image, "K": K, "extrinsics": c2w_to_w2c(c2w, "opengl")}

        add_trajectory(writer, pick_frames(frames, self.frame_stride, self.max_frames), load)
        return doc.get("fps")

