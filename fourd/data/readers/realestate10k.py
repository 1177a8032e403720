"""RealEstate10K (and ACID, same files): camera trajectories of YouTube videos -> static scenes.

Two layouts. The dataset's camera files plus the frames a downloader extracted at their timestamps::

    <root>/<sequence>.txt                  line 1: the video URL; then one line per frame:
                                           timestamp_us fx fy cx cy 0 0 r00 r01 r02 t0 r10 r11 r12 t1 r20 r21 r22 t2
    <frames>/<sequence>/<timestamp_us>.png frames named by their timestamp (.png or .jpg); <frames> defaults to <root>
    <frames>/<sequence>/caption.txt        optional caption

or pixelSplat's preprocessed chunks (what pixelSplat, MVSplat and DepthSplat train on)::

    <root>/index.json                      {sequence key: chunk file name}
    <root>/<chunk>.torch                   a list of {"key", "url", "timestamps" [N], "cameras" [N, 18], "images": N JPEG byte tensors}

where a ``cameras`` row is a camera line without its timestamp. Intrinsics are normalised by the
image size (``fx, cx`` by the width; ``fy, cy`` by the height); the 3x4 matrix is the OpenCV
world-to-camera ``[R | t]`` (the dataset's documentation; pixelSplat and MVSplat read it the same
way: ``w2c = row[6:].reshape(3, 4)`` of a chunk row). Each sequence becomes one ``static`` scene with
one view whose frames follow the trajectory (cameras per frame).
"""
from __future__ import annotations

import io
import json
import posixpath
from typing import Callable, Optional

import fsspec
import numpy as np
import torch

