"""COLMAP sparse models (MVImgNet, any COLMAP capture) -> static scenes with sparse depth.

Layout::

    <root>/[<category>/]<scene>/sparse/0/{cameras,images,points3D}.{bin,txt}   (or sparse/ directly; or <root> is one scene)
    <root>/[<category>/]<scene>/images/<name>                                  the images named in images.bin/txt
    <root>/[<category>/]<scene>/caption.txt                                    optional caption

COLMAP's conventions (its documentation, "Output format"): ``images`` store the world-to-camera
rotation as a quaternion ``QW QX QY QZ`` and translation ``TX TY TZ`` in OpenCV camera axes
(``x_cam = R(q) x_world + t``); cameras are pixel intrinsics with the centre of the top-left pixel at
(0.5, 0.5), our convention. Supported camera models: SIMPLE_PINHOLE, PINHOLE, and the distorted
SIMPLE_RADIAL, RADIAL, OPENCV (images are undistorted here into the pinhole camera with the same
focal length and principal point); other models (fisheye, FULL_OPENCV, ...) skip the scene: run
``colmap image_undistorter`` first. Images are taken in name order as one view's trajectory. With
``depth`` (default) each frame gets a sparse depth map: the z of the 3D points that image observes,
at the pixels they project to (what the reconstructor's disk data needs: configs/recon_data/disk.yaml).

The three files are parsed here (text and binary; about 100 lines of numpy) rather than through
pycolmap, whose wheel installs 140 MB of compiled COLMAP for it.
"""
from __future__ import annotations

import posixpath
import struct
from typing import NamedTuple, Optional

import numpy as np

from fourd.data.format import CorruptSampleError
from fourd.data.readers.common import (BrokenItem, Item, Reader, SceneWriter, add_trajectory, find_scene_dirs, item_name, load_rgb,
                                       pick_frames)
from fourd.data.readers.geometry import pinhole_K, quat_wxyz_to_rotation, undistort_image

__all__ = ["Colmap", "ColmapCamera", "ColmapImage", "read_model", "CAMERA_MODELS"]

# COLMAP's camera model ids -> (name, number of parameters) (src/colmap/sensor/models.h).
CAMERA_MODELS = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5), 4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5), 8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12), 11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}


class ColmapCamera(NamedTuple):
    model: str
    width: int
    height: int
    params: np.ndarray


class ColmapImage(NamedTuple):
    qvec: np.ndarray  # world-to-camera rotation, (w, x, y, z)
    tvec: np.ndarray  # world-to-camera translation
    camera_id: int
    name: str
    point3d_ids: np.ndarray  # int64 [N], -1 = the keypoint has no 3D point


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("#")]


def _cameras_txt(text: str) -> dict[int, ColmapCamera]:
    cameras = {}
    for line in _lines(text):
        parts = line.split()
        if parts:
            cameras[int(parts[0])] = ColmapCamera(parts[1], int(parts[2]), int(parts[3]), np.array(parts[4:], dtype=np.float64))
    return cameras


def _images_txt(text: str) -> dict[int, ColmapImage]:
    images = {}
    lines = iter(_lines(text))
    for line in lines:
        if not line.strip():
            continue
        parts = line.split()
        points = next(lines, "").split()
        ids = np.array(points[2::3], dtype=np.int64)
        images[int(parts[0])] = ColmapImage(np.array(parts[1:5], dtype=np.float64), np.array(parts[5:8], dtype=np.float64),
                                            int(parts[8]), " ".join(parts[9:]), ids)
    return images


def _points_txt(text: str) -> dict[int, np.ndarray]:
    points = {}
    for line in _lines(text):
        parts = line.split()
        if parts:
            points[int(parts[0])] = np.array(parts[1:4], dtype=np.float64)
    return points


def _cameras_bin(data: bytes) -> dict[int, ColmapCamera]:
    (count,), offset, cameras = struct.unpack_from("<Q", data), 8, {}
    for _ in range(count):
        camera_id, model_id, width, height = struct.unpack_from("<iiQQ", data, offset)
        offset += 24
        if model_id not in CAMERA_MODELS:
            raise BrokenItem(f"unknown COLMAP camera model id {model_id}")
        name, n = CAMERA_MODELS[model_id]
        cameras[camera_id] = ColmapCamera(name, width, height, np.frombuffer(data, "<f8", n, offset).copy())
        offset += 8 * n
    return cameras


