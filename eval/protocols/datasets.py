"""Readers of the public on-disk layouts of the evaluation datasets (any fsspec URL).

Every reader returns a :class:`Clip`: frames ``[V, T, 3, H, W]`` in [0, 1] resized to the
protocol's ``size = (H, W)`` (aspect not kept; intrinsics scaled per axis), OpenCV camera-from-world
extrinsics ``[V, T, 3, 4]`` and intrinsics ``[V, T, 3, 3]`` in pixels of the resized frames (pixel
centres at +0.5), views in capture order. Layouts (docs/eval.md shows the trees):

- **LLFF** (``nerf_llff_data/<scene>``): ``images/*.JPG|png`` (or ``images_4``, ``images_8``) sorted by
  name, ``poses_bounds.npy`` = ``N x 17`` float: a ``3 x 5`` matrix ``[R | t | hwf]`` row-major per
  image (camera-to-world, columns of ``R`` are the camera's (down, right, back) axes; ``hwf`` = full
  image height, width, focal in pixels) then near/far depth bounds.
- **Tanks and Temples**, NeRF++ layout (``tanks_and_temples/tat_<set>_<scene>``):
  ``{train,test}/rgb/<name>.png``, ``{train,test}/pose/<name>.txt`` (flattened 4 x 4 OpenCV
  camera-to-world), ``{train,test}/intrinsics/<name>.txt`` (flattened 4 x 4 K). Views of both splits
  sorted by name; :attr:`Clip.splits` tells which split each came from.
- **Neural 3D Video** (``<scene>``): ``cam00.mp4 ... camNN.mp4`` and ``poses_bounds.npy`` (one LLFF row
  per video, in sorted file-name order).
- **NVIDIA Dynamic Scenes** (DynamicNeRF release, ``<scene>/dense``): ``mv_images/<frame:05d>/cam<c:02d>.jpg``
  for the 12 cameras ``c = 1..12`` and ``poses_bounds.npy`` whose first 12 rows are cameras 1..12.
- **Objaverse-style renders**: the project's scene format (docs/data_format.md), read with
  :func:`fourd.data.read_scene`.
"""
from __future__ import annotations

import io
import posixpath
from dataclasses import dataclass, field
from typing import Optional