from fourd.data.format import CorruptSampleError
from fourd.data.readers.common import (BrokenItem, Item, Reader, ReaderError, SceneWriter, add_trajectory, decode_rgb, load_rgb,
                                       pick_frames, read_text)
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
    """Reader of RealEstate10K / ACID camera files + extracted frames, or of pixelSplat's chunks (see
    the module docstring; chunks are used when the root holds ``index.json``).

    Options: ``frames`` (URL of the folder holding ``<sequence>/`` frame folders; default the root),
    ``frame_stride`` (keep every n-th camera line), ``max_frames`` (cap per sequence).
    """

    name = "realestate10k"
    kind = "static"
    rgb_format = "jpg"
    layout = ("<root>/<sequence>.txt camera files and <frames>/<sequence>/<timestamp_us>.png|jpg frames, "
              "or pixelSplat's <root>/index.json + <chunk>.torch")

    def __init__(self, root: str, frames: Optional[str] = None, frame_stride: int = 1, max_frames: Optional[int] = None) -> None:
        super().__init__(root)
        self.frames_fs, self.frames_root = self.fs, self.root
        if frames is not None:
            self.frames_fs, path = fsspec.core.url_to_fs(frames)
            self.frames_root = path.rstrip("/")
            if not self.frames_fs.isdir(self.frames_root):
                raise ReaderError(f"{self.name}: frames folder {frames} is not a directory (expected <frames>/<sequence>/<timestamp_us>.png|jpg)")
        self.frame_stride, self.max_frames = int(frame_stride), max_frames
        self._chunk: tuple[str, dict] = ("", {})  # the last chunk read: (path, {key: example})

    def items(self) -> list[Item]:
        index = posixpath.join(self.root, "index.json")
        if self.fs.isfile(index):
            try:
                keys = json.loads(self.fs.cat_file(index).decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ReaderError(f"{self.name}: {index} is not valid JSON ({e})") from None
            chunks = {k: posixpath.join(self.root, str(v)) for k, v in keys.items()}
            return [Item(k, chunks[k], {"chunk": True}) for k in sorted(chunks, key=lambda k: (chunks[k], k))]
        files = sorted(p for p in self.fs.ls(self.root, detail=False) if p.endswith(".txt"))
        if not files:
            raise self.none_found()
        return [Item(posixpath.basename(p)[:-4], p, {"frames": posixpath.join(self.frames_root, posixpath.basename(p)[:-4])}) for p in files]

    def caption(self, item: Item) -> Optional[str]:
        if item.extra.get("chunk"):
            return None
        return read_text(self.frames_fs, posixpath.join(item.extra["frames"], "caption.txt"))

    def _text_sequence(self, item: Item, writer: SceneWriter) -> tuple[list, Callable[[int], np.ndarray]]:
        """Camera lines of a ``.txt`` file and a frame loader by timestamp."""
        folder = item.extra["frames"]
        if not self.frames_fs.isdir(folder):
            raise BrokenItem(f"sequence {item.name}: no frames folder {folder}")
        by_time = {}
        for path in self.frames_fs.ls(folder, detail=False):
            stem, ext = posixpath.splitext(posixpath.basename(path))
            if ext.lower() in IMAGE_EXTENSIONS and stem.isdigit():
                by_time[int(stem)] = path
        cameras = []
        for number, line in enumerate(self.fs.cat_file(item.url).decode("utf-8", errors="replace").splitlines()):
            parsed = parse_camera_line(line)
            if parsed is None:
                if number > 0 and line.strip():  # line 0 is the video URL
                    writer.dropped += 1
                continue
            cameras.append(parsed)

        def frame(stamp: int) -> np.ndarray:
            if stamp not in by_time:
                raise CorruptSampleError(f"sequence {item.name}: no frame for timestamp {stamp}")
            return load_rgb(self.frames_fs, by_time[stamp])

        return cameras, frame

    def _chunk_example(self, item: Item, writer: SceneWriter) -> tuple[list, Callable[[int], np.ndarray]]:
        """Cameras of one example of a pixelSplat chunk and a frame loader by timestamp."""
        if self._chunk[0] != item.url:
            try:
                examples = torch.load(io.BytesIO(self.fs.cat_file(item.url)), weights_only=True)
            except FileNotFoundError:
                raise BrokenItem(f"sequence {item.name}: missing chunk {item.url}") from None
            except Exception as e:  # a truncated or foreign file: torch raises many types
                raise BrokenItem(f"sequence {item.name}: cannot read chunk {item.url} ({type(e).__name__}: {e})") from None
            self._chunk = (item.url, {str(ex.get("key")): ex for ex in examples if isinstance(ex, dict)})
        example = self._chunk[1].get(item.name)
        if example is None:
            raise BrokenItem(f"sequence {item.name}: not in chunk {item.url}")
        stamps = [int(s) for s in example["timestamps"]]
        rows, images = example["cameras"].double().numpy(), example["images"]
        cameras = []
        for stamp, row in zip(stamps, rows):
            if not np.isfinite(row).all():
                writer.dropped += 1
                continue
            cameras.append((stamp, row[:4], row[6:18].reshape(3, 4)))
        by_time = dict(zip(stamps, images))

        def frame(stamp: int) -> np.ndarray:
            return decode_rgb(by_time[stamp].numpy().tobytes(), f"sequence {item.name} frame {stamp}")

        return cameras, frame

    def convert(self, item: Item, writer: SceneWriter) -> Optional[float]:
        read = self._chunk_example if item.extra.get("chunk") else self._text_sequence
        cameras, frame = read(item, writer)
        kept: list[int] = []

        def load(camera):
            stamp, (fx, fy, cx, cy), w2c = camera
            image = frame(stamp)
            H, W = image.shape[:2]
            kept.append(stamp)
            return {"image": image, "K": np.array([[fx * W, 0, cx * W], [0, fy * H, cy * H], [0, 0, 1.0]]), "extrinsics": w2c}

        add_trajectory(writer, pick_frames(cameras, self.frame_stride, self.max_frames), load)
        steps = np.diff(kept)
        return 1e6 / float(np.median(steps)) if len(steps) and np.median(steps) > 0 else None
