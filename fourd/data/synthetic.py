"""Procedural synthetic 4D scenes rendered by vectorised analytic ray casting (no external renderer).

A scene is a few textured spheres and boxes moving on smooth (sinusoidal) paths and spinning,
standing on a checkered ground plane (z = 0, world z is up) under a textured sky dome, seen by a
ring or arc of calibrated pinhole cameras looking at the scene centre. Rendering gives RGB, camera
z-depth (metres), instance masks (object ``k`` has id ``k + 1``, 0 = ground/sky) and OpenCV
cameras. Deterministic by seed. Kinds: ``dynamic`` (objects move, cameras fixed per view) and
``static`` (objects frozen, each view's camera sweeps along the arc over time: a camera trajectory
over a static scene).

CLI: ``python -m fourd.data.synthetic --out DIR --num-scenes N [--num-views V --num-frames T ...]``;
``--benchmark`` prints generation times.
"""
from __future__ import annotations

import argparse
import math
import posixpath
import time
from dataclasses import dataclass

import numpy as np
import torch

from fourd.data.format import Scene
from fourd.data.scene_io import write_scene

__all__ = ["generate_scene", "render_frames", "write_scene", "write_synthetic_dataset", "look_at", "benchmark", "main"]

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
    return _Objects(
        is_box=torch.from_numpy(is_box),
        size=_f32(size),
        rest=_f32(rest),
        amp=_f32(amp),
        freq=_f32(rng.uniform(0.1, 0.35, (K, 3))),
        phase=_f32(rng.uniform(0, 2 * np.pi, (K, 3))),
        axis=torch.nn.functional.normalize(_f32(axis), dim=-1),
        omega=_f32(rng.uniform(0.5, 2.0, K) * rng.choice([-1.0, 1.0], K)),
        colors=_f32(colors),
        checker=_f32(rng.uniform(2.0, 6.0, K)),
        waves=_f32(rng.normal(0.0, 6.0, (K, 3, 3))),
        wave_phase=_f32(rng.uniform(0, 2 * np.pi, (K, 3))),
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


@dataclass
class _Backdrop:
    """Ground plane and sky dome textures."""

    ground: torch.Tensor  # [2, 3] checker colours
    ground_cells: float  # checker cells per metre
    sky: torch.Tensor  # [2, 3] horizon and zenith colours
    sky_waves: torch.Tensor  # [3, 3] noise wave vectors
    sky_phase: torch.Tensor  # [3]


def _render(objects: _Objects, backdrop: _Backdrop, centers, rotations, extrinsics, intrinsics, height: int, width: int):
    """Ray-cast F frames: ``centers`` [K, F, 3] and ``rotations`` [K, F, 3, 3] object poses,
    ``extrinsics`` [F, 3, 4], ``intrinsics`` [F, 3, 3]. Returns RGB [F, P, 3] in [0, 1], camera
    z-depth [F, P] (metres) and the surface id [F, P] (0 sky, 1 ground, k + 2 object k), P = H * W."""
    # Rays through pixel centres; directions have camera z = 1, so the ray parameter is the z-depth.
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)  # [P, 3]
    R, t = extrinsics[..., :3], extrinsics[..., 3]
    dirs = pix @ torch.linalg.inv(intrinsics).transpose(-1, -2) @ R  # world directions R^T K^-1 p: [F, P, 3]
    origin = -(R.transpose(-1, -2) @ t[..., None]).squeeze(-1)  # [F, 3]

    s_obj = _object_distances(objects, centers, rotations, origin, dirs)
    s_ground = torch.where(dirs[..., 2] < -1e-6, -origin[:, None, 2] / dirs[..., 2].clamp_max(-1e-6), torch.inf)
    a = (dirs * dirs).sum(-1)
    b = 2 * (dirs * origin[:, None]).sum(-1)
    c = (origin * origin).sum(-1)[:, None] - _SKY_RADIUS**2
    s_sky = (-b + (b * b - 4 * a * c).sqrt()) / (2 * a)
    depth, which = torch.cat([s_sky[None], s_ground[None], s_obj], 0).min(0)
    points = origin[:, None] + depth[..., None] * dirs

    # Shade the visible surface only.
    light = torch.nn.functional.normalize(_LIGHT, dim=0)
    index = (which - 2).clamp_min(0)
    local, normal = _surface(objects, index, centers, rotations, points)
    cell = _checker(local, objects.checker[index])
    albedo = torch.lerp(objects.colors[index, 0], objects.colors[index, 1], cell[..., None])
    noise = _noise(local, objects.waves[index], objects.wave_phase[index])
    lambert = 0.35 + 0.65 * (normal @ light).clamp_min(0)
    obj_rgb = albedo * ((0.75 + 0.25 * noise) * lambert)[..., None]
    g_cell = _checker(points[..., :2], torch.full(points.shape[:-1], backdrop.ground_cells))
    ground_rgb = torch.lerp(backdrop.ground[0], backdrop.ground[1], g_cell[..., None]) * (0.35 + 0.65 * light[2])
    elev = (points[..., 2] / _SKY_RADIUS).clamp(0, 1)
    sky_noise = _noise(points, backdrop.sky_waves, backdrop.sky_phase)
    sky_rgb = torch.lerp(backdrop.sky[0], backdrop.sky[1], elev[..., None]) * (0.8 + 0.2 * sky_noise[..., None])
    which3 = which[..., None]
    rgb = torch.where(which3 == 0, sky_rgb, torch.where(which3 == 1, ground_rgb, obj_rgb))
    return rgb.clamp(0, 1), depth, which