import fsspec
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["Clip", "DatasetNotFoundError", "llff_to_opencv", "list_scene_dirs", "read_llff", "read_tanks_temples",
           "read_neural3d", "read_nvidia_dynamic", "read_scene_format"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset path (or a file its layout requires) does not exist."""


@dataclass
class Clip:
    """One evaluation scene: ``frames [V, T, 3, H, W]``, ``extrinsics [V, T, 3, 4]``, ``intrinsics
    [V, T, 3, 3]`` (None when the layout has no cameras), ``depth [V, T, H, W]`` (camera z; None when
    the layout has none), ``splits`` per view (Tanks and Temples), ``caption`` (the scene's text; None
    when the layout has none)."""

    name: str
    frames: torch.Tensor
    extrinsics: Optional[torch.Tensor] = None
    intrinsics: Optional[torch.Tensor] = None
    depth: Optional[torch.Tensor] = None
    splits: list[str] = field(default_factory=list)
    caption: Optional[str] = None


def _fs(url: str, what: str):
    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        raise DatasetNotFoundError(f"{what} not found: {url} (set the benchmark's dataset root, e.g. benchmark.root=<path>)")
    return fs, path.rstrip("/")


def list_scene_dirs(root: str, marker: str) -> list[str]:
    """URLs of the scene directories under ``root`` that contain ``marker`` (a file or dir name), sorted;
    ``root`` itself when it contains ``marker``. Raises :class:`DatasetNotFoundError` when none does."""
    fs, path = _fs(root, "dataset root")
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    unstrip = (lambda p: p) if proto in ("file", "local") else (lambda p: f"{proto}://{p}")
    if fs.exists(posixpath.join(path, marker)):
        return [unstrip(path)]
    scenes = sorted(d for d in fs.ls(path, detail=False) if fs.isdir(d) and fs.exists(posixpath.join(d, marker)))
    if not scenes:
        raise DatasetNotFoundError(f"no scene under {root} has {marker!r}: is this the right dataset root?")
    return [unstrip(s) for s in scenes]


def _image(fs, path: str) -> torch.Tensor:
    with Image.open(io.BytesIO(fs.cat_file(path))) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1).float() / 255


def _resize(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Frames ``[..., 3, h, w]`` -> ``[..., 3, H, W]`` (bilinear, antialiased), clamped to [0, 1]."""
    lead = frames.shape[:-3]
    out = F.interpolate(frames.reshape(-1, *frames.shape[-3:]), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.clamp(0, 1).reshape(*lead, 3, *size)


def _scale_K(K: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    K = K.clone()
    K[..., 0, :] *= to_hw[1] / from_hw[1]
    K[..., 1, :] *= to_hw[0] / from_hw[0]
    return K


def _invert(c2w: torch.Tensor) -> torch.Tensor:
    """Camera-to-world ``[..., 3, 4]`` -> camera-from-world ``[..., 3, 4]``."""
    R, t = c2w[..., :3, :3], c2w[..., :3, 3:]
    return torch.cat([R.transpose(-1, -2), -R.transpose(-1, -2) @ t], dim=-1)


def llff_to_opencv(poses_bounds: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LLFF ``poses_bounds [N, 17]`` -> OpenCV camera-from-world ``[N, 3, 4]``, intrinsics ``[N, 3, 3]``
    (pixels of the full ``hwf`` image, principal point at its centre) and the image sizes ``[N, 2]`` (h, w).

    LLFF's rotation columns are the camera's (down, right, back) axes in the world; OpenCV's are
    (right, down, forward) = (col 1, col 0, -col 2).
    """
    if poses_bounds.ndim != 2 or poses_bounds.shape[1] != 17:
        raise ValueError(f"poses_bounds.npy must be N x 17 (3x5 pose + near/far), got shape {poses_bounds.shape}")
    m = torch.from_numpy(poses_bounds[:, :15].astype(np.float64)).reshape(-1, 3, 5)
    c2w = torch.stack([m[:, :, 1], m[:, :, 0], -m[:, :, 2], m[:, :, 3]], dim=-1)
    h, w, f = m[:, 0, 4], m[:, 1, 4], m[:, 2, 4]
    K = torch.zeros(len(m), 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f, w / 2, h / 2, 1
    return _invert(c2w).float(), K.float(), torch.stack([h, w], -1)


def _poses_bounds(fs, path: str) -> np.ndarray:
    file = posixpath.join(path, "poses_bounds.npy")
    if not fs.exists(file):
        raise DatasetNotFoundError(f"{file} not found (LLFF-style camera file of the scene)")
    return np.load(io.BytesIO(fs.cat_file(file)), allow_pickle=False)


def read_llff(url: str, size: tuple[int, int], image_dir: str = "images") -> Clip:
    """An LLFF scene as a static clip ``[N, 1, ...]`` (see the module docstring)."""
    fs, path = _fs(url, "LLFF scene")
    files = sorted(p for p in fs.ls(posixpath.join(path, image_dir), detail=False) if p.lower().endswith(IMAGE_EXTS))
    ext, K, hw = llff_to_opencv(_poses_bounds(fs, path))
    if len(files) != len(ext):
        raise ValueError(f"{url}: {len(files)} images in {image_dir}/ but {len(ext)} rows in poses_bounds.npy")
    images = [_image(fs, p) for p in files]
    K = _scale_K(K, (float(hw[0, 0]), float(hw[0, 1])), size)
    frames = torch.stack([_resize(im, size) for im in images])[:, None]
    return Clip(posixpath.basename(path), frames, ext[:, None], K[:, None])


def read_tanks_temples(url: str, size: tuple[int, int], splits: tuple[str, ...] = ("train", "test")) -> Clip:
    """A Tanks and Temples scene in the NeRF++ layout as a static clip (see the module docstring)."""
    fs, path = _fs(url, "Tanks and Temples scene")
    views = []
    for split in splits:
        rgb_dir = posixpath.join(path, split, "rgb")
        if not fs.exists(rgb_dir):
            raise DatasetNotFoundError(f"{rgb_dir} not found (NeRF++ layout: <scene>/{split}/rgb, pose, intrinsics)")
        for p in fs.ls(rgb_dir, detail=False):
            if p.lower().endswith(IMAGE_EXTS):
                stem = posixpath.splitext(posixpath.basename(p))[0]
                views.append((posixpath.basename(p), split, p, stem))
    views.sort()
    frames, ext, K = [], [], []
    for _, split, p, stem in views:
        image = _image(fs, p)
        c2w = torch.tensor([float(x) for x in fs.cat_file(posixpath.join(path, split, "pose", stem + ".txt")).split()]).reshape(4, 4)
        k4 = torch.tensor([float(x) for x in fs.cat_file(posixpath.join(path, split, "intrinsics", stem + ".txt")).split()]).reshape(4, 4)
        frames.append(_resize(image, size))
        ext.append(_invert(c2w[:3]))
        K.append(_scale_K(k4[:3, :3], tuple(image.shape[-2:]), size))
    return Clip(posixpath.basename(path), torch.stack(frames)[:, None], torch.stack(ext)[:, None], torch.stack(K)[:, None],
                splits=[v[1] for v in views])


def _video_frames(fs, path: str, frames: list[int]) -> torch.Tensor:
    import imageio.v3 as iio

    wanted, out = set(frames), {}
    for i, frame in enumerate(iio.imiter(fs.cat_file(path), extension=".mp4", plugin="FFMPEG")):
        if i in wanted:
            out[i] = torch.from_numpy(np.ascontiguousarray(frame[..., :3])).permute(2, 0, 1).float() / 255
        if len(out) == len(wanted):
            break
    if len(out) < len(wanted):
        raise ValueError(f"{path} has fewer than {max(frames) + 1} frames")
    return torch.stack([out[i] for i in frames])


def read_neural3d(url: str, size: tuple[int, int], num_frames: int, stride: int = 1, start: int = 0) -> Clip:
    """A Neural 3D Video scene: ``num_frames`` frames (every ``stride``-th from ``start``) of every camera."""
    fs, path = _fs(url, "Neural 3D Video scene")
    videos = sorted(p for p in fs.ls(path, detail=False) if posixpath.basename(p).startswith("cam") and p.endswith(".mp4"))
    ext, K, hw = llff_to_opencv(_poses_bounds(fs, path))
    if len(videos) != len(ext):
        raise ValueError(f"{url}: {len(videos)} cam*.mp4 videos but {len(ext)} rows in poses_bounds.npy")
    wanted = [start + i * stride for i in range(num_frames)]
    frames = torch.stack([_resize(_video_frames(fs, v, wanted), size) for v in videos])
    K = _scale_K(K, (float(hw[0, 0]), float(hw[0, 1])), size)
    T = num_frames
    return Clip(posixpath.basename(path), frames, ext[:, None].expand(-1, T, -1, -1), K[:, None].expand(-1, T, -1, -1))


def read_nvidia_dynamic(url: str, size: tuple[int, int], num_frames: int, cameras: int = 12) -> Clip:
    """An NVIDIA Dynamic Scenes scene (DynamicNeRF layout): the first ``num_frames`` frames of the 12 cameras."""
    fs, path = _fs(url, "NVIDIA Dynamic Scenes scene")
    dense = posixpath.join(path, "dense") if fs.exists(posixpath.join(path, "dense")) else path
    ext, K, hw = llff_to_opencv(_poses_bounds(fs, dense)[:cameras])
    frames = []
    for c in range(1, cameras + 1):
        files = [posixpath.join(dense, "mv_images", f"{f:05d}", f"cam{c:02d}.jpg") for f in range(num_frames)]
        missing = [p for p in files if not fs.exists(p)]
        if missing:
            raise DatasetNotFoundError(f"{missing[0]} not found (layout <scene>/dense/mv_images/<frame:05d>/cam<01..12>.jpg)")
        frames.append(torch.stack([_resize(_image(fs, p), size) for p in files]))
    K = _scale_K(K, (float(hw[0, 0]), float(hw[0, 1])), size)
    T = num_frames
    return Clip(posixpath.basename(path), torch.stack(frames), ext[:, None].expand(-1, T, -1, -1), K[:, None].expand(-1, T, -1, -1))


def read_scene_format(url: str, size: tuple[int, int], num_frames: int, views: Optional[int] = None) -> Clip:
    """A scene of the project's format (Objaverse-style renders): the first ``num_frames`` frames of the
    first ``views`` views (all when None), with its depth (nearest-neighbour resized) when stored."""
    from fourd.data import read_scene

    _fs(url, "scene")
    s = read_scene(url, with_depth=True, with_masks=False)
    V = views or s.frames.shape[0]
    if s.frames.shape[0] < V or s.frames.shape[1] < num_frames:
        raise ValueError(f"{url} has {tuple(s.frames.shape[:2])} views x frames, the protocol needs {V} x {num_frames}")
    frames = s.frames[:V, :num_frames]
    ext = None if s.extrinsics is None else s.extrinsics[:V, :num_frames]
    K = None if s.intrinsics is None else _scale_K(s.intrinsics[:V, :num_frames], tuple(frames.shape[-2:]), size)
    depth = None if s.depth is None else F.interpolate(s.depth[:V, :num_frames], size=size, mode="nearest")
    return Clip(s.name, _resize(frames, size), ext, K, depth, caption=s.caption)
