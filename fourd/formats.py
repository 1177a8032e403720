"""File formats every package reads and writes: 3DGS PLY, the cameras JSON and mp4 videos, through fsspec.

PLY layout (the one written by the reference 3D Gaussian Splatting code, binary little endian, one
``vertex`` element, float32 properties in this order)::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 ... f_rest_44  opacity  scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

with ``f_dc = (rgb - 0.5) / C0`` (``C0 = 0.28209479177387814``, the degree-0 SH constant), normals
zero, ``opacity = logit(o)``, ``scale = log(s)`` and ``rot`` the unit quaternion wxyz. We store
degree-0 colour only but always write the 45 ``f_rest_*`` of the degree-3 layout as zeros: the
reference loader asserts ``len(f_rest) == 3 (degree + 1)² - 3`` for its default degree 3 and the SIBR
viewer reads a fixed degree-3 record, while viewers that read properties by name (SuperSplat,
the common web viewers) simply ignore them. :func:`load_ply` reads files with or without them.
"""
from __future__ import annotations

import io
import json
import os
import tempfile

import fsspec
import imageio
import numpy as np
import torch
from plyfile import PlyData, PlyElement

from fourd.weights import atomic_write_bytes

__all__ = ["SH_C0", "PLY_PROPERTIES", "save_ply", "load_ply", "save_cameras_json", "load_cameras_json", "save_video"]

SH_C0 = 0.28209479177387814
N_SH_REST = 45
PLY_PROPERTIES = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    + [f"f_rest_{i}" for i in range(N_SH_REST)]
    + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
)
_OPACITY_EPS = 1e-7


def _check(name: str, tensor: torch.Tensor, shape: tuple, what: str) -> np.ndarray:
    if tensor.dim() != len(shape) or any(s is not None and s != t for s, t in zip(shape, tensor.shape)):
        expected = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{what}: {name} must be {expected}, got {list(tensor.shape)}")
    return tensor.detach().to("cpu", torch.float64).numpy()


def save_ply(
    url: str,
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
) -> None:
    """Write Gaussians as a standard 3DGS PLY (layout in the module docstring), atomically, via fsspec.

    Args: ``means [N, 3]`` world units, ``quats [N, 4]`` wxyz (normalised before writing),
    ``scales [N, 3]`` linear, ``opacities [N]`` in (0, 1) (clamped to ``[1e-7, 1 - 1e-7]`` before the
    logit), ``colors [N, 3]`` RGB in [0, 1].
    """
    n = means.shape[0] if means.dim() == 2 else -1
    m = _check("means", means, (None, 3), url)
    q = _check("quats", quats, (n, 4), url)
    s = _check("scales", scales, (n, 3), url)
    o = _check("opacities", opacities, (n,), url)
    c = _check("colors", colors, (n, 3), url)
    if np.any(s <= 0):
        raise ValueError(f"{url}: scales must be positive (they are stored as logs)")
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    o = np.clip(o, _OPACITY_EPS, 1 - _OPACITY_EPS)
    columns = [m, np.zeros_like(m), (c - 0.5) / SH_C0, np.zeros((len(m), N_SH_REST)),
               np.log(o / (1 - o))[:, None], np.log(s), q]
    values = np.concatenate(columns, axis=1).astype(np.float32)
    record = np.empty(len(m), dtype=[(name, "f4") for name in PLY_PROPERTIES])
    for i, name in enumerate(PLY_PROPERTIES):
        record[name] = values[:, i]
    buffer = io.BytesIO()
    PlyData([PlyElement.describe(record, "vertex")], text=False).write(buffer)
    atomic_write_bytes(url, buffer.getvalue())


