"""Kubric renders (the worker output behind MOVi; one render per camera for multi-view) -> dynamic scenes.

Layout (what ``kb.write_image_dict`` and ``kb.write_json(metadata.json)`` of a Kubric worker write)::

    <root>/<scene>/metadata.json, rgba_00000.png ..., depth_00000.tiff ...           one view
    <root>/<scene>/<view>/metadata.json, rgba_00000.png ..., depth_00000.tiff ...    several views, in name order
    <root>/<scene>/caption.txt                                                       optional caption

``metadata.json`` → ``camera``: ``focal_length`` and ``sensor_width`` (mm; square pixels, principal
point at the image centre, as ``kb.PerspectiveCamera.intrinsics``), ``positions`` [T, 3] (the camera
centre per frame) and ``quaternions`` [T, 4] in Kubric's (w, x, y, z) order, rotating Blender camera
axes (x right, y up, looking down -z) into the world; ``metadata.frame_rate``. Kubric's ``depth`` is
the distance to the camera centre (``PerspectiveCamera.z_to_depth``), converted here to the format's
z-depth. The views of a scene must have the same number of frames (they are one synchronized
capture); a missing frame skips the scene.
"""
from __future__ import annotations

import posixpath
from typing import Optional

import numpy as np

from fourd.data.readers.common import BrokenItem, Item, Reader, SceneWriter, load_float_image, load_rgb, parse_background
from fourd.data.readers.geometry import GL_TO_CV, invert_pose, pinhole_K, quat_wxyz_to_rotation, ray_distance_to_z
from fourd.data.readers.nerfstudio import load_json

__all__ = ["Kubric", "kubric_cameras"]


def kubric_cameras(camera: dict, size: tuple[int, int], what: str) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV camera-from-world ``[T, 3, 4]`` and pixel ``K [3, 3]`` of Kubric's ``camera`` metadata for
    frames of ``size`` (H, W)."""
    try:
        positions = np.asarray(camera["positions"], dtype=np.float64).reshape(-1, 3)
        quats = np.asarray(camera["quaternions"], dtype=np.float64).reshape(-1, 4)
        focal, sensor = float(camera["focal_length"]), float(camera["sensor_width"])
    except (KeyError, TypeError, ValueError) as e:
        raise BrokenItem(f"{what}: metadata.json camera lacks {e} (needs positions, quaternions, focal_length, sensor_width)") from None
    if len(positions) != len(quats) or not len(positions):
        raise BrokenItem(f"{what}: metadata.json camera has {len(positions)} positions and {len(quats)} quaternions")
    H, W = size
    f = focal / sensor * W
    c2w_cv = np.concatenate([quat_wxyz_to_rotation(quats) @ GL_TO_CV, positions[:, :, None]], axis=-1)
    return invert_pose(c2w_cv), pinhole_K(f, f, W / 2, H / 2)


class Kubric(Reader):
    """Reader of Kubric worker outputs (see the module docstring).

    Options: ``depth`` (write depth when ``depth_*.tiff`` exist for every view), ``background``
    (composite RGBA over "white" | "black" | [r, g, b]; default None drops alpha as Kubric's
    backgrounds are rendered).
    """

    name = "kubric"
    kind = "dynamic"
    rgb_format = "png"
    layout = "<root>/<scene>/[<view>/]metadata.json with rgba_00000.png ... (Kubric worker output)"

    def __init__(self, root: str, depth: bool = True, background=None) -> None:
        super().__init__(root)
        self.depth, self.background = bool(depth), parse_background(background)

    def items(self) -> list[Item]:
        items = []
        for entry in sorted(self.fs.ls(self.root, detail=False)):
            entry = entry.rstrip("/")
            if self.fs.isfile(posixpath.join(entry, "metadata.json")):
                views = [entry]
            else:
                views = sorted(posixpath.dirname(p) for p in self.fs.glob(posixpath.join(entry, "*", "metadata.json")))
            if views:
                items.append(Item(posixpath.basename(entry), entry, {"views": views}))
        if not items:
            raise self.none_found()
        return items

    def convert(self, item: Item, writer: SceneWriter) -> Optional[float]:
        metas = [load_json(self.fs, posixpath.join(v, "metadata.json"), f"scene {item.name}") for v in item.extra["views"]]
        counts = {len(m.get("camera", {}).get("positions", [])) for m in metas}
        if len(counts) != 1:
            raise BrokenItem(f"scene {item.name}: views have different frame counts {sorted(counts)}")
        num_frames = counts.pop()
        with_depth = self.depth and all(self.fs.exists(posixpath.join(v, "depth_00000.tiff")) for v in item.extra["views"])
        for view, (folder, meta) in enumerate(zip(item.extra["views"], metas)):
            what = f"scene {item.name} view {posixpath.basename(folder)}"
            extrinsics = K = None
            for t in range(num_frames):
                image = load_rgb(self.fs, posixpath.join(folder, f"rgba_{t:05d}.png"), self.background)
                if extrinsics is None:
                    extrinsics, K = kubric_cameras(meta.get("camera", {}), image.shape[:2], what)
                depth = None
                if with_depth:
                    depth = ray_distance_to_z(load_float_image(self.fs, posixpath.join(folder, f"depth_{t:05d}.tiff")), K)
                writer.add(view, image, K, extrinsics[t], depth=depth)
        return metas[0].get("metadata", {}).get("frame_rate")
