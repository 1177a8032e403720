"""Reading and writing multi-view video scenes (the format of :mod:`fourd.data.format`) via fsspec.

:func:`open_scene` accepts a scene directory (``scene.json`` + files), a plain video file
(``.mp4 .mov .avi .webm .mkv``) or a folder of images without ``scene.json``; the last two are read
as 1-view ``monocular`` scenes without cameras, captioned by the text file next to them
(``clip.mp4`` -> ``clip.txt``, ``folder/`` -> ``folder.txt``; optional). :func:`write_scene` writes
the format, :func:`read_scene` reads a whole scene back, :func:`list_scenes` finds the scenes under
a root, :func:`read_meta` reads only a scene's metadata.
"""
from __future__ import annotations

import io
import posixpath
import uuid
from typing import Optional, Sequence

import fsspec
import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image

from fourd.data.format import (
    CorruptSampleError,
    Scene,
    SceneFormatError,
    SceneMeta,
    depth_path,
    frame_path,
    mask_path,
    video_path,
    view_dir,
)

__all__ = ["SceneReader", "open_scene", "read_meta", "read_scene", "write_scene", "list_scenes", "VIDEO_EXTENSIONS", "IMAGE_EXTENSIONS"]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _protocol(fs) -> str:
    return fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]


def _url(fs, path: str) -> str:
    protocol = _protocol(fs)
    return path if protocol in ("file", "local") else f"{protocol}://{path}"


def _name_of(path: str) -> str:
    base = posixpath.basename(path.rstrip("/"))
    return posixpath.splitext(base)[0] if base.lower().endswith(VIDEO_EXTENSIONS) else base


