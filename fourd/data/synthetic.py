"""Procedural synthetic 4D scenes rendered by vectorised analytic ray casting (no external renderer).

A scene is a few textured spheres and boxes moving on smooth (sinusoidal) paths and spinning,
standing on a checkered ground plane (z = 0, world z is up) under a textured sky dome, seen by a
ring or arc of calibrated pinhole cameras looking at the scene centre. Rendering gives RGB, camera
z-depth (metres), instance masks (object ``k`` has id ``k + 1``, 0 = ground/sky) and OpenCV
cameras. Deterministic by seed. Kinds: ``dynamic`` (objects move, cameras fixed per view) and
``static`` (objects frozen, each view's camera sweeps along the arc over time: a camera trajectory
over a static scene).

CLI: ``python -m fourd.data.synthetic --out DIR --num-scenes N [--num-views V --num-frames T ...]``.
"""
from __future__ import annotations

import argparse
import math
import posixpath
from dataclasses import dataclass

import numpy as np
import torch

from fourd.data.format import Scene
from fourd.data.scene_io import write_scene

__all__ = ["generate_scene", "write_scene", "write_synthetic_dataset", "look_at", "main"]

_SKY_RADIUS = 40.0
_LIGHT = torch.tensor([0.4, -0.3, 0.87])


def look_at(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """OpenCV camera-from-world extrinsics of cameras at ``eye`` [..., 3] looking at ``target`` [..., 3].

    World z is up. Returns [..., 3, 4] = [R | t] with camera x right, y down, z forward (metres).
    """
    up = torch.tensor([0.0, 0.0, 1.0])
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up.expand_as(forward)), dim=-1)
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward], dim=-2)
    t = -(R @ eye.unsqueeze(-1))
    return torch.cat([R, t], dim=-1)