def render_frames(objects: _Objects, backdrop: _Backdrop, centers: torch.Tensor, rotations: torch.Tensor,
                  extrinsics: torch.Tensor, intrinsics: torch.Tensor, height: int, width: int, max_rays: int = 2**20):
    """Ray-cast N images in chunks of about ``max_rays`` rays (bounds memory).

    ``centers`` [K, N, 3] and ``rotations`` [K, N, 3, 3]: object poses of each image; ``extrinsics``
    [N, 3, 4] (camera-from-world), ``intrinsics`` [N, 3, 3] (pixels). Returns RGB [N, P, 3] in
    [0, 1], camera z-depth [N, P] (metres) and the surface id [N, P] (0 sky, 1 ground, k + 2 object
    k), P = height * width.
    """
    N = extrinsics.shape[0]
    chunk = max(1, max_rays // (height * width))
    parts = [
        _render(objects, backdrop, centers[:, i : i + chunk], rotations[:, i : i + chunk],
                extrinsics[i : i + chunk], intrinsics[i : i + chunk], height, width)
        for i in range(0, N, chunk)
    ]
    rgb, depth, which = (torch.cat(p) for p in zip(*parts))
    return rgb, depth, which


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
    max_rays: int = 2**20,
) -> Scene:
    """Render a procedural scene, deterministic in ``seed``.

    ``num_objects`` defaults to 2-4 (seeded); ``arc_degrees`` is the arc the views span (>= 360: a
    full ring); for ``kind="static"`` each camera additionally sweeps ``static_sweep_degrees`` over
    the frames; frames are ray-cast in chunks of about ``max_rays`` rays (bounds memory). Returns a
    :class:`Scene`: frames [V, T, 3, H, W] in [0, 1], depth [V, T, H, W] (camera z, metres), masks
    uint8 [V, T, H, W], extrinsics [V, T, 3, 4] (world frame), intrinsics [V, T, 3, 3] (pixels,
    centre at ``(W/2, H/2)``), object_centers [K, T, 3], object_radii [K].
    """
    if kind not in ("dynamic", "static"):
        raise ValueError(f"generate_scene: kind must be 'dynamic' or 'static', got {kind!r}")
    rng = np.random.default_rng(seed)
    V, T, H, W = num_views, num_frames, height, width
    objects = _sample_objects(rng, int(num_objects or rng.integers(2, 5)))
    extrinsics, intrinsics = _sample_cameras(rng, V, T, H, W, kind, arc_degrees, static_sweep_degrees)
    backdrop = _Backdrop(
        ground=_f32(rng.uniform(0.2, 0.9, (2, 3))),
        ground_cells=float(rng.uniform(0.6, 1.5)),
        sky=_f32(rng.uniform(0.3, 1.0, (2, 3))),
        sky_waves=_f32(rng.normal(0, 0.4, (3, 3))),
        sky_phase=_f32(rng.uniform(0, 2 * np.pi, 3)),
    )
    seconds = torch.arange(T, dtype=torch.float32) / fps
    if kind == "static":
        seconds = torch.zeros_like(seconds)
    centers, rotations = objects.pose(seconds)  # [K, T, 3], [K, T, 3, 3]

    frame_time = torch.arange(V * T) % T
    rgb, depth, which = render_frames(objects, backdrop, centers[:, frame_time], rotations[:, frame_time],
                                      extrinsics.reshape(V * T, 3, 4), intrinsics.reshape(V * T, 3, 3), H, W, max_rays)
    return Scene(
        name=f"synthetic_{kind}_{seed:06d}",
        kind=kind,
        frames=rgb.reshape(V, T, H, W, 3).permute(0, 1, 4, 2, 3).contiguous(),
        fps=fps,
        depth=depth.reshape(V, T, H, W).contiguous(),
        masks=(which - 1).clamp_min(0).to(torch.uint8).reshape(V, T, H, W).contiguous(),
        extrinsics=extrinsics.contiguous(),
        intrinsics=intrinsics,
        object_centers=centers,
        object_radii=objects.radius,
    )