def _images_bin(data: bytes) -> dict[int, ColmapImage]:
    (count,), offset, images = struct.unpack_from("<Q", data), 8, {}
    for _ in range(count):
        values = struct.unpack_from("<i7di", data, offset)
        offset += 64
        end = data.index(b"\0", offset)
        name = data[offset:end].decode("utf-8")
        (num_points,) = struct.unpack_from("<Q", data, end + 1)
        offset = end + 9
        xy_id = np.frombuffer(data, np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")]), num_points, offset)
        offset += 24 * num_points
        images[values[0]] = ColmapImage(np.array(values[1:5]), np.array(values[5:8]), values[8], name, xy_id["id"].copy())
    return images


def _points_bin(data: bytes) -> dict[int, np.ndarray]:
    (count,), offset, points = struct.unpack_from("<Q", data), 8, {}
    for _ in range(count):
        point_id, x, y, z = struct.unpack_from("<Q3d", data, offset)
        (track_length,) = struct.unpack_from("<Q", data, offset + 43)  # after rgb (3 x u8) and error (f64)
        offset += 51 + 8 * track_length
        points[point_id] = np.array([x, y, z])
    return points


def read_model(fs, folder: str, with_points: bool = True):
    """``(cameras, images, points)`` of the COLMAP model in ``folder`` (``.bin`` files if present, else
    ``.txt``): ``{id: ColmapCamera}``, ``{id: ColmapImage}``, ``{id: xyz}`` (None without
    ``with_points``). Raises :class:`BrokenItem` when files are missing or malformed."""
    binary = fs.exists(posixpath.join(folder, "cameras.bin"))
    ext = "bin" if binary else "txt"
    parsers = {"cameras": (_cameras_bin, _cameras_txt), "images": (_images_bin, _images_txt), "points3D": (_points_bin, _points_txt)}
    out = []
    for what in ("cameras", "images", "points3D") if with_points else ("cameras", "images"):
        path = posixpath.join(folder, f"{what}.{ext}")
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            raise BrokenItem(f"missing {path}") from None
        try:
            out.append(parsers[what][0](data) if binary else parsers[what][1](data.decode("utf-8")))
        except (struct.error, ValueError, IndexError, UnicodeDecodeError) as e:
            raise BrokenItem(f"cannot parse {path} ({type(e).__name__}: {e})") from None
    return tuple(out) if with_points else (*out, None)


def camera_intrinsics(camera: ColmapCamera, what: str) -> tuple[np.ndarray, tuple[float, ...], tuple[float, float]]:
    """Pinhole ``K`` [3, 3], radial ``(k1, k2)`` and tangential ``(p1, p2)`` of a supported camera model."""
    p = camera.params
    if camera.model == "SIMPLE_PINHOLE":
        return pinhole_K(p[0], p[0], p[1], p[2]), (), (0.0, 0.0)
    if camera.model == "PINHOLE":
        return pinhole_K(p[0], p[1], p[2], p[3]), (), (0.0, 0.0)
    if camera.model == "SIMPLE_RADIAL":
        return pinhole_K(p[0], p[0], p[1], p[2]), (p[3],), (0.0, 0.0)
    if camera.model == "RADIAL":
        return pinhole_K(p[0], p[0], p[1], p[2]), (p[3], p[4]), (0.0, 0.0)
    if camera.model == "OPENCV":
        return pinhole_K(p[0], p[1], p[2], p[3]), (p[4], p[5]), (p[6], p[7])
    raise BrokenItem(f"{what}: COLMAP camera model {camera.model} is not supported (run colmap image_undistorter first)")


class Colmap(Reader):
    """Reader of COLMAP sparse models + images (see the module docstring).

    Options: ``image_dir`` (image folder in each scene, default ``images``), ``model_dir`` (model
    folder in each scene; default ``sparse/0``, else ``sparse``), ``depth`` (write sparse depth from
    the 3D points), ``frame_stride``, ``max_frames``.
    """

    name = "colmap"
    kind = "static"
    rgb_format = "jpg"
    layout = "<root>/[<category>/]<scene>/sparse/[0/]{cameras,images,points3D}.{bin,txt} and <scene>/images/"

    def __init__(self, root: str, image_dir: str = "images", model_dir: Optional[str] = None, depth: bool = True,
                 frame_stride: int = 1, max_frames: Optional[int] = None) -> None:
        super().__init__(root)
        self.image_dir, self.model_dir, self.depth = image_dir, model_dir, bool(depth)
        self.frame_stride, self.max_frames = int(frame_stride), max_frames

    def items(self) -> list[Item]:
        dirs = find_scene_dirs(self.fs, self.root, self.model_dir or "sparse")
        if not dirs:
            raise self.none_found()
        return [Item(item_name(self.root, d), d) for d in dirs]

    def _model_folder(self, scene: str) -> str:
        if self.model_dir is not None:
            return posixpath.join(scene, self.model_dir)
        nested = posixpath.join(scene, "sparse", "0")
        return nested if self.fs.isdir(nested) else posixpath.join(scene, "sparse")

    def convert(self, item: Item, writer: SceneWriter) -> Optional[float]:
        what = f"scene {item.name}"
        try:
            cameras, images, points = read_model(self.fs, self._model_folder(item.url), self.depth)
        except BrokenItem as e:
            raise BrokenItem(f"{what}: {e}") from None
        ordered = sorted(images.values(), key=lambda im: im.name)

        def load(image: ColmapImage):
            camera = cameras.get(image.camera_id)
            if camera is None:
                raise CorruptSampleError(f"{what}: image {image.name} names missing camera {image.camera_id}")
            K, radial, tangential = camera_intrinsics(camera, what)
            rgb = load_rgb(self.fs, posixpath.join(item.url, self.image_dir, image.name))
            if rgb.shape[:2] != (camera.height, camera.width):  # a downscaled copy of the images: scale K
                K = np.diag([rgb.shape[1] / camera.width, rgb.shape[0] / camera.height, 1.0]) @ K
            if any(radial) or any(tangential):
                rgb = undistort_image(rgb, K, radial, tangential)
            w2c = np.concatenate([quat_wxyz_to_rotation(image.qvec), image.tvec[:, None]], axis=1)
            out = {"image": rgb, "K": K, "extrinsics": w2c}
            if points is not None:
                ids = image.point3d_ids[image.point3d_ids >= 0]
                out["points"] = np.array([points[i] for i in ids if i in points]).reshape(-1, 3)
            return out

        add_trajectory(writer, pick_frames(ordered, self.frame_stride, self.max_frames), load)
        return None
