"""Find and read what an inference or export output directory holds, for the viewers.

An output directory (``launch/infer.py`` or ``launch/train_recon.py mode=export``) may contain any
subset of::

    gaussians_t0000.ply ...      per-timestep 3DGS PLYs (fourd.formats.save_ply)
    cameras.json                 predicted cameras (fourd.formats.save_cameras_json)
    grid.png                     the generated V x T grid as one image
    novel_views.mp4, novel_times.mp4, views/view_{v}.mp4
    scene/                       the decoded grid in the on-disk scene format (docs/data_format.md)
    summary.json                 settings, seconds and peak memory per stage

:func:`find_outputs` lists what is there; what is missing is simply not shown by the viewers.
"""
from __future__ import annotations

import json
import math
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Optional

import fsspec
import numpy as np
import torch
from PIL import Image

from fourd.data.scene_io import open_scene
from fourd.formats import load_ply
from fourd.rotations import matrix_to_quat_wxyz, quat_wxyz_to_matrix

__all__ = ["OutputFiles", "find_outputs", "splats_for_viewer", "camera_frusta", "opening_view", "frustum_images", "read_image",
           "format_value", "flatten_summary"]

_PLY = re.compile(r"^gaussians_t(\d{4,})\.ply$")
_VIEW_VIDEO = re.compile(r"^view_(\d+)\.mp4$")
TOP_VIDEOS = ("novel_views.mp4", "novel_times.mp4")


@dataclass(frozen=True)
class OutputFiles:
    """The viewer-relevant files of one output directory, as paths relative to ``root``.

    ``plys[t]`` is the PLY of timestep ``t`` (sorted by the number in its name); ``videos`` lists
    ``novel_views.mp4``, ``novel_times.mp4`` and ``views/view_{v}.mp4`` (by ``v``) that exist;
    the others are ``None`` when absent.
    """

    root: str
    plys: tuple[str, ...] = ()
    cameras: Optional[str] = None
    grid: Optional[str] = None
    videos: tuple[str, ...] = ()
    scene: Optional[str] = None
    summary: Optional[str] = None

    def url(self, rel: str) -> str:
        """URL of the relative path ``rel`` inside the output directory."""
        return f"{self.root}/{rel}"

    @property
    def empty(self) -> bool:
        return not (self.plys or self.cameras or self.grid or self.videos or self.scene or self.summary)

    def read_summary(self) -> dict:
        """``summary.json`` as a dict (``{}`` when absent)."""
        if self.summary is None:
            return {}
        with fsspec.open(self.url(self.summary), "rb") as f:
            doc = json.loads(f.read())
        if not isinstance(doc, dict):
            raise ValueError(f"{self.url(self.summary)}: expected a JSON object, got {type(doc).__name__}")
        return doc


def _numbered(names, pattern: re.Pattern) -> list[tuple[int, str]]:
    """``(number, name)`` of the names matching ``pattern`` (its group 1 is the number), sorted by number."""
    return sorted((int(m.group(1)), n) for n in names if (m := pattern.match(n)))


def find_outputs(out_dir: str) -> OutputFiles:
    """List the viewer-relevant files of ``out_dir`` (local path or fsspec URL).

    Raises ``FileNotFoundError`` when ``out_dir`` is not a directory and ``ValueError`` when it
    holds none of the files above (so a wrong path fails with one clear line).
    """
    fs, path = fsspec.core.url_to_fs(out_dir)
    path = path.rstrip("/") or "/"
    if not fs.isdir(path):
        raise FileNotFoundError(f"output directory not found: {out_dir} (give the directory written by launch/infer.py or mode=export)")
    names = {posixpath.basename(p.rstrip("/")): p for p in fs.ls(path, detail=False)}
    plys = _numbered(names, _PLY)
    steps = [t for t, _ in plys]
    if steps != list(range(len(steps))):
        raise ValueError(f"{out_dir}: PLY timesteps {steps} are not 0..T-1 (a gaussians_t*.ply is missing or misnamed)")
    videos = [n for n in TOP_VIDEOS if n in names]
    if "views" in names and fs.isdir(names["views"]):
        view_files = [posixpath.basename(p) for p in fs.ls(names["views"], detail=False)]
        videos += [f"views/{n}" for _, n in _numbered(view_files, _VIEW_VIDEO)]
    scene = "scene" if "scene" in names and fs.exists(posixpath.join(names["scene"], "scene.json")) else None
    root = out_dir.rstrip("/") or "/"
    files = OutputFiles(
        root=root,
        plys=tuple(n for _, n in plys),
        cameras="cameras.json" if "cameras.json" in names else None,
        grid="grid.png" if "grid.png" in names else None,
        videos=tuple(videos),
        scene=scene,
        summary="summary.json" if "summary.json" in names else None,
    )
    if files.empty:
        raise ValueError(
            f"{out_dir}: no viewer outputs found (expected some of gaussians_t0000.ply, cameras.json, grid.png, "
            f"novel_views.mp4, views/, scene/, summary.json)"
        )
    return files