def decode_image(data: bytes, mode: str, what: str) -> np.ndarray:
    """Decode PNG/JPEG bytes to uint8 [H, W, 3] (mode "RGB") or [H, W] (mode "L"); raises
    :class:`CorruptSampleError` naming ``what``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert(mode))
    except (OSError, ValueError, SyntaxError) as e:
        raise CorruptSampleError(f"{what}: cannot decode image ({e})") from None


def decode_video(data: bytes, ext: str, max_frames: Optional[int], what: str, plugin: Optional[str] = "FFMPEG") -> np.ndarray:
    """Decode video bytes to uint8 [N, H, W, 3] (grey frames repeated to RGB), stopping after
    ``max_frames`` frames when given; ``plugin`` = imageio plugin (None: chosen by ``ext``).
    Raises :class:`CorruptSampleError` naming ``what``."""
    frames = []
    try:
        for frame in iio.imiter(data, extension=ext, plugin=plugin):
            frames.append(frame[..., :3] if frame.ndim == 3 else np.repeat(frame[..., None], 3, -1))
            if max_frames is not None and len(frames) >= max_frames:
                break
    except (OSError, RuntimeError, ValueError, IndexError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorruptSampleError(f"{what}: cannot decode video ({reason})") from None
    if not frames:
        raise CorruptSampleError(f"{what}: video has no decodable frames")
    return np.stack(frames)


class SceneReader:
    """Random access to the frames, depth and masks of one scene.

    Built by :func:`open_scene`. ``meta`` is the scene's :class:`SceneMeta`. Reads raise
    :class:`CorruptSampleError` for undecodable files and :class:`SceneFormatError` (naming the
    scene) for frames whose size differs from the scene's ``height x width``.
    """

    def __init__(self, fs, root: str, meta: SceneMeta, layout: str, files: Sequence[str] = ()) -> None:
        self.fs = fs
        self.root = root
        self.meta = meta
        self._layout = layout  # "scene" | "video" | "images"
        self._files = list(files)
        self._videos: dict[int, np.ndarray] = {}

    @property
    def name(self) -> str:
        """Scene id (``scene.json`` name, else the directory or file name)."""
        return self.meta.name

    def _cat(self, rel: str) -> bytes:
        path = posixpath.join(self.root, rel) if rel else self.root
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            raise CorruptSampleError(f"scene {self.name}: missing file {_url(self.fs, path)}") from None

    def _check_indices(self, view: int, frames: Sequence[int]) -> None:
        if not 0 <= view < self.meta.num_views:
            raise SceneFormatError(f"scene {self.name}: view {view} out of range (num_views {self.meta.num_views})")
        bad = [t for t in frames if not 0 <= t < self.meta.num_frames]
        if bad:
            raise SceneFormatError(f"scene {self.name}: frames {bad} out of range (num_frames {self.meta.num_frames})")

    def _check_size(self, size: tuple, view: int, what: str) -> None:
        H, W = size
        if (H, W) != (self.meta.height, self.meta.width):
            raise SceneFormatError(
                f"scene {self.name}: view {view} {what} is {H}x{W}, expected {self.meta.height}x{self.meta.width} "
                "(all views of a scene must share one size)"
            )

    def _video(self, view: int, max_frames: Optional[int]) -> np.ndarray:
        cached = self._videos.get(view)
        if cached is not None and (max_frames is None or len(cached) >= max_frames):
            return cached
        if self._layout == "video":
            rel, ext = "", posixpath.splitext(self.root)[1].lower()
        else:
            rel, ext = video_path(view), ".mp4"
        what = f"scene {self.name} view {view}"
        video = decode_video(self._cat(rel), ext, max_frames, what)
        if max_frames is not None and len(video) < max_frames:
            raise CorruptSampleError(f"{what}: video decodes to {len(video)} frames, {max_frames} needed (truncated?)")
        self._check_size(video.shape[1:3], view, "video")
        self._videos[view] = video
        return video

    def read_frames(self, view: int, frames: Sequence[int]) -> torch.Tensor:
        """RGB frames ``frames`` of ``view`` as float32 [len(frames), 3, H, W] in [0, 1]."""
        self._check_indices(view, frames)
        if self._layout == "video" or (self._layout == "scene" and self.meta.rgb_format == "mp4"):
            video = self._video(view, max(frames) + 1)
            images = video[list(frames)]
        else:
            images = []
            for t in frames:
                rel = self._files[t] if self._layout == "images" else frame_path(view, t, self.meta.rgb_format)
                image = decode_image(self._cat(rel), "RGB", f"scene {self.name} {rel}")
                self._check_size(image.shape[:2], view, f"frame {t}")
                images.append(image)
            images = np.stack(images)
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)

    def read_depth(self, view: int, frames: Sequence[int]) -> torch.Tensor:
        """Depth maps of ``view`` as float32 [len(frames), H, W] in metres (0 = unknown)."""
        if not self.meta.has_depth:
            raise SceneFormatError(f"scene {self.name}: has no depth (scene.json 'depth' is false)")
        self._check_indices(view, frames)
        maps = []
        for t in frames:
            rel = depth_path(view, t)
            try:
                array = np.load(io.BytesIO(self._cat(rel)), allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise CorruptSampleError(f"scene {self.name} {rel}: cannot decode depth ({e})") from None
            self._check_size(array.shape, view, f"depth {t}")
            maps.append(array.astype(np.float32))
        return torch.from_numpy(np.stack(maps))

    def read_masks(self, view: int, frames: Sequence[int]) -> torch.Tensor:
        """Instance masks of ``view`` as uint8 [len(frames), H, W] (0 = background)."""
        if not self.meta.has_masks:
            raise SceneFormatError(f"scene {self.name}: has no masks (scene.json 'masks' is false)")
        self._check_indices(view, frames)
        masks = []
        for t in frames:
            rel = mask_path(view, t)
            mask = decode_image(self._cat(rel), "L", f"scene {self.name} {rel}")
            self._check_size(mask.shape, view, f"mask {t}")
            masks.append(mask)
        return torch.from_numpy(np.stack(masks))


def _caption_file(fs, path: str) -> Optional[str]:
    """The caption of a plain video or image folder: the text file ``<path without extension>.txt``
    (stripped), or None when there is none."""
    base = posixpath.splitext(path)[0] if path.lower().endswith(VIDEO_EXTENSIONS) else path
    try:
        raw = fs.cat_file(f"{base}.txt")
    except FileNotFoundError:
        return None
    try:
        return raw.decode("utf-8").strip() or None
    except UnicodeDecodeError as e:
        raise SceneFormatError(f"caption file {base}.txt is not UTF-8 text (byte {e.start}): save it as UTF-8") from None


def _video_meta(name: str, caption: Optional[str], frames: int, height: int, width: int) -> SceneMeta:
    return SceneMeta(name=name, kind="monocular", num_views=1, num_frames=frames, height=height, width=width,
                     rgb_format="mp4", caption=caption)


def open_scene(url: str) -> SceneReader:
    """Open the scene at ``url`` (scene directory, video file or image folder; any fsspec URL).

    Raises :class:`SceneFormatError` naming the scene when ``url`` is none of these or its
    ``scene.json`` is malformed; :class:`CorruptSampleError` when a monocular video cannot be decoded.
    """
    fs, path = fsspec.core.url_to_fs(url)
    path = path.rstrip("/")
    name = _name_of(path)
    if path.lower().endswith(VIDEO_EXTENSIONS):
        if not fs.exists(path):
            raise SceneFormatError(f"scene {name}: video file not found: {url}")
        video = decode_video(fs.cat_file(path), posixpath.splitext(path)[1].lower(), None, f"scene {name}")
        meta = _video_meta(name, _caption_file(fs, path), *(int(n) for n in video.shape[:3]))
        reader = SceneReader(fs, path, meta, "video")
        reader._videos[0] = video
        return reader
    meta_path = posixpath.join(path, "scene.json")
    if fs.exists(meta_path):
        raw = fs.cat_file(meta_path)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:  # e.g. a caption saved as Latin-1
            raise SceneFormatError(f"scene {name}: {meta_path} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}): save it as UTF-8") from None
        meta = SceneMeta.from_json(text, name)
        return SceneReader(fs, path, meta, "scene")
    if fs.isdir(path):
        files = sorted(posixpath.basename(p) for p in fs.ls(path, detail=False) if p.lower().endswith(IMAGE_EXTENSIONS))
        if files:
            first = decode_image(fs.cat_file(posixpath.join(path, files[0])), "RGB", f"scene {name} {files[0]}")
            meta = SceneMeta(
                name=name, kind="monocular", num_views=1, num_frames=len(files),
                height=int(first.shape[0]), width=int(first.shape[1]), rgb_format="png", caption=_caption_file(fs, path),
            )
            return SceneReader(fs, path, meta, "images", files)
    raise SceneFormatError(f"scene {name}: {url} is neither a scene directory (scene.json), a video file nor an image folder")


def read_meta(url: str) -> SceneMeta:
    """The :class:`SceneMeta` of the scene at ``url`` (as :func:`open_scene` gives it), decoding no
    frame where it can: a local video file's size and frame count come from its header and packets
    (ffmpeg, no decoding); other videos are decoded once."""
    fs, path = fsspec.core.url_to_fs(url)
    path = path.rstrip("/")
    if path.lower().endswith(VIDEO_EXTENSIONS) and _protocol(fs) in ("file", "local") and fs.exists(path):
        import imageio_ffmpeg

        try:
            frames, _ = imageio_ffmpeg.count_frames_and_secs(path)
            width, height = iio.immeta(path, plugin="FFMPEG")["size"]
        except (OSError, RuntimeError, KeyError) as e:
            raise CorruptSampleError(f"scene {_name_of(path)}: cannot read the video header of {url} ({e})") from None
        return _video_meta(_name_of(path), _caption_file(fs, path), int(frames), int(height), int(width))
    return open_scene(url).meta


def read_scene(url: str, with_depth: bool = True, with_masks: bool = True) -> Scene:
    """Read a whole scene into a :class:`Scene` (frames [V, T, 3, H, W] in [0, 1] etc.).

    Depth/masks are read when stored and requested.
    """
    reader = open_scene(url)
    meta = reader.meta
    frames_idx = list(range(meta.num_frames))
    views = range(meta.num_views)
    frames = torch.stack([reader.read_frames(v, frames_idx) for v in views])
    depth = torch.stack([reader.read_depth(v, frames_idx) for v in views]) if with_depth and meta.has_depth else None
    masks = torch.stack([reader.read_masks(v, frames_idx) for v in views]) if with_masks and meta.has_masks else None
    return Scene(
        name=meta.name, kind=meta.kind, frames=frames, fps=meta.fps, depth=depth, masks=masks,
        extrinsics=meta.extrinsics, intrinsics=meta.intrinsics, caption=meta.caption,
    )


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    """float [..., 3, H, W] in [0, 1] -> uint8 [..., H, W, 3]."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