def load_ply(url: str) -> dict[str, torch.Tensor]:
    """Read a 3DGS PLY into activated float32 tensors: the keyword arguments of :func:`save_ply`.

    Returns ``{"means" [N, 3], "quats" [N, 4] (wxyz, normalised), "scales" [N, 3] (exp),
    "opacities" [N] (sigmoid), "colors" [N, 3] (0.5 + C0 f_dc; higher SH bands are ignored)}``.
    """
    with fsspec.open(url, "rb") as f:
        ply = PlyData.read(io.BytesIO(f.read()))
    if "vertex" not in ply:
        raise ValueError(f"{url}: no 'vertex' element, not a Gaussian splat PLY")
    vertex = ply["vertex"].data
    missing = [p for p in ("x", "f_dc_0", "opacity", "scale_0", "rot_0") if p not in vertex.dtype.names]
    if missing:
        raise ValueError(f"{url}: not a Gaussian splat PLY (missing properties {missing})")

    def cols(*names: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([np.asarray(vertex[n], dtype=np.float32) for n in names], axis=1))

    quats = cols("rot_0", "rot_1", "rot_2", "rot_3")
    return {
        "means": cols("x", "y", "z"),
        "quats": quats / quats.norm(dim=1, keepdim=True),
        "scales": cols("scale_0", "scale_1", "scale_2").exp(),
        "opacities": torch.sigmoid(cols("opacity")[:, 0]),
        "colors": 0.5 + SH_C0 * cols("f_dc_0", "f_dc_1", "f_dc_2"),
    }


def save_cameras_json(url: str, extrinsics: torch.Tensor, intrinsics: torch.Tensor, width: int, height: int) -> None:
    """Write cameras as JSON (atomically, via fsspec).

    Args: ``extrinsics [V, 3, 4]`` (or ``[V, 4, 4]``) camera-from-world ``[R | t]``, OpenCV axes
    (x right, y down, z forward), world units; ``intrinsics [V, 3, 3]`` in pixels; image size in pixels.
    Schema::

        {"convention": "opencv", "extrinsics": "camera_from_world", "width": W, "height": H,
         "cameras": [{"index": v, "extrinsic": 3x4 rows, "intrinsic": 3x3 rows}, ...]}
    """
    if extrinsics.dim() != 3 or extrinsics.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"{url}: extrinsics must be [V, 3, 4] or [V, 4, 4], got {list(extrinsics.shape)}")
    if intrinsics.shape != (extrinsics.shape[0], 3, 3):
        raise ValueError(f"{url}: intrinsics must be [{extrinsics.shape[0]}, 3, 3], got {list(intrinsics.shape)}")
    ext = extrinsics[:, :3].detach().to("cpu", torch.float64).tolist()
    intr = intrinsics.detach().to("cpu", torch.float64).tolist()
    doc = {
        "convention": "opencv",
        "extrinsics": "camera_from_world",
        "width": int(width),
        "height": int(height),
        "cameras": [{"index": v, "extrinsic": e, "intrinsic": k} for v, (e, k) in enumerate(zip(ext, intr))],
    }
    atomic_write_bytes(url, json.dumps(doc, indent=1).encode())


def load_cameras_json(url: str) -> dict:
    """Read :func:`save_cameras_json` output: ``{"extrinsics" [V, 3, 4], "intrinsics" [V, 3, 3], "width", "height"}``."""
    with fsspec.open(url, "rb") as f:
        doc = json.loads(f.read())
    if doc.get("convention") != "opencv" or doc.get("extrinsics") != "camera_from_world":
        raise ValueError(f"{url}: expected OpenCV camera_from_world cameras, got {doc.get('convention')}/{doc.get('extrinsics')}")
    cams = doc["cameras"]
    return {
        "extrinsics": torch.tensor([c["extrinsic"] for c in cams], dtype=torch.float64).reshape(-1, 3, 4),
        "intrinsics": torch.tensor([c["intrinsic"] for c in cams], dtype=torch.float64).reshape(-1, 3, 3),
        "width": doc["width"],
        "height": doc["height"],
    }


def save_video(url: str, frames: torch.Tensor, fps: float = 16.0) -> None:
    """Write ``frames [T, H, W, 3]`` (RGB in [0, 1], clamped) as an H.264 mp4 through imageio-ffmpeg.

    yuv420p needs even sizes: an odd height or width is padded by repeating the last row/column.
    """
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"{url}: frames must be [T, H, W, 3] with T > 0, got {list(frames.shape)}")
    data = (frames.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    pad_h, pad_w = data.shape[1] % 2, data.shape[2] % 2
    data = np.pad(data, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "video.mp4")
        imageio.mimwrite(path, list(data), format="FFMPEG", fps=fps, macro_block_size=1)
        with open(path, "rb") as f:
            atomic_write_bytes(url, f.read())