def splats_for_viewer(url: str) -> dict[str, np.ndarray]:
    """Read a 3DGS PLY into the arrays a splat renderer takes (float32 numpy).

    Returns ``centers [N, 3]`` (world units), ``covariances [N, 3, 3]`` (``R diag(s²) Rᵀ`` with
    ``R`` from the wxyz quaternion, world units²), ``rgbs [N, 3]`` in [0, 1] (clamped),
    ``opacities [N, 1]`` in (0, 1).
    """
    g = load_ply(url)
    R = quat_wxyz_to_matrix(g["quats"].double())  # [N, 3, 3]
    cov = R @ torch.diag_embed(g["scales"].double() ** 2) @ R.transpose(-1, -2)  # [N, 3, 3]
    return {
        "centers": g["means"].numpy(),
        "covariances": cov.float().numpy(),
        "rgbs": g["colors"].clamp(0, 1).numpy(),
        "opacities": g["opacities"][:, None].numpy(),
    }


def vertical_fov(height: float, fy: float) -> float:
    """Vertical field of view ``2 atan(H / 2 fy)`` in radians (60 degrees when ``fy`` is not positive)."""
    return 2 * math.atan(height / (2 * fy)) if fy > 0 else math.radians(60)


def camera_frusta(cameras: dict) -> list[dict]:
    """Frustum poses of :func:`fourd.formats.load_cameras_json` cameras, one dict per view.

    Each has ``wxyz`` (world-from-camera rotation, OpenCV camera axes), ``position`` (camera centre
    ``-Rᵀ t``, world units), ``fov`` (vertical field of view ``2 atan(H / 2 fy)``, radians) and
    ``aspect`` (``W / H``).
    """
    ext = cameras["extrinsics"]  # [V, 3, 4] camera-from-world
    R_wc = ext[:, :, :3].transpose(-1, -2)  # [V, 3, 3] world-from-camera
    centers = -(R_wc @ ext[:, :, 3:])[..., 0]  # [V, 3]
    quats = matrix_to_quat_wxyz(R_wc)
    W, H = float(cameras["width"]), float(cameras["height"])
    fy = cameras["intrinsics"][:, 1, 1]
    return [
        {"wxyz": quats[v].numpy(), "position": centers[v].numpy(),
         "fov": vertical_fov(H, float(fy[v])), "aspect": W / H}
        for v in range(ext.shape[0])
    ]


