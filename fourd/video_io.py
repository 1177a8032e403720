"""Reading inference inputs: a video (mp4/webm/gif/...) or a folder of frames, through fsspec.

Frames are resized and cropped exactly as training does (:class:`fourd.data.transforms.ResizeCrop`,
centre crop: aspect kept, the short side covers the output, then cropped). Every problem with an
input raises :class:`InputError` with one line naming the file and the fix.
"""
from __future__ import annotations

import posixpath
from typing import Optional

import fsspec
import numpy as np
import torch

from fourd.data.format import CorruptSampleError
from fourd.data.scene_io import decode_image, decode_video
from fourd.data.transforms import ResizeCrop

__all__ = ["InputError", "VIDEO_SUFFIXES", "IMAGE_SUFFIXES", "check_frame_count", "read_video", "read_images"]

VIDEO_SUFFIXES = (".mp4", ".webm", ".gif", ".mov", ".mkv", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class InputError(ValueError):
    """An input (video, image folder, frame count, size) that inference cannot use; the message is one line."""


def check_frame_count(frames: int, factor: int = 4) -> None:
    """Raise :class:`InputError` unless ``frames`` is ``factor * k + 1`` (the causal VAE's frame counts)."""
    if frames < 1 or (frames - 1) % factor:
        raise InputError(f"frames={frames} is not {factor}k+1 (use 1, {factor + 1}, {2 * factor + 1}, {4 * factor + 1}, ...)")


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float32 ``[N, 3, H, W]`` in [0, 1]."""
    return torch.from_numpy(np.array(images[..., :3], copy=True)).permute(0, 3, 1, 2).float().div_(255.0)


def _fit(frames: torch.Tensor, size: Optional[tuple[int, int]]) -> torch.Tensor:
    """Resize + centre-crop ``frames [N, 3, H, W]`` to ``size`` (H, W) like training; None keeps them."""
    if size is None:
        return frames
    return ResizeCrop.plan(tuple(frames.shape[-2:]), tuple(size), "center").frames(frames)


def _image_files(fs, path: str) -> list[str]:
    return sorted(p for p in fs.ls(path, detail=False) if p.lower().endswith(IMAGE_SUFFIXES))


def _decode_image(fs, path: str) -> np.ndarray:
    try:
        return decode_image(fs.cat_file(path), "RGB", f"image {path}")
    except CorruptSampleError as e:
        raise InputError(str(e)) from None


def read_video(url: str, num_frames: int, size: Optional[tuple[int, int]] = None, stride: int = 1) -> torch.Tensor:
    """The first ``num_frames`` frames (every ``stride``-th) of a video file or a folder of frames.

    ``url``: any fsspec URL of a video (mp4/webm/gif/mov/mkv/avi) or a folder of images (sorted by
    name). ``size``: output (H, W) in pixels, resized + centre-cropped as in training (None: as is).
    Returns float32 ``[num_frames, 3, H, W]`` in [0, 1]. Raises :class:`InputError` when the input is
    missing, unreadable, or shorter than ``(num_frames - 1) * stride + 1`` frames.
    """
    needed = (num_frames - 1) * stride + 1
    fs, path = fsspec.core.url_to_fs(url)
    path = path.rstrip("/")
    if not fs.exists(path):
        raise InputError(f"input video not found: {url}")
    if fs.isdir(path):
        files = _image_files(fs, path)
        if not files:
            raise InputError(f"input folder {url} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        if len(files) < needed:
            raise InputError(f"input {url} has {len(files)} frames, {needed} needed (frames={num_frames}, stride={stride}): "
                             "use a longer clip or fewer frames")
        images = [_decode_image(fs, f) for f in files[:needed:stride]]
        if len({im.shape for im in images}) > 1:
            raise InputError(f"images in {url} have different sizes {sorted({im.shape[:2] for im in images})}")
        return _fit(_to_tensor(np.stack(images)), size)
    ext = posixpath.splitext(path)[1].lower()
    if ext not in VIDEO_SUFFIXES:
        raise InputError(f"input {url} is neither a folder of frames nor a video ({', '.join(VIDEO_SUFFIXES)})")
    try:
        frames = decode_video(fs.cat_file(path), ext, needed, f"video {url}", plugin=None)
    except CorruptSampleError as e:
        raise InputError(str(e)) from None
    if len(frames) < needed:
        raise InputError(f"input {url} has {len(frames)} frames, {needed} needed (frames={num_frames}, stride={stride}): "
                         "use a longer clip or fewer frames")
    return _fit(_to_tensor(frames[::stride]), size)


def read_images(url: str, count: int, size: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """A folder of exactly ``count`` images (sorted by name; e.g. the freeze-time views at the first
    frame, view 0 first) -> float32 ``[count, 3, H, W]`` in [0, 1], resized + centre-cropped to ``size``
    (images may differ in size; each is fitted on its own). Raises :class:`InputError` otherwise."""
    fs, path = fsspec.core.url_to_fs(url)
    path = path.rstrip("/")
    if not fs.exists(path) or not fs.isdir(path):
        raise InputError(f"freeze-time image folder not found: {url}")
    files = _image_files(fs, path)
    if len(files) != count:
        raise InputError(f"freeze-time folder {url} has {len(files)} images, views={count} needed (one per view, view 0 first)")
    return torch.cat([_fit(_to_tensor(_decode_image(fs, f)[None]), size) for f in files])