def write_synthetic_dataset(out: str, num_scenes: int, seed: int = 0, kinds: tuple = ("dynamic",),
                            rgb_format: str = "png", **scene_kwargs) -> list[str]:
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


def benchmark(repeats: int = 3) -> list[tuple[str, int, float]]:
    """Median seconds per :func:`generate_scene` call for a few sizes, with 1 and with all torch threads.

    Returns rows (``"VxTxHxW"``, threads, seconds) and prints them as a table.
    """
    rows = []
    default_threads = torch.get_num_threads()
    for V, T, H, W in ((4, 9, 64, 64), (8, 17, 128, 128), (4, 9, 256, 256)):
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            times = []
            for seed in range(repeats):
                start = time.perf_counter()
                generate_scene(seed, num_views=V, num_frames=T, height=H, width=W)
                times.append(time.perf_counter() - start)
            rows.append((f"{V}x{T}x{H}x{W}", threads, float(np.median(times))))
    torch.set_num_threads(default_threads)
    print(f"{'scene VxTxHxW':>16} {'threads':>8} {'seconds':>9}")
    for name, threads, seconds in rows:
        print(f"{name:>16} {threads:>8d} {seconds:>9.3f}")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Command line entry: write a synthetic dataset (see the module docstring), or ``--benchmark``."""
    parser = argparse.ArgumentParser(description="Write procedural synthetic 4D scenes in the fourd scene format.")
    parser.add_argument("--benchmark", action="store_true", help="print generation times and exit")
    parser.add_argument("--out", help="output directory (any fsspec URL)")
    parser.add_argument("--num-scenes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-views", type=int, default=8)
    parser.add_argument("--num-frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--kinds", default="dynamic", help="comma-separated kinds to cycle: dynamic,static")
    parser.add_argument("--arc-degrees", type=float, default=120.0)
    parser.add_argument("--rgb-format", choices=("png", "jpg", "mp4"), default="png")
    args = parser.parse_args(argv)
    if args.benchmark:
        benchmark()
        return
    if not args.out:
        parser.error("--out is required (or pass --benchmark)")
    urls = write_synthetic_dataset(
        args.out, args.num_scenes, seed=args.seed, kinds=tuple(args.kinds.split(",")), rgb_format=args.rgb_format,
        num_views=args.num_views, num_frames=args.num_frames, height=args.height, width=args.width,
        arc_degrees=args.arc_degrees,
    )
    print(f"wrote {len(urls)} scenes to {args.out}")


if __name__ == "__main__":
    main()
