"""RealEstate10K (and ACID, same files): camera trajectories of YouTube videos -> static scenes.

Layout (the dataset's camera files plus the frames a downloader extracted at their timestamps)::

    <root>/<sequence>.txt                  line 1: the video URL; then one line per frame:
                                           timestamp_us fx fy cx cy 0 0 r00 r01 r02 t0 r10 r11 r12 t1 r20 r21 r22 t2
    <frames>/<sequence>/<timestamp_us>.png frames named by their timestamp (.png or .jpg); <frames> defaults to <root>
    <frames>/<sequence>/caption.txt        optional caption

Intrinsics are normalised by the image size (``fx, cx`` by the width, ``fy, cy`` by the height); the
3x4 matrix is the OpenCV world-to-camera ``[R | t]`` (the dataset's documentation; pixelSplat and
MVSplat read it the same way: ``w2c = row[7:].reshape(3, 4)``). Each sequence becomes one
``static`` scene with one view whose frames follow the trajectory (cameras per frame).
"""
from __future__ import annotations

import posixpath
from typing import Optional

import fsspec
import numpy as np

from fourd.data.format import CorruptSampleError
from fourd.data.readers.common import (BrokenItem, Item, Reader, ReaderError, SceneWriter, add_trajectory, load_rgb, pick_frames,
                                       read_text)
from fourd.data.scene_io import IMAGE_EXTENSIONS

__all__ = ["RealEstate10K", "parse_camera_line"]


def parse_camera_line(line: str) -> Optional[tuple[int, np.ndarray, np.ndarray]]:
    """One camera line -> (timestamp in microseconds, normalised ``[fx, fy, cx, cy]``, world-to-camera
    ``[3, 4]``), or None when the line is not 19 numbers."""
    parts = line.split()
    if len(parts) != 19:
        return None
    try:
        values = np.array([float(p) for p in parts])
    except ValueError:
        return None
    if not np.isfinite(values).all():
        return None
    return int(parts[0]), values[1:5], values[7:19].reshape(3, 4)


class RealEstate10K(Reader):
    """Reader of RealEstate10K / ACID camera files + extracted frames (see the module docstring).

    Options: ``frames`` (URL of the folder holding ``<sequence>/`` frame folders; default the root),
    ``frame_stride`` (keep every n-th camera line), ``max_frames`` (cap per sequence).
    """

    name = "realestate10k"
    kind = "static"
    rgb_format = "jpg"
    layout = "<root>/<sequence>.txt camera files and <frames>/<sequence>/<timestamp_us>.png|jpg frames"

    def __init__(self, root: str, frames: Optional[str] = None, frame_stride: int = 1, max_frames: Optional[int] = None) -> None:
        super().__init__(root)
        self.frames_fs, self.frames_root = self.fs, self.root
        if frames is not None:
            self.frames_fs, path = fsspec.core.url_to_fs(frames)
            self.frames_root = path.rstrip("/")
            if not self.frames_fs.isdir(self.frames_root):
                raise ReaderError(f"{self.name}: frames folder {frames} is not a directory (expected <frames>/<sequence>/<timestamp_us>.png|jpg)")
        self.frame_stride, self.max_frames = int(frame_stride), max_frames

    def items(self) -> list[Item]:
        files = sorted(p for p in self.fs.ls(self.root, detail=False) if p.endswith(".txt"))
        if not files:
            raise self.none_found()
        return [Item(posixpath.basename(p)[:-4], p, {"frames": posixpath.join(self.frames_root, posixpath.basename(p)[:-4])}) for p in files]

    def caption(self, item: Item) -> Optional[str]:
        return read_text(self.frames_fs, posixpath.join(item.extra["frames"], "caption.txt"))

    def convert(self, item: Item, writer: SceneWriter) -> Optional[float]:
        folder = item.extra["frames"]
        if not self.frames_fs.isdir(folder):
            raise BrokenItem(f"sequence {item.name}: no frames folder {folder}")
        by_time = {}
        for path in self.frames_fs.ls(folder, detail=False):
            stem, ext = posixpath.splitext(posixpath.basename(path))
            if ext.lower() in IMAGE_EXTENSIONS and stem.isdigit():
                by_time[int(stem)] = path
        lines = self.fs.cat_file(item.url).decode("utf-8", errors="replace").splitlines()
        cameras = []
        for number, line in enumerate(lines):
            parsed = parse_camera_line(line)
            if parsed is None:
                if number > 0 and line.strip():  # line 0 is the video URL
                    writer.dropped += 1
                continue
            cameras.append(parsed)
        cameras = pick_frames(cameras, self.frame_stride, self.max_frames)
        kept: list[int] = []

        def load(camera):
            stamp, (fx, fy, cx, cy), w2c = camera
            path = by_time.get(stamp)
            if path is None:
                raise CorruptSampleError(f"sequence {item.name}: no frame for timestamp {stamp}")
            image = load_rgb(self.frames_fs, path)
            H, W = image.shape[:2]
            kept.append(stamp)
            return {"image": image, "K": np.array([[fx * W, 0, cx * W], [0, fy * H, cy * H], [0, 0, 1.0]]), "extrinsics": w2c}

        add_trajectory(writer, cameras, load)
        steps = np.diff(kept)
        return 1e6 / float(np.median(steps)) if len(steps) and np.median(steps) > 0 else None
