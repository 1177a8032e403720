"""What every dataset reader shares: errors, the streaming scene writer, image loading, scene discovery.

A reader (:class:`Reader`) lists the items (scenes / sequences) of a dataset root and converts one
item at a time into a :class:`SceneWriter`, which writes frames as they come (resize to cover the
output size + centre crop, intrinsics and depth following exactly: :class:`fourd.data.transforms.ResizeCrop`)
and ``scene.json`` last. Two kinds of failure:

- :class:`ReaderError`: the root is missing, empty or not the reader's layout; raised before any
  item is converted, one line naming the path and what was expected.
- :class:`BrokenItem` (or :class:`~fourd.data.format.CorruptSampleError` from a decoder): one item
  cannot be converted; the driver skips and counts it. Single frames that are missing or
  undecodable inside a camera trajectory are dropped and counted (:attr:`SceneWriter.dropped`).
"""
from __future__ import annotations

import io
import posixpath
from typing import Iterable, NamedTuple, Optional, Sequence

import fsspec
import numpy as np
import torch
from PIL import Image

from fourd.data.format import CorruptSampleError, SceneMeta, depth_path, frame_path, view_dir
from fourd.data.readers.geometry import sparse_depth
from fourd.data.scene_io import _encode_image, _put
from fourd.data.transforms import ResizeCrop

__all__ = ["ReaderError", "BrokenItem", "Item", "Reader", "SceneWriter", "load_rgb", "decode_rgb", "find_scene_dirs", "read_text",
           "parse_background"]


class ReaderError(ValueError):
    """A dataset root that is missing, empty or of another layout than the reader expects."""


class BrokenItem(RuntimeError):
    """One item of a dataset cannot be converted (the converter skips and counts it)."""


class Item(NamedTuple):
    """One convertible unit of a dataset: ``name`` (the output scene's name) and ``url`` (its main
    file or folder; readers may keep more in ``extra``)."""

    name: str
    url: str
    extra: Optional[dict] = None


class Reader:
    """Base of the readers: ``Reader(root, **options)`` validates the root, :meth:`items` lists the
    items, :meth:`convert` writes one into a :class:`SceneWriter`.

    Class attributes: ``name`` (the ``dataset=`` value), ``kind`` (scene kind written: "static" or
    "dynamic"), ``rgb_format`` (default frame format: "jpg" for photographs, "png" for renders),
    ``layout`` (one line describing the expected layout, used in errors).
    """

    name = ""
    kind = "static"
    rgb_format = "png"
    layout = ""

    def __init__(self, root: str) -> None:
        self.fs, path = fsspec.core.url_to_fs(root)
        self.root_url = root
        self.root = path.rstrip("/") or "/"
        if not self.fs.isdir(self.root):
            raise ReaderError(f"{self.name}: dataset root {root} is not a directory (expected {self.layout})")

    def items(self) -> list[Item]:
        """The items under the root in a fixed order (by name, or by file where that reads faster);
        raises :class:`ReaderError` when there are none."""
        raise NotImplementedError

    def convert(self, item: Item, writer: "SceneWriter") -> Optional[float]:
        """Write ``item`` into ``writer`` (frames and cameras); returns its frame rate (None: unknown).
        Raises :class:`BrokenItem` / :class:`CorruptSampleError` when the item cannot be converted."""
        raise NotImplementedError

    def caption(self, item: Item) -> Optional[str]:
        """The item's caption: ``caption.txt`` in its folder (``item.url``), else None."""
        return read_text(self.fs, posixpath.join(item.url, "caption.txt"))

    def none_found(self) -> ReaderError:
        """The error for a root that holds no item of this layout."""
        return ReaderError(f"{self.name}: no scenes under {self.root_url} (expected {self.layout})")


