"""Tiny fake layouts of the public datasets for tests/test_readers*.py, and the camera check.

Every fake places cameras around known 3D points (:data:`POINTS`), computes each point's pixel with
the DATASET's own documented projection (written out here, independent of fourd.data.readers) and
draws a small Gaussian blob there. After conversion, :func:`check_blobs` projects the points with the
converted scene's cameras (our convention) and finds the blobs at those pixels in the converted
frames: content and cameras must agree within a fraction of a pixel, through every resize and crop.
"""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from fourd.data import read_scene

POINTS = np.array([[0.9, 0.5, 0.1], [-0.8, 0.6, -0.15], [0.3, -0.9, 0.2], [-0.65, -0.55, -0.1], [0.05, 0.05, 0.0]])


def quat_to_R(q) -> np.ndarray:
    """Hamilton quaternion (w, x, y, z) -> rotation matrix (the test's own formula)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def R_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z) (the test's own formula; checked against quat_to_R)."""
    w = np.sqrt(max(0.0, 1 + np.trace(R))) / 2
    x = np.copysign(np.sqrt(max(0.0, 1 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2])
    y = np.copysign(np.sqrt(max(0.0, 1 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0])
    z = np.copysign(np.sqrt(max(0.0, 1 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1])
    q = np.array([w, x, y, z])
    assert np.allclose(quat_to_R(q), R, atol=1e-9)
    return q


def cv_camera(rng, distance: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """A camera looking at the origin from within 30 degrees of the +z axis, with a random roll:
    camera-to-world rotation with OpenCV axes (columns: right, down, forward) and its centre.
    The points lie near the z = 0 plane, so their blobs stay apart from every such view."""
    tilt, azimuth, roll = rng.uniform(0, np.pi / 6), rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)
    d = -np.array([np.sin(tilt) * np.cos(azimuth), np.sin(tilt) * np.sin(azimuth), np.cos(tilt)])
    x0 = np.cross([0.0, 1.0, 0.0], d)
    x0 /= np.linalg.norm(x0)
    x = np.cos(roll) * x0 + np.sin(roll) * np.cross(d, x0)
    R = np.stack([x, np.cross(d, x), d], 1)
    return R, -distance * d + rng.uniform(-0.15, 0.15, 3)


def w2c_camera(rng) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera (R, t) of :func:`cv_camera` (x_cam = R x + t, OpenCV axes)."""
    R, C = cv_camera(rng)
    return R.T, -R.T @ C


def blobs(H: int, W: int, pixels: np.ndarray, sigma: float = 1.2) -> np.ndarray:
    """Float [H, W] in [0, 1]: Gaussian blobs centred at continuous ``pixels`` [N, 2] (x, y; pixel
    (i, j) centred at (j + 0.5, i + 0.5)). Asserts the blobs are apart and inside, so a fake is usable."""
    assert all(np.linalg.norm(a - b) > 9 for k, a in enumerate(pixels) for b in pixels[k + 1:]), f"blobs overlap: {pixels}"
    assert ((pixels > 5) & (pixels < np.array([W, H]) - 5)).all(), f"blobs near the border: {pixels}"
    x, y = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    img = sum(np.exp(-((x - u) ** 2 + (y - v) ** 2) / (2 * sigma ** 2)) for u, v in pixels)
    return np.clip(img, 0, 1)


def grey_png(path: Path, intensity: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.repeat((intensity * 255).round().astype(np.uint8)[..., None], 3, -1)).save(path)


def check_blobs(scene_url: str, points: np.ndarray = POINTS, tol: float = 0.3, dark: bool = False, min_points: int = 4) -> dict:
    """Read the converted scene and check, for every view and frame, that each point projected with
    its cameras lands on its blob (intensity-weighted centroid within ``tol`` px). ``dark``: blobs are
    dark on a bright background. Returns the scene's :class:`~fourd.data.Scene` fields used."""
    scene = read_scene(scene_url)
    V, T, _, H, W = scene.frames.shape
    for v in range(V):
        for t in range(T):
            img = scene.frames[v, t].mean(0).numpy()
            img = 1 - img if dark else img
            ext, K = scene.extrinsics[v, t].double().numpy(), scene.intrinsics[v, t].double().numpy()
            cam = points @ ext[:, :3].T + ext[:, 3]
            uv = cam @ K.T
            uv = uv[:, :2] / uv[:, 2:]
            checked = 0
            for u, w in uv:
                if not (4 <= u < W - 4 and 4 <= w < H - 4):
                    continue
                j0, i0 = int(u), int(w)
                ys, xs = np.mgrid[i0 - 3:i0 + 4, j0 - 3:j0 + 4]
                weight = img[ys, xs]
                assert weight.sum() > 0.5, f"{scene.name} v{v} t{t}: no blob near projected ({u:.2f}, {w:.2f})"
                cu, cv = (weight * (xs + 0.5)).sum() / weight.sum(), (weight * (ys + 0.5)).sum() / weight.sum()
                assert abs(cu - u) < tol and abs(cv - w) < tol, f"{scene.name} v{v} t{t}: blob at ({cu:.2f}, {cv:.2f}), camera says ({u:.2f}, {w:.2f})"
                checked += 1
            assert checked >= min_points, f"{scene.name} v{v} t{t}: only {checked} points inside"
    return {"scene": scene}


# ------------------------------------------------------------------------------------------ layouts
def realestate10k(root: Path, name: str, rng, num_frames: int = 4, missing=(), bad_lines=(), caption=None, size=(48, 64)):
    """``root/<name>.txt`` + ``root/<name>/<timestamp>.png``. RealEstate10K's projection: normalised
    intrinsics (fx, cx by the width; fy, cy by the height) and the 3x4 OpenCV world-to-camera."""
    H, W = size
    fx, fy, cx, cy = 60 / W, 58 / H, 0.52, 0.49
    lines = ["https://www.youtube.com/watch?v=fake"]
    for i in range(num_frames):
        R, t = w2c_camera(rng)
        cam = POINTS @ R.T + t
        pix = np.stack([(fx * cam[:, 0] / cam[:, 2] + cx) * W, (fy * cam[:, 1] / cam[:, 2] + cy) * H], -1)
        stamp = 5_000_000 + i * 100_000  # 10 fps
        if i not in missing:
            grey_png(root / name / f"{stamp}.png", blobs(H, W, pix))
        w2c = np.concatenate([R, t[:, None]], 1)
        lines.append(f"{stamp} garbage" if i in bad_lines else " ".join(map(str, [stamp, fx, fy, cx, cy, 0, 0, *w2c.ravel()])))
    (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / name).mkdir(exist_ok=True)
    if caption:
        (root / name / "caption.txt").write_text(caption)


def gl_camera(rng):
    """:func:`cv_camera` as a camera-to-world rotation in OpenGL/Blender axes (y up, looking down -z) and its centre."""
    R, C = cv_camera(rng)
    return R * np.array([1.0, -1.0, -1.0]), C


def project_gl(R: np.ndarray, C: np.ndarray, fx, fy, cx, cy) -> np.ndarray:
    """NeRF / nerfstudio projection: camera-space (x, y, z) with y up and z back; ray directions
    ((u - cx) / fx, -(v - cy) / fy, -1)."""
    cam = (POINTS - C) @ R  # R^T (p - C)
    return np.stack([cx + fx * cam[:, 0] / -cam[:, 2], cy - fy * cam[:, 1] / -cam[:, 2]], -1)


def distort(pix: np.ndarray, fx, fy, cx, cy, k1, k2, p1, p2) -> np.ndarray:
    """OpenCV radial-tangential distortion of ideal pixels (the documented OPENCV model)."""
    x, y = (pix[:, 0] - cx) / fx, (pix[:, 1] - cy) / fy
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([fx * xd + cx, fy * yd + cy], -1)


def write_colmap_txt(folder: Path, cameras, images, points) -> None:
    """COLMAP text model. ``cameras``: {id: (model, w, h, params)}; ``images``: {id: (qvec, tvec,
    camera_id, name, [(x, y, point_id)])}; ``points``: {id: xyz}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cameras.txt").write_text("# Camera list\n" + "".join(
        f"{i} {m} {w} {h} {' '.join(map(str, p))}\n" for i, (m, w, h, p) in cameras.items()))
    text = "# Image list with two lines of data per image\n"
    for i, (q, t, cam, name, obs) in images.items():
        text += f"{i} {' '.join(map(str, q))} {' '.join(map(str, t))} {cam} {name}\n"
        text += " ".join(f"{x} {y} {pid}" for x, y, pid in obs) + "\n"
    (folder / "images.txt").write_text(text)
    (folder / "points3D.txt").write_text("# 3D point list\n" + "".join(
        f"{i} {x} {y} {z} 128 128 128 0.5 1 0\n" for i, (x, y, z) in points.items()))


_MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "RADIAL": 3, "OPENCV": 4}


def write_colmap_bin(folder: Path, cameras, images, points) -> None:
    """The same model in COLMAP's binary layout (little endian, as documented)."""
    folder.mkdir(parents=True, exist_ok=True)
    data = struct.pack("<Q", len(cameras))
    for i, (m, w, h, p) in cameras.items():
        data += struct.pack("<iiQQ", i, _MODEL_IDS[m], w, h) + struct.pack(f"<{len(p)}d", *p)
    (folder / "cameras.bin").write_bytes(data)
    data = struct.pack("<Q", len(images))
    for i, (q, t, cam, name, obs) in images.items():
        data += struct.pack("<i4d3di", i, *q, *t, cam) + name.encode() + b"\0" + struct.pack("<Q", len(obs))
        data += b"".join(struct.pack("<ddq", x, y, pid) for x, y, pid in obs)
    (folder / "images.bin").write_bytes(data)
    data = struct.pack("<Q", len(points))
    for i, xyz in points.items():
        data += struct.pack("<Q3d3Bd", i, *xyz, 128, 128, 128, 0.5) + struct.pack("<Q", 2) + struct.pack("<iiii", 1, 0, 2, 0)
    (folder / "points3D.bin").write_bytes(data)


def colmap_scene(scene: Path, rng, binary: bool, num_images: int = 4, size=(48, 64)):
    """A COLMAP capture: camera 1 PINHOLE, camera 2 OPENCV (distorted); images named out of id order.
    Returns {image name: z of each point in that camera} for the depth check."""
    H, W = size
    cams = {1: ("PINHOLE", W, H, [62.0, 60.0, 33.0, 23.5]), 2: ("OPENCV", W, H, [58.0, 59.0, 31.0, 24.5, -0.5, 0.1, 0.05, -0.04])}
    images, depths = {}, {}
    for k in range(num_images):
        R, t = w2c_camera(rng)
        q = R_to_quat(R)
        cam_id = 1 + k % 2
        model, _, _, p = cams[cam_id]
        fx, fy, cx, cy = p[:4]
        cam = POINTS @ R.T + t
        pix = np.stack([fx * cam[:, 0] / cam[:, 2] + cx, fy * cam[:, 1] / cam[:, 2] + cy], -1)
        if model == "OPENCV":
            pix = distort(pix, fx, fy, cx, cy, *p[4:])
        name = f"{num_images - k:04d}.png"
        grey_png(scene / "images" / name, blobs(H, W, pix))
        obs = [(float(x), float(y), 10 + n) for n, (x, y) in enumerate(pix)] + [(1.0, 2.0, -1)]
        images[k + 1] = (q, t, cam_id, name, obs)
        depths[name] = cam[:, 2]
    points = {10 + n: p for n, p in enumerate(POINTS)}
    (write_colmap_bin if binary else write_colmap_txt)(scene / "sparse" / "0", cams, images, points)
    return depths


def kubric_view(folder: Path, rng, num_frames: int, size=(48, 64), focal=30.0, sensor=32.0, z_plane=3.0, missing=()):
    """One Kubric render: metadata.json (camera positions + wxyz quaternions of Blender camera
    axes, focal/sensor in mm), rgba_*.png and depth_*.tiff (distance to the camera centre of a
    fronto-parallel plane at z = ``z_plane``, by Kubric's ``z_to_depth``)."""
    H, W = size
    positions, quats = [], []
    sensor_h = sensor / W * H
    for t in range(num_frames):
        R, C = gl_camera(rng)
        q = R_to_quat(R)
        positions.append(C.tolist())
        quats.append(q.tolist())
        # kb.Camera.project_point: K = [[fx, 0, -0.5], [0, -fy, -0.5], [0, 0, -1]] (fx = f / sensor_w,
        # fy = f / sensor_h, image size 1 x 1) applied to inv(matrix_world) @ p; then scaled to pixels.
        Kn = np.array([[focal / sensor, 0, -0.5], [0, -focal / sensor_h, -0.5], [0, 0, -1]])
        local = (POINTS - C) @ R
        proj = local @ Kn.T
        pix = proj[:, :2] / proj[:, 2:] * np.array([W, H])
        if t in missing:
            continue
        rgba = np.zeros((H, W, 4), np.uint8)
        rgba[..., :3] = (blobs(H, W, pix) * 255).round().astype(np.uint8)[..., None]
        rgba[..., 3] = 255
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba).save(folder / f"rgba_{t:05d}.png")
        xs = (np.arange(-W / 2, W / 2) + 0.5) / W * sensor
        ys = (np.arange(-H / 2, H / 2) + 0.5) / H * sensor_h
        gx, gy = np.meshgrid(xs, ys)
        distance = z_plane * np.sqrt(1 + (gx ** 2 + gy ** 2) / focal ** 2)
        buf = io.BytesIO()
        Image.fromarray(distance.astype(np.float32), mode="F").save(buf, format="TIFF")
        (folder / f"depth_{t:05d}.tiff").write_bytes(buf.getvalue())
    meta = {"flags": {}, "metadata": {"frame_rate": 12, "num_frames": num_frames, "resolution": [W, H]},
            "camera": {"focal_length": focal, "sensor_width": sensor, "field_of_view": 2 * np.arctan(sensor / 2 / focal),
                       "positions": positions, "quaternions": quats}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.json").write_text(json.dumps(meta))


def objaverse_object(folder: Path, rng, convention: str, num_views: int = 3, num_frames: int = 2, moving_view=None, size=(48, 64)):
    """Per-view RGBA frame folders (black blobs, alpha = blob, transparent elsewhere) + cameras.json.
    ``convention`` "opengl": camera-to-world in Blender axes + camera_angle_x, pixels by the NeRF
    projection; "opencv": world-to-camera OpenCV + fl_x/fl_y/cx/cy, pixels by the pinhole formula.
    ``moving_view``: that view gets one matrix per frame."""
    H, W = size
    f = 60.0
    views = []
    for v in range(num_views):
        mats = []
        for t in range(num_frames if v == moving_view else 1):
            if convention == "opengl":
                R, C = gl_camera(rng)
                pix = project_gl(R, C, f, f, W / 2, H / 2)
                m = np.concatenate([np.concatenate([R, C[:, None]], 1), [[0, 0, 0, 1]]])
            else:
                R, t_ = w2c_camera(rng)
                cam = POINTS @ R.T + t_
                pix = np.stack([f * cam[:, 0] / cam[:, 2] + 31.0, 61.0 * cam[:, 1] / cam[:, 2] + 24.5], -1)
                m = np.concatenate([R, t_[:, None]], 1)
            mats.append(m.tolist())
            frames = range(num_frames) if v != moving_view else [t]
            for k in frames:
                rgba = np.zeros((H, W, 4), np.uint8)
                rgba[..., 3] = (blobs(H, W, pix) * 255).round().astype(np.uint8)
                (folder / f"view_{v:02d}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(rgba).save(folder / f"view_{v:02d}" / f"{k:03d}.png")
        views.append({"file_path": f"view_{v:02d}", "transform_matrix": mats if v == moving_view else mats[0]})
    doc = {"views": views, "fps": 8}
    if convention == "opengl":
        doc.update(convention="blender", matrix="camera_to_world", camera_angle_x=2 * np.arctan(W / 2 / f))
    else:
        doc.update(convention="opencv", matrix="world_to_camera", fl_x=f, fl_y=61.0, cx=31.0, cy=24.5)
    (folder / "cameras.json").write_text(json.dumps(doc))


def realestate10k_chunk(text_root: Path, chunk: Path) -> None:
    """pixelSplat's preprocessed form of the sequences under ``text_root`` (written by
    :func:`realestate10k`): one ``.torch`` chunk of {key, url, timestamps, cameras [N, 18], images
    (JPEG bytes as uint8 tensors)} and ``index.json`` beside it."""
    import torch

    examples = []
    for txt in sorted(text_root.glob("*.txt")):
        lines = txt.read_text().splitlines()
        rows = [list(map(float, line.split())) for line in lines[1:]]
        images = []
        for row in rows:
            buf = io.BytesIO()
            Image.open(text_root / txt.stem / f"{int(row[0])}.png").save(buf, format="JPEG", quality=95)
            images.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
        examples.append({"key": txt.stem, "url": lines[0], "timestamps": torch.tensor([int(r[0]) for r in rows]),
                         "cameras": torch.tensor([r[1:] for r in rows], dtype=torch.float32), "images": images})
    chunk.parent.mkdir(parents=True, exist_ok=True)
    torch.save(examples, chunk)
    (chunk.parent / "index.json").write_text(json.dumps({ex["key"]: chunk.name for ex in examples}))