def opening_view(cameras: Optional[dict], centers: np.ndarray) -> dict:
    """Where the viewer opens: looking through input camera 0, framed on the Gaussians it sees.

    ``cameras`` is a :func:`fourd.formats.load_cameras_json` dict (or ``None``), ``centers [N, 3]``
    the Gaussian centres of timestep 0 (world units). With cameras: camera 0's centre, viewing
    direction (``+z``), up (``-y``) and vertical field of view ``2 atan(H / 2 fy)``; the orbit centre
    ``look_at`` lies on camera 0's axis at ``focus``, the median camera-z of the Gaussians inside
    camera 0's image (so far-off or stray Gaussians move neither it nor the frusta's size; the
    median of all Gaussians in front, or 1, when none is inside). Without cameras: from ``-z``
    towards the middle of the 5th-95th percentile box of the centres, at twice their 90th-percentile
    radius. ``near = 0.1 focus`` (clips camera 0's own frustum, drawn ``0.05 focus`` deep) and
    ``far = 1000 focus``.

    Returns ``{"position", "look_at", "up"}`` (world, float64 ``[3]``), ``"fov"`` (radians),
    ``"near"``, ``"far"``, ``"focus"`` (world units).
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    centers = centers[np.isfinite(centers).all(1)]
    if cameras is None:
        mid = np.percentile(centers, [5, 95], axis=0).mean(0) if len(centers) else np.zeros(3)
        radius = float(np.percentile(np.linalg.norm(centers - mid, axis=1), 90)) if len(centers) else 1.0
        focus = 2.0 * radius if np.isfinite(radius) and radius > 0 else 2.0
        eye, forward, up, fov = mid - np.array([0.0, 0.0, focus]), np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0]), math.radians(60)
    else:
        ext = cameras["extrinsics"][0].double().numpy()  # [3, 4] camera-from-world
        K = cameras["intrinsics"][0].double().numpy()
        W, H = float(cameras["width"]), float(cameras["height"])
        R, t = ext[:, :3], ext[:, 3]
        eye, forward, up = -R.T @ t, R[2], -R[1]  # world-from-camera columns: R's rows
        cam = centers @ R.T + t  # [N, 3] camera coordinates
        z = cam[:, 2]
        front = z > 1e-9
        u = K[0, 0] * cam[front, 0] / z[front] + K[0, 2]
        v = K[1, 1] * cam[front, 1] / z[front] + K[1, 2]
        inside = z[front][(u >= 0) & (u < W) & (v >= 0) & (v < H)]
        depths = inside if len(inside) else z[front]
        focus = float(np.median(depths)) if len(depths) else 1.0
        fov = vertical_fov(H, float(K[1, 1]))
    return {"position": eye, "look_at": eye + focus * forward, "up": up, "fov": fov, "near": 0.1 * focus, "far": 1000.0 * focus,
            "focus": focus}


def _downscale(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    return np.asarray(Image.fromarray(image).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR))


def frustum_images(scene_url: str, num_timesteps: int, max_side: int = 160) -> np.ndarray:
    """Frames of the scene at ``scene_url`` for ``num_timesteps`` timesteps: uint8 ``[V, T, h, w, 3]``.

    Timestep ``t`` shows frame ``t`` when the scene has ``T`` frames, otherwise the frame at the
    same fraction of the video, ``round(t (F - 1) / (T - 1))``. Frames are downscaled so that
    their longer side is at most ``max_side`` pixels (they are textures on the frusta).
    """
    reader = open_scene(scene_url)
    F, T = reader.meta.num_frames, max(1, num_timesteps)
    idx = list(range(T)) if F == T else [round(t * (F - 1) / max(T - 1, 1)) for t in range(T)]
    views = []
    for v in range(reader.meta.num_views):
        frames = (reader.read_frames(v, idx).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()  # [T, H, W, 3]
        views.append(np.stack([_downscale(f, max_side) for f in frames]))
    return np.stack(views)


def read_image(url: str, max_side: int = 1024) -> np.ndarray:
    """An image file as uint8 ``[H, W, 3]``, downscaled so that its longer side is at most ``max_side``."""
    with fsspec.open(url, "rb") as f:
        image = np.asarray(Image.open(f).convert("RGB"))
    return _downscale(image, max_side)


def format_value(value: Any) -> str:
    """A cell: floats to 4 significant digits, lists of scalars comma-joined, the rest as JSON."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(format_value(v) for v in value)
    return json.dumps(value, sort_keys=True)


def flatten_summary(doc: dict, prefix: str = "") -> list[tuple[str, str]]:
    """``summary.json`` (or a part of it) flattened to ``(dotted key, formatted value)`` rows, in file order."""
    rows = []
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += flatten_summary(value, name + ".")
        else:
            rows.append((name, format_value(value)))
    return rows