def _encode_image(array: np.ndarray, fmt: str) -> bytes:
    """uint8 [H, W, 3] or [H, W] -> PNG ("png") or JPEG ("jpg", quality 95) bytes."""
    buf = io.BytesIO()
    if fmt == "png":
        Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    else:
        Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _put(fs, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name and a rename (atomic on local disks)."""
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    fs.pipe_file(tmp, data)
    fs.mv(tmp, path)


def write_scene(scene: Scene, url: str, rgb_format: str = "png", video_quality: float = 9.0) -> None:
    """Write ``scene`` to the directory ``url`` in the format of :mod:`fourd.data.format`.

    ``rgb_format``: "png" (lossless per-frame files), "jpg" or "mp4" (one H.264 video per view,
    lossy; ``video_quality`` 0-10). Depth and masks are written when present. ``scene.json`` is
    written last, so a scene with a ``scene.json`` is complete.
    """
    meta = scene.meta(rgb_format)
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    rgb = _to_uint8(scene.frames)
    for v in range(meta.num_views):
        if rgb_format == "mp4":
            data = iio.imwrite(
                "<bytes>", rgb[v], extension=".mp4", plugin="FFMPEG", fps=meta.fps,
                quality=video_quality, macro_block_size=1,
            )
            _put(fs, posixpath.join(root, video_path(v)), data)
        else:
            fs.makedirs(posixpath.join(root, view_dir("views", v)), exist_ok=True)
            for t in range(meta.num_frames):
                fs.pipe_file(posixpath.join(root, frame_path(v, t, rgb_format)), _encode_image(rgb[v, t], rgb_format))
        for t in range(meta.num_frames):
            if scene.depth is not None:
                buf = io.BytesIO()
                np.save(buf, scene.depth[v, t].float().cpu().numpy())
                fs.makedirs(posixpath.join(root, view_dir("depth", v)), exist_ok=True)
                fs.pipe_file(posixpath.join(root, depth_path(v, t)), buf.getvalue())
            if scene.masks is not None:
                fs.makedirs(posixpath.join(root, view_dir("masks", v)), exist_ok=True)
                mask = scene.masks[v, t].to(torch.uint8).cpu().numpy()
                fs.pipe_file(posixpath.join(root, mask_path(v, t)), _encode_image(mask, "png"))
    _put(fs, posixpath.join(root, "scene.json"), meta.to_json().encode("utf-8"))


def list_scenes(root: str) -> list[str]:
    """Sorted URLs of the scenes directly under ``root``: directories with ``scene.json`` or
    images, and video files. Raises :class:`SceneFormatError` when ``root`` holds none."""
    fs, path = fsspec.core.url_to_fs(root)
    path = path.rstrip("/")
    if not fs.isdir(path):
        raise SceneFormatError(f"dataset root {root} is not a directory")
    found = []
    for entry in fs.ls(path, detail=True):
        p = entry["name"].rstrip("/")
        if entry["type"] == "directory" or p.lower().endswith(VIDEO_EXTENSIONS):
            found.append(_url(fs, p))
    if not found:
        raise SceneFormatError(f"dataset root {root} holds no scenes (directories or video files)")
    return sorted(found)