def read_text(fs, path: str) -> Optional[str]:
    """The stripped UTF-8 text of ``path``, or None when the file is absent or empty."""
    try:
        text = fs.cat_file(path).decode("utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def find_scene_dirs(fs, root: str, marker: str, max_depth: int = 2) -> list[str]:
    """Folders holding ``marker`` (a file or folder name): ``root`` itself if it does (one scene),
    else its sub-folders down to ``max_depth`` levels (e.g. DL3DV's ``1K/<hash>/``, MVImgNet's
    ``<category>/<object>/``), sorted."""
    if fs.exists(posixpath.join(root, marker)):
        return [root]
    found: list[str] = []
    for depth in range(1, max_depth + 1):
        pattern = posixpath.join(root, *(["*"] * depth), marker)
        found += [posixpath.dirname(p.rstrip("/")) for p in fs.glob(pattern)]
    return sorted(set(found))


def item_name(root: str, folder: str) -> str:
    """Scene name of ``folder`` under ``root``: its relative path with "/" -> "-" (the root's own
    name when the root is the scene)."""
    rel = posixpath.relpath(folder, root) if folder != root else posixpath.basename(root)
    return rel.replace("/", "-")


def parse_background(value) -> Optional[np.ndarray]:
    """``"white"`` | ``"black"`` | ``[r, g, b]`` (0-255) | None (drop alpha) -> float RGB or None."""
    if value is None or value == "none":
        return None
    named = {"white": (255, 255, 255), "black": (0, 0, 0)}
    rgb = named.get(value, value) if isinstance(value, str) else value
    try:
        arr = np.asarray(rgb, dtype=np.float64).reshape(3)
    except (TypeError, ValueError):
        raise ReaderError(f"background must be 'white', 'black', 'none' or [r, g, b] in 0-255, got {value!r}") from None
    return arr


def load_rgb(fs, path: str, background: Optional[np.ndarray] = None) -> np.ndarray:
    """Decode an image file to uint8 ``[H, W, 3]``; an alpha channel is composited over
    ``background`` (float RGB 0-255) or dropped (None). Raises :class:`CorruptSampleError` naming the
    file when it is missing or cannot be decoded."""
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        raise CorruptSampleError(f"missing frame {path}") from None
    return decode_rgb(data, path, background)


def decode_rgb(data: bytes, what: str, background: Optional[np.ndarray] = None) -> np.ndarray:
    """:func:`load_rgb` on encoded image bytes; errors name ``what``."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            has_alpha = im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info)
            if has_alpha and background is not None:
                rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
                alpha = rgba[..., 3:] / 255.0
                return np.round(rgba[..., :3] * alpha + background * (1 - alpha)).astype(np.uint8)
            return np.array(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as e:
        raise CorruptSampleError(f"cannot decode image {what} ({e})") from None


def load_float_image(fs, path: str) -> np.ndarray:
    """Decode a single-channel float image (32-bit TIFF, e.g. Kubric's depth) to float32 ``[H, W]``."""
    try:
        with Image.open(io.BytesIO(fs.cat_file(path))) as im:
            array = np.asarray(im, dtype=np.float32)
    except FileNotFoundError:
        raise CorruptSampleError(f"missing file {path}") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise CorruptSampleError(f"cannot decode image {path} ({e})") from None
    return array[..., 0] if array.ndim == 3 else array


class SceneWriter:
    """Streams one scene into the format at ``url``: :meth:`add` writes one frame of one view as it
    comes, :meth:`finish` writes ``scene.json`` (cameras, caption) last.

    ``size`` (H, W): every frame is resized to cover it and centre-cropped (intrinsics and depth
    follow exactly); None keeps the first frame's size (later frames of other sizes are fitted to
    it the same way). ``rgb_format``: "png" or "jpg".
    """

    def __init__(self, url: str, name: str, kind: str, size: Optional[tuple[int, int]], rgb_format: str) -> None:
        if rgb_format not in ("png", "jpg"):
            raise ValueError(f"converted frames are written as 'png' or 'jpg', got rgb_format={rgb_format!r}")
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.name, self.kind, self.rgb_format = name, kind, rgb_format
        self.size = tuple(size) if size is not None else None
        self.cameras: list[list[tuple[np.ndarray, np.ndarray]]] = []  # per view: (extrinsics, K) per frame
        self.has_depth: Optional[bool] = None
        self.dropped = 0  # frames left out (missing / undecodable) by the reader

    def add(self, view: int, image: np.ndarray, K: np.ndarray, extrinsics: np.ndarray, depth: Optional[np.ndarray] = None,
            points: Optional[np.ndarray] = None) -> None:
        """Append the next frame of ``view``: ``image`` uint8 [H, W, 3], its pixel intrinsics ``K``
        [3, 3], OpenCV camera-from-world ``extrinsics`` [3, 4]; optional ``depth`` [H, W] z-depth
        (metres, 0 = unknown) or world ``points`` [N, 3] rendered into a sparse depth map
        (:func:`~fourd.data.readers.geometry.sparse_depth`). Depth must be given for every frame or none."""
        in_size = tuple(image.shape[:2])
        if self.size is None:
            self.size = in_size
        plan = ResizeCrop.plan(in_size, self.size, "center")
        K_out = plan.intrinsics(torch.from_numpy(np.asarray(K, dtype=np.float64))).numpy()
        while len(self.cameras) <= view:
            self.cameras.append([])
        t = len(self.cameras[view])
        if t == 0:
            self.fs.makedirs(posixpath.join(self.root, view_dir("views", view)), exist_ok=True)
        rgb = plan.frames(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0)
        rgb_u8 = (rgb * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        self.fs.pipe_file(posixpath.join(self.root, frame_path(view, t, self.rgb_format)), _encode_image(rgb_u8, self.rgb_format))
        with_depth = depth is not None or points is not None
        if self.has_depth is None:
            self.has_depth = with_depth
        elif self.has_depth != with_depth:
            raise BrokenItem(f"scene {self.name}: depth given for some frames only")
        if with_depth:
            if depth is not None:
                out = plan.depth(torch.from_numpy(np.asarray(depth, dtype=np.float32))).numpy()
            else:
                out = sparse_depth(points, extrinsics, K_out, self.size)
            if t == 0:
                self.fs.makedirs(posixpath.join(self.root, view_dir("depth", view)), exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, out.astype(np.float32))
            self.fs.pipe_file(posixpath.join(self.root, depth_path(view, t)), buf.getvalue())
        self.cameras[view].append((np.asarray(extrinsics, dtype=np.float64)[:3, :4], K_out))

    def finish(self, fps: Optional[float] = None, caption: Optional[str] = None) -> SceneMeta:
        """Write ``scene.json``; raises :class:`BrokenItem` when no frame was written or the views
        hold different numbers of frames."""
        counts = [len(c) for c in self.cameras]
        if not counts or min(counts) == 0:
            raise BrokenItem(f"scene {self.name}: no frame could be read")
        if len(set(counts)) > 1:
            raise BrokenItem(f"scene {self.name}: views have different frame counts {counts}")
        ext = torch.tensor(np.array([[e for e, _ in view] for view in self.cameras]), dtype=torch.float32)
        K = torch.tensor(np.array([[k for _, k in view] for view in self.cameras]), dtype=torch.float32)
        H, W = self.size
        meta = SceneMeta(name=self.name, kind=self.kind, num_views=len(counts), num_frames=counts[0], height=int(H), width=int(W),
                         fps=float(fps) if fps else 24.0, rgb_format=self.rgb_format, has_depth=bool(self.has_depth),
                         extrinsics=ext, intrinsics=K, caption=caption)
        _put(self.fs, posixpath.join(self.root, "scene.json"), meta.to_json().encode("utf-8"))
        return meta


def pick_frames(entries: Sequence, stride: int, max_frames: Optional[int]) -> list:
    """Every ``stride``-th entry, at most ``max_frames`` of them (None: all)."""
    if stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {stride}")
    picked = list(entries)[::stride]
    return picked if max_frames is None else picked[:max_frames]


def add_trajectory(writer: SceneWriter, frames: Iterable, load) -> None:
    """Add a camera trajectory (view 0) frame by frame: ``load(frame)`` returns the ``add`` keyword
    arguments, or raises :class:`CorruptSampleError` for a missing/undecodable frame, which is
    dropped and counted in ``writer.dropped``."""
    for frame in frames:
        try:
            kwargs = load(frame)
        except CorruptSampleError:
            writer.dropped += 1
            continue
        writer.add(0, **kwargs)