def _axis_angle(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [..., 3, 3] (object-to-world) from unit ``axis`` [..., 3] and ``angle`` [...] (radians)."""
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis.shape[:-1], 3, 3)
    s, c = torch.sin(angle)[..., None, None], torch.cos(angle)[..., None, None]
    return torch.eye(3) + s * K + (1 - c) * (K @ K)


@dataclass
class _Objects:
    """Per-object parameters (K objects): shapes, sizes, motion and texture."""

    is_box: torch.Tensor  # [K] bool
    size: torch.Tensor  # [K, 3] box half extents; sphere radius in every component
    rest: torch.Tensor  # [K, 3] centre at rest
    amp: torch.Tensor  # [K, 3] path amplitudes (metres)
    freq: torch.Tensor  # [K, 3] path frequencies (Hz)
    phase: torch.Tensor  # [K, 3]
    axis: torch.Tensor  # [K, 3] spin axis (unit)
    omega: torch.Tensor  # [K] spin rate (rad/s)
    colors: torch.Tensor  # [K, 2, 3] checker colours
    checker: torch.Tensor  # [K] checker cells per metre
    waves: torch.Tensor  # [K, 3, 3] noise wave vectors
    wave_phase: torch.Tensor  # [K, 3]

    @property
    def radius(self) -> torch.Tensor:
        """Bounding radius [K] (metres)."""
        return torch.where(self.is_box, self.size.norm(dim=-1), self.size[:, 0])

    def pose(self, seconds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Centres [K, F, 3] and object-to-world rotations [K, F, 3, 3] at times ``seconds`` [F]."""
        arg = 2 * math.pi * self.freq[:, None] * seconds[None, :, None] + self.phase[:, None]
        wave = torch.sin(arg)
        wave = torch.cat([wave[..., :2], 0.5 + 0.5 * wave[..., 2:]], dim=-1)  # z only bounces upwards
        centers = self.rest[:, None] + self.amp[:, None] * wave
        angle = self.omega[:, None] * seconds[None]
        return centers, _axis_angle(self.axis[:, None].expand(-1, len(seconds), 3), angle)


def _f32(array) -> torch.Tensor:
    return torch.tensor(np.asarray(array), dtype=torch.float32)


def _sample_objects(rng: np.random.Generator, num_objects: int) -> _Objects:
    K = num_objects
    is_box = rng.random(K) < 0.4
    radius = rng.uniform(0.35, 0.75, K)
    half = rng.uniform(0.25, 0.55, (K, 3))
    size = np.where(is_box[:, None], half, radius[:, None].repeat(3, 1))
    bound = np.where(is_box, np.linalg.norm(half, axis=-1), radius)
    ang = rng.uniform(0, 2 * np.pi, K)
    dist = rng.uniform(0.0, 1.6, K)
    rest = np.stack([dist * np.cos(ang), dist * np.sin(ang), bound + 0.02], -1)
    amp = np.concatenate([rng.uniform(0.2, 0.8, (K, 2)), rng.uniform(0.0, 0.4, (K, 1))], -1)
    axis = rng.normal(size=(K, 3))
    colors = rng.uniform(0.05, 1.0, (K, 2, 3))
    colors[:, 1] = 1.0 - colors[:, 0] * rng.uniform(0.5, 1.0, (K, 1))
    f = _f32
    return _Objects(
        is_box=torch.from_numpy(is_box),
        size=f(size),
        rest=f(rest),
        amp=f(amp),
        freq=f(rng.uniform(0.1, 0.35, (K, 3))),
        phase=f(rng.uniform(0, 2 * np.pi, (K, 3))),
        axis=torch.nn.functional.normalize(f(axis), dim=-1),
        omega=f(rng.uniform(0.5, 2.0, K) * rng.choice([-1.0, 1.0], K)),
        colors=f(colors),
        checker=f(rng.uniform(2.0, 6.0, K)),
        waves=f(rng.normal(0.0, 6.0, (K, 3, 3))),
        wave_phase=f(rng.uniform(0, 2 * np.pi, (K, 3))),
    )


def _noise(p: torch.Tensor, waves: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Smooth procedural noise in [0, 1] at points ``p`` [..., 3] from wave vectors [..., 3(w), 3]."""
    return 0.5 + 0.5 * torch.sin(torch.einsum("...d,...wd->...w", p, waves) + phase).mean(-1)


def _checker(p: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """Checker pattern {0, 1} [...] at points ``p`` [..., D] with ``cells`` per unit [...]."""
    return torch.floor(p * cells[..., None]).sum(-1).remainder(2)


def _to_local(rotations: torch.Tensor, centers: torch.Tensor, points: torch.Tensor, dirs: torch.Tensor):
    """World points [..., F, P|1, 3] and directions [F, P, 3] into object frames ([..., F] poses)."""
    Rt = rotations.transpose(-1, -2)
    local_points = torch.einsum("...fij,...fpj->...fpi", Rt, points - centers[..., None, :])
    local_dirs = torch.einsum("...fij,fpj->...fpi", Rt, dirs)
    return local_points, local_dirs


def _object_distances(objects: _Objects, centers, rotations, origin, dirs) -> torch.Tensor:
    """Ray parameter [K, F, P] of the first hit with each object (inf on a miss).

    ``origin`` [F, 3], ``dirs`` [F, P, 3] (world); ``centers`` [K, F, 3], ``rotations`` [K, F, 3, 3].
    """
    K, F, P = centers.shape[0], dirs.shape[0], dirs.shape[1]
    s = torch.full((K, F, P), torch.inf)
    spheres = (~objects.is_box).nonzero().squeeze(-1)
    boxes = objects.is_box.nonzero().squeeze(-1)
    if len(spheres):
        # The sphere test is rotation-invariant: work in world axes around the centre.
        o = (origin[None] - centers[spheres])[:, :, None]
        a = (dirs * dirs).sum(-1)
        b = 2 * (o * dirs).sum(-1)
        c = (o * o).sum(-1) - objects.size[spheres, 0, None, None] ** 2
        disc = b * b - 4 * a * c
        hit = (-b - disc.clamp_min(0).sqrt()) / (2 * a)
        s[spheres] = torch.where((disc > 0) & (hit > 1e-4), hit, torch.inf)
    if len(boxes):
        o, d = _to_local(rotations[boxes], centers[boxes], origin[None, :, None], dirs)
        d = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
        half = objects.size[boxes, None, None]
        t1, t2 = (-half - o) / d, (half - o) / d
        near = torch.minimum(t1, t2).amax(-1)
        far = torch.maximum(t1, t2).amin(-1)
        s[boxes] = torch.where((far >= near) & (near > 1e-4), near, torch.inf)
    return s


def _surface(objects: _Objects, index: torch.Tensor, centers, rotations, points: torch.Tensor):
    """Local hit points and world normals [F, P, 3] of object ``index`` [F, P] at world ``points`` [F, P, 3]."""
    frame = torch.arange(index.shape[0])[:, None]
    R, c = rotations[index, frame], centers[index, frame]  # [F, P, 3, 3], [F, P, 3]
    local = ((points - c)[..., None, :] @ R).squeeze(-2)  # R^T (p - c)
    ratio = local / objects.size[index]  # unit normal on a sphere; +-1 on a box's hit face
    box_n = torch.nn.functional.one_hot(ratio.abs().argmax(-1), 3).float() * torch.sign(ratio)
    normal = torch.where(objects.is_box[index][..., None], box_n, ratio)
    return local, (R @ normal[..., None]).squeeze(-1)


def _sample_cameras(rng, num_views, num_frames, height, width, kind, arc_degrees, static_sweep_degrees):
    """Extrinsics [V, T, 3, 4] (camera-from-world) and intrinsics [V, T, 3, 3] (pixels)."""
    radius = rng.uniform(4.0, 5.5)
    elevation = np.deg2rad(rng.uniform(12.0, 30.0))
    start = rng.uniform(0, 2 * np.pi)
    arc = np.deg2rad(arc_degrees)
    spacing = arc / num_views if arc_degrees >= 360 else arc / max(num_views - 1, 1)
    theta = start + spacing * np.arange(num_views)[:, None] + np.zeros((1, num_frames))
    if kind == "static":
        theta = theta + np.deg2rad(static_sweep_degrees) * np.arange(num_frames)[None] / max(num_frames - 1, 1)
    theta = torch.tensor(theta, dtype=torch.float32)
    eye = torch.stack(
        [radius * math.cos(elevation) * torch.cos(theta), radius * math.cos(elevation) * torch.sin(theta),
         torch.full_like(theta, radius * math.sin(elevation))], -1,
    )
    target = torch.tensor([*rng.uniform(-0.2, 0.2, 2), rng.uniform(0.3, 0.6)], dtype=torch.float32)
    extrinsics = look_at(eye, target.expand_as(eye))
    focal = (width / 2) / math.tan(np.deg2rad(rng.uniform(40.0, 55.0)) / 2)
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=torch.float32)
    return extrinsics, K.expand(num_views, num_frames, 3, 3).contiguous()


def generate_scene(
    seed: int,
    num_views: int = 4,
    num_frames: int = 9,
    height: int = 64,
    width: int = 64,
    kind: str = "dynamic",
    num_objects: int | None = None,
    arc_degrees: float = 120.0,
    static_sweep_degrees: float = 40.0,
    fps: float = 12.0,
) -> Scene:
    """Render a procedural scene, deterministic in ``seed``.

    ``num_objects`` defaults to 2-4 (seeded); ``arc_degrees`` is the arc the views span (>= 360: a
    full ring); for ``kind="static"`` each camera additionally sweeps ``static_sweep_degrees`` over
    the frames. Returns a :class:`Scene`: frames [V, T, 3, H, W] in [0, 1], depth [V, T, H, W]
    (camera z, metres), masks uint8 [V, T, H, W], extrinsics [V, T, 3, 4] (world frame),
    intrinsics [V, T, 3, 3] (pixels, centre at ``(W/2, H/2)``), object_centers [K, T, 3],
    object_radii [K].
    """
    if kind not in ("dynamic", "static"):
        raise ValueError(f"generate_scene: kind must be 'dynamic' or 'static', got {kind!r}")
    rng = np.random.default_rng(seed)
    V, T, H, W = num_views, num_frames, height, width
    objects = _sample_objects(rng, int(num_objects or rng.integers(2, 5)))
    extrinsics, intrinsics = _sample_cameras(rng, V, T, H, W, kind, arc_degrees, static_sweep_degrees)
    ground = torch.tensor(rng.uniform(0.2, 0.9, (2, 3)), dtype=torch.float32)
    ground_cells = float(rng.uniform(0.6, 1.5))
    sky = torch.tensor(rng.uniform(0.3, 1.0, (2, 3)), dtype=torch.float32)
    sky_waves = torch.tensor(rng.normal(0, 0.4, (3, 3)), dtype=torch.float32)
    sky_phase = torch.tensor(rng.uniform(0, 2 * np.pi, 3), dtype=torch.float32)

    seconds = torch.arange(T, dtype=torch.float32) / fps
    if kind == "static":
        seconds = torch.zeros_like(seconds)
    centers, rotations = objects.pose(seconds)  # [K, T, 3], [K, T, 3, 3]
    F = V * T
    frame_time = torch.arange(F) % T
    centers_f, rotations_f = centers[:, frame_time], rotations[:, frame_time]

    # Rays through pixel centres; d has camera z = 1, so the ray parameter is the z-depth.
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)  # [P, 3]
    R, t = extrinsics[..., :3].reshape(F, 3, 3), extrinsics[..., 3].reshape(F, 3)
    cam_dirs = pix @ torch.linalg.inv(intrinsics.reshape(F, 3, 3)).transpose(-1, -2)  # [F, P, 3]
    dirs = cam_dirs @ R  # world directions: R^T d for each ray
    origin = -(R.transpose(-1, -2) @ t[..., None]).squeeze(-1)  # [F, 3]

    s_obj = _object_distances(objects, centers_f, rotations_f, origin, dirs)
    s_ground = torch.where(dirs[..., 2] < -1e-6, -origin[:, None, 2] / dirs[..., 2].clamp_max(-1e-6), torch.inf)
    a = (dirs * dirs).sum(-1)
    b = 2 * (dirs * origin[:, None]).sum(-1)
    c = (origin * origin).sum(-1)[:, None] - _SKY_RADIUS**2
    s_sky = (-b + (b * b - 4 * a * c).sqrt()) / (2 * a)
    depth, which = torch.cat([s_sky[None], s_ground[None], s_obj], 0).min(0)  # which: 0 sky, 1 ground, k+2 object k
    points = origin[:, None] + depth[..., None] * dirs

    # Shade the visible surface only.
    light = torch.nn.functional.normalize(_LIGHT, dim=0)
    index = (which - 2).clamp_min(0)
    local, normal = _surface(objects, index, centers_f, rotations_f, points)
    cell = _checker(local, objects.checker[index])
    albedo = torch.lerp(objects.colors[index, 0], objects.colors[index, 1], cell[..., None])
    noise = _noise(local, objects.waves[index], objects.wave_phase[index])
    lambert = 0.35 + 0.65 * (normal @ light).clamp_min(0)
    obj_rgb = albedo * ((0.75 + 0.25 * noise) * lambert)[..., None]
    g_cell = _checker(points[..., :2], torch.full(points.shape[:-1], ground_cells))
    ground_rgb = torch.lerp(ground[0], ground[1], g_cell[..., None]) * (0.35 + 0.65 * light[2])
    elev = (points[..., 2] / _SKY_RADIUS).clamp(0, 1)
    sky_rgb = torch.lerp(sky[0], sky[1], elev[..., None]) * (0.8 + 0.2 * _noise(points, sky_waves, sky_phase)[..., None])
    which3 = which[..., None]
    rgb = torch.where(which3 == 0, sky_rgb, torch.where(which3 == 1, ground_rgb, obj_rgb))

    masks = (which - 1).clamp_min(0).to(torch.uint8)
    return Scene(
        name=f"synthetic_{kind}_{seed:06d}",
        kind=kind,
        frames=rgb.clamp(0, 1).reshape(V, T, H, W, 3).permute(0, 1, 4, 2, 3).contiguous(),
        fps=fps,
        depth=depth.reshape(V, T, H, W).contiguous(),
        masks=masks.reshape(V, T, H, W).contiguous(),
        extrinsics=extrinsics.contiguous(),
        intrinsics=intrinsics,
        object_centers=centers,
        object_radii=objects.radius,
    )


def write_synthetic_dataset(out: str, num_scenes: int, seed: int = 0, kinds: tuple = ("dynamic",), rgb_format: str = "png", **scene_kwargs) -> list[str]:
    """Generate ``num_scenes`` scenes (seeds ``seed + i``, kind cycling through ``kinds``) and write
    each to ``<out>/<scene name>`` (any fsspec URL). ``scene_kwargs`` go to :func:`generate_scene`.
    Returns the scene URLs."""
    urls = []
    for i in range(num_scenes):
        scene = generate_scene(seed + i, kind=kinds[i % len(kinds)], **scene_kwargs)
        url = posixpath.join(out.rstrip("/"), scene.name)
        write_scene(scene, url, rgb_format=rgb_format)
        urls.append(url)
    return urls


def main(argv: list[str] | None = None) -> None:
    """Command line entry: write a synthetic dataset (see the module docstring)."""
    parser = argparse.ArgumentParser(description="Write procedural synthetic 4D scenes in the fourd scene format.")
    parser.add_argument("--out", required=True, help="output directory (any fsspec URL)")
    parser.add_argument("--num-scenes", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-views", type=int, default=8)
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--kinds", default="dynamic", help="comma-separated kinds to cycle: dynamic,static")
    parser.add_argument("--arc-degrees", type=float, default=120.0)
    parser.add_argument("--rgb-format", choices=("png", "jpg", "mp4"), default="png")
    args = parser.parse_args(argv)
    urls = write_synthetic_dataset(
        args.out, args.num_scenes, seed=args.seed, kinds=tuple(args.kinds.split(",")), rgb_format=args.rgb_format,
        num_views=args.num_views, num_frames=args.num_frames, height=args.height, width=args.width,
        arc_degrees=args.arc_degrees,
    )
    print(f"wrote {len(urls)} scenes to {args.out}")


if __name__ == "__main__":
    main()
