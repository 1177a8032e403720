"""Captioned procedural scenes drawn on the fly from an unbounded seed range.

Every seed gives one scene: 1-3 spheres or cubes in named colours (``PALETTE``), each with one
motion (rests, slides, bounces, spins), on a checkered ground of a named colour, seen by a camera
that stays fixed, orbits left / right or moves in / out. The caption is generated from these
parameters (deterministic per seed), e.g. ``"a red sphere bounces and a blue cube spins on a gray
ground . the camera orbits left"``. Rendering reuses the ray caster of :mod:`fourd.data.synthetic`.

Seeds: training seeds lie in ``[0, HELD_OUT_SEED_START)``, held-out seeds are
``>= HELD_OUT_SEED_START`` (:func:`scene_seed`; the split is an argument, the rule this one constant).

Sample kinds served by :class:`ProceduralSource` (``views`` decides):

- ``views > 1``, dynamic: a 4D grid, V fixed cameras on an arc, objects moving over F frames;
- ``views > 1``, static (a ``static_fraction`` of seeds), built as the paper builds static samples:
  the frames of a camera moving through a static scene become the V views, each duplicated over the
  F frames (``frames[v, t] == frames[v, 0]``), and the sample drops the freeze-time conditioning;
- ``views == 1``: single-view clips (kind ``"monocular"``) with a fixed or a moving camera
  (``moving_camera_fraction``), for base video model pretraining.

CLI: ``python -m fourd.data.procedural --out DIR --num-scenes N [--split held_out --views V --frames F
--kind static ...]`` writes scenes in the on-disk format (with captions); ``--benchmark`` prints
rendering times.
"""
from __future__ import annotations

import argparse
import functools
import math
import posixpath
import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from fourd.data.format import Scene
from fourd.data.homography import pseudo_views
from fourd.data.scene_io import write_scene
from fourd.data.synthetic import _Backdrop, _Objects, look_at, render_frames

__all__ = [
    "HELD_OUT_SEED_START",
    "PALETTE",
    "GROUND_COLORS",
    "MOTIONS",
    "CAMERA_MOTIONS",
    "SPLITS",
    "ObjectSpec",
    "SceneSpec",
    "scene_seed",
    "scene_spec",
    "caption",
    "procedural_scene",
    "ProceduralSource",
    "benchmark",
    "main",
]

HELD_OUT_SEED_START = 1_000_000  # training seeds are [0, 1_000_000); held-out seeds are >= 1_000_000
SPLITS = ("train", "held_out")

# Object colours: name -> linear RGB in [0, 1] (the checker's second colour is a darker shade).
PALETTE = {
    "red": (0.85, 0.12, 0.10),
    "orange": (0.95, 0.50, 0.08),
    "yellow": (0.92, 0.85, 0.12),
    "green": (0.15, 0.68, 0.20),
    "cyan": (0.10, 0.75, 0.80),
    "blue": (0.12, 0.25, 0.88),
    "purple": (0.55, 0.18, 0.78),
    "pink": (0.95, 0.45, 0.70),
    "white": (0.93, 0.93, 0.93),
}
GROUND_COLORS = {
    "gray": (0.55, 0.55, 0.55),
    "brown": (0.50, 0.33, 0.18),
    "green": (0.30, 0.55, 0.25),
    "blue": (0.25, 0.35, 0.65),
}
MOTIONS = ("rests", "slides", "bounces", "spins")
CAMERA_MOTIONS = ("fixed", "orbits left", "orbits right", "moves in", "moves out")
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


@dataclass(frozen=True)
class ObjectSpec:
    """One object: ``shape`` (sphere | cube), ``color`` (a :data:`PALETTE` name), ``motion`` (a :data:`MOTIONS` entry)."""

    shape: str
    color: str
    motion: str


@dataclass(frozen=True)
class SceneSpec:
    """What a seed's scene shows: objects, ground colour name and camera motion (:data:`CAMERA_MOTIONS`)."""

    seed: int
    objects: tuple[ObjectSpec, ...]
    ground: str
    camera: str


def scene_seed(index: int, split: str = "train", seed: int = 0, num_scenes: Optional[int] = None) -> int:
    """Scene seed of sample ``index`` of ``split``.

    ``train``: ``(seed + i) mod HELD_OUT_SEED_START``; ``held_out``: ``HELD_OUT_SEED_START + seed + i``,
    with ``i = index mod num_scenes`` when ``num_scenes`` is given (a finite scene set), else ``index``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if index < 0 or seed < 0:
        raise ValueError(f"scene_seed needs index >= 0 and seed >= 0, got index={index}, seed={seed}")
    i = index % num_scenes if num_scenes else index
    if split == "train":
        return (seed + i) % HELD_OUT_SEED_START
    return HELD_OUT_SEED_START + seed + i


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def scene_spec(seed: int, kind: str = "dynamic", moving_camera_fraction: float = 0.5) -> SceneSpec:
    """The scene parameters of ``seed`` that the caption names (deterministic per seed).

    ``kind="static"``: every object rests; the camera orbits (it is the trajectory that becomes the
    views). ``kind="dynamic"``: objects draw their motions, the cameras are fixed. ``"monocular"``:
    objects move and the camera moves with probability ``moving_camera_fraction``.
    """
    if kind not in ("dynamic", "static", "monocular"):
        raise ValueError(f"kind must be 'dynamic', 'static' or 'monocular', got {kind!r}")
    rng = _rng(seed, 0)
    count = int(rng.integers(1, 4))
    colors = rng.choice(list(PALETTE), size=count, replace=False)
    shapes = rng.choice(["sphere", "cube"], size=count)
    motions = rng.choice(MOTIONS, size=count)
    ground = str(rng.choice(list(GROUND_COLORS)))
    moving = rng.random() < moving_camera_fraction
    camera_move = str(rng.choice(CAMERA_MOTIONS[1:]))
    if kind == "static":
        motions = ["rests"] * count
        camera = camera_move if camera_move.startswith("orbits") else ("orbits left" if camera_move == "moves in" else "orbits right")
    elif kind == "dynamic":
        camera = "fixed"
    else:
        camera = camera_move if moving else "fixed"
    objects = tuple(ObjectSpec(str(s), str(c), str(m)) for s, c, m in zip(shapes, colors, motions))
    return SceneSpec(seed=seed, objects=objects, ground=ground, camera=camera)


def caption(spec: SceneSpec, num_views: int = 1) -> str:
    """Caption of ``spec``: objects with colour and motion, the ground colour, then the camera.

    ``num_views > 1`` with fixed cameras says ``"<n> fixed cameras"``; one view says ``"the camera is
    fixed"`` or ``"the camera <motion>"``.
    """
    parts = [f"{'an' if o.color[0] in 'aeiou' else 'a'} {o.color} {o.shape} {o.motion}" for o in spec.objects]
    things = parts[0] if len(parts) == 1 else " , ".join(parts[:-1]) + " and " + parts[-1]
    if spec.camera == "fixed":
        camera = f"{_NUMBER_WORDS.get(num_views, str(num_views))} fixed cameras" if num_views > 1 else "the camera is fixed"
    else:
        camera = f"the camera {spec.camera}"
    return f"{things} on a {spec.ground} ground . {camera}"


def _objects(spec: SceneSpec, rng: np.random.Generator) -> _Objects:
    """Renderer parameters of ``spec``'s objects (positions, sizes, motion amplitudes, textures)."""
    K = len(spec.objects)
    is_box = np.array([o.shape == "cube" for o in spec.objects])
    half = rng.uniform(0.3, 0.5, (K, 1)).repeat(3, 1)  # cubes: equal half extents
    radius = rng.uniform(0.4, 0.65, K)
    size = np.where(is_box[:, None], half, radius[:, None].repeat(3, 1))
    ang = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(K) / K + rng.uniform(-0.4, 0.4, K)
    dist = rng.uniform(0.0, 0.4, K) if K == 1 else rng.uniform(0.9, 1.5, K)
    rest = np.stack([dist * np.cos(ang), dist * np.sin(ang), np.where(is_box, half[:, 0], radius) + 0.01], -1)
    amp, omega = np.zeros((K, 3)), np.zeros(K)
    for k, o in enumerate(spec.objects):
        if o.motion == "slides":
            direction = rng.uniform(0, 2 * np.pi)
            amp[k, :2] = rng.uniform(0.6, 1.0) * np.array([np.cos(direction), np.sin(direction)])
        elif o.motion == "bounces":
            amp[k, 2] = rng.uniform(0.8, 1.3)
        elif o.motion == "spins":
            omega[k] = rng.uniform(2.5, 4.0) * rng.choice([-1.0, 1.0])
    base = np.array([PALETTE[o.color] for o in spec.objects])
    colors = np.stack([base, base * rng.uniform(0.45, 0.65, (K, 1))], 1)
    axis = np.where(is_box[:, None], np.array([[0.0, 0.0, 1.0]]), rng.normal(size=(K, 3)))
    f32 = functools.partial(torch.tensor, dtype=torch.float32)
    return _Objects(
        is_box=torch.from_numpy(is_box), size=f32(size), rest=f32(rest), amp=f32(amp),
        freq=f32(np.full((K, 3), rng.uniform(0.35, 0.5))), phase=f32(np.tile(rng.uniform(-0.5, 0.5, (K, 1)), 3) - [0, 0, np.pi / 2]),
        axis=torch.nn.functional.normalize(f32(axis), dim=-1), omega=f32(omega),
        colors=f32(colors), checker=f32(rng.uniform(2.5, 4.0, K)),
        waves=f32(rng.normal(0.0, 5.0, (K, 3, 3))), wave_phase=f32(rng.uniform(0, 2 * np.pi, (K, 3))),
    )


def _camera_path(spec: SceneSpec, rng: np.random.Generator, count: int, height: int, width: int, arc_degrees: float = 0.0):
    """Extrinsics [count, 3, 4] and intrinsics [count, 3, 3]: ``count`` positions along the camera
    motion (fixed: ``count`` cameras spread over ``arc_degrees``, one place when 0; orbit: a 30-60
    degree sweep; in/out: the distance shrinks / grows by 35 %)."""
    radius = rng.uniform(4.2, 5.2)
    elevation = np.deg2rad(rng.uniform(15.0, 30.0))
    start = rng.uniform(0, 2 * np.pi)
    sweep = np.deg2rad(rng.uniform(30.0, 60.0))
    s = np.linspace(0.0, 1.0, count)
    theta, dist = np.full(count, start), np.full(count, radius)
    if spec.camera == "fixed":
        theta = start + np.deg2rad(arc_degrees) * (s - 0.5)
    elif spec.camera.startswith("orbits"):
        theta = start + sweep * s * (1.0 if spec.camera == "orbits right" else -1.0)  # +theta moves to the camera's right
    else:
        dist = radius * (1.0 - 0.35 * s if spec.camera == "moves in" else 0.75 + 0.35 * s)
    theta, dist = torch.tensor(theta, dtype=torch.float32), torch.tensor(dist, dtype=torch.float32)
    eye = torch.stack([dist * math.cos(elevation) * torch.cos(theta), dist * math.cos(elevation) * torch.sin(theta),
                       dist * math.sin(elevation)], -1)
    target = torch.tensor([0.0, 0.0, 0.45]).expand_as(eye)
    focal = (width / 2) / math.tan(np.deg2rad(rng.uniform(45.0, 55.0)) / 2)
    K = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=torch.float32)
    return look_at(eye, target), K.expand(count, 3, 3).contiguous()


def procedural_scene(seed: int, num_views: int = 1, num_frames: int = 17, height: int = 64, width: int = 64,
                     kind: str = "monocular", moving_camera_fraction: float = 0.5, arc_degrees: float = 90.0,
                     fps: float = 8.0) -> Scene:
    """Render the scene of ``seed`` as a :class:`Scene` with its caption.

    ``kind``: ``"monocular"`` (needs ``num_views == 1``: one camera, fixed or moving over the
    frames), ``"dynamic"`` (V fixed cameras on an ``arc_degrees`` arc, objects move) or ``"static"``
    (the V views are V positions of the orbiting camera over the frozen scene, each duplicated over
    the ``num_frames`` frames). Frames [V, F, 3, H, W] in [0, 1], depth [V, F, H, W] (camera z,
    metres), masks [V, F, H, W] (object k has id k + 1), extrinsics [V, F, 3, 4], intrinsics
    [V, F, 3, 3] (pixels, centre at (W/2, H/2)).
    """
    if kind == "monocular" and num_views != 1:
        raise ValueError(f"kind 'monocular' renders one view, got num_views={num_views}; use kind 'dynamic' or 'static'")
    if min(num_views, num_frames, height, width) < 1:
        raise ValueError(f"procedural_scene needs positive sizes, got V={num_views} F={num_frames} H={height} W={width}")
    spec = scene_spec(seed, kind, moving_camera_fraction)
    rng = _rng(seed, 1)
    objects = _objects(spec, rng)
    backdrop = _Backdrop(
        ground=torch.tensor(np.array(GROUND_COLORS[spec.ground]) * np.array([[1.0], [rng.uniform(0.6, 0.8)]]), dtype=torch.float32),
        ground_cells=float(rng.uniform(0.8, 1.4)),
        sky=torch.tensor([[0.75, 0.85, 0.95], [0.35, 0.55, 0.9]], dtype=torch.float32) * float(rng.uniform(0.85, 1.0)),
        sky_waves=torch.tensor(rng.normal(0, 0.4, (3, 3)), dtype=torch.float32),
        sky_phase=torch.tensor(rng.uniform(0, 2 * np.pi, 3), dtype=torch.float32),
    )
    V, F = num_views, num_frames
    if kind == "static":
        E, K = _camera_path(spec, rng, V, height, width, arc_degrees)  # the trajectory becomes the views
        seconds = torch.zeros(V)
    elif kind == "dynamic":
        E, K = _camera_path(spec, rng, V, height, width, arc_degrees)
        E, K = E.repeat_interleave(F, 0), K.repeat_interleave(F, 0)  # [V * F, ...] view-major
        seconds = (torch.arange(V * F) % F).float() / fps
    else:
        E, K = _camera_path(spec, rng, F, height, width)
        seconds = torch.arange(F).float() / fps
    centers, rotations = objects.pose(seconds)  # [K, N, 3], [K, N, 3, 3]
    rgb, depth, which = render_frames(objects, backdrop, centers, rotations, E, K, height, width)
    n = E.shape[0]
    frames = rgb.reshape(n, height, width, 3).permute(0, 3, 1, 2)
    masks = (which - 1).clamp_min(0).to(torch.uint8).reshape(n, height, width)
    depth = depth.reshape(n, height, width)
    if kind == "static":  # [V, ...] -> [V, F, ...]: each trajectory frame held over time
        grid = [x[:, None].expand(-1, F, *x.shape[1:]).contiguous() for x in (frames, depth, masks, E, K)]
        centers = centers[:, :1].expand(-1, F, -1)
    else:
        grid = [x.reshape(V, F, *x.shape[1:]).contiguous() for x in (frames, depth, masks, E, K)]
        centers = centers[:, :F]
    frames, depth, masks, E, K = grid
    return Scene(name=f"procedural_{kind}_{seed:07d}", kind=kind, frames=frames, fps=fps, depth=depth, masks=masks,
                 extrinsics=E, intrinsics=K, object_centers=centers.contiguous(), object_radii=objects.radius,
                 caption=caption(spec, V))


class ProceduralSource:
    """Captioned procedural samples rendered on the fly; ``sample(index, num_frames) -> dict``.

    Sample ``index`` shows the scene of :func:`scene_seed` ``(index, split, seed, num_scenes)``
    (``num_scenes=None``: every index a new scene). ``views == 1``: single-view clips with a fixed
    or a moving camera; ``views > 1``: 4D grids, static (paper-style, see the module docstring) for
    a ``static_fraction`` of seeds, ``homography`` (the paper's 2D-transformed videos: the seed's
    monocular clip warped into V pseudo-views by smooth random homographies,
    :func:`fourd.data.homography.pseudo_views`; view 0 is the clip, cameras and depth are NaN) for a
    ``homography_fraction``, else dynamic. Returns ``frames [V, F, 3, H, W]`` in [0, 1],
    ``depth [V, F, H, W]`` (metres), ``extrinsics [V, F, 3, 4]``, ``intrinsics [V, F, 3, 3]``,
    ``kind``, ``scene``, ``caption``, ``seed``, ``drop_freeze_time_frame_cond`` (True for static
    samples). The ``cache`` most recent renders are kept.
    """

    def __init__(self, views: int = 1, height: int = 64, width: int = 64, split: str = "train", seed: int = 0,
                 num_scenes: Optional[int] = None, static_fraction: float = 0.25, moving_camera_fraction: float = 0.5,
                 arc_degrees: float = 90.0, fps: float = 8.0, cache: int = 16, homography_fraction: float = 0.0):
        if views < 1:
            raise ValueError(f"ProceduralSource needs views >= 1, got {views}")
        if not 0.0 <= static_fraction <= 1.0 or not 0.0 <= moving_camera_fraction <= 1.0:
            raise ValueError(f"static_fraction and moving_camera_fraction must lie in [0, 1], got {static_fraction}, {moving_camera_fraction}")
        if homography_fraction < 0.0 or static_fraction + homography_fraction > 1.0:
            raise ValueError(f"homography_fraction must be >= 0 with static_fraction + homography_fraction <= 1, "
                             f"got {homography_fraction} (static_fraction {static_fraction})")
        if num_scenes is not None and num_scenes < 1:
            raise ValueError(f"num_scenes must be positive or None (unbounded), got {num_scenes}")
        scene_seed(0, split, seed)  # validates split and seed
        self.views, self.height, self.width, self.split, self.seed = views, height, width, split, seed
        self.num_scenes, self.static_fraction, self.moving_camera_fraction = num_scenes, static_fraction, moving_camera_fraction
        self.homography_fraction = homography_fraction
        self.arc_degrees, self.fps = arc_degrees, fps
        self._render = functools.lru_cache(maxsize=cache)(self._render_uncached)

    def kind_of(self, seed: int) -> str:
        """Sample kind of scene ``seed``: ``monocular`` (one view), else ``static``, ``homography`` or ``dynamic``."""
        if self.views == 1:
            return "monocular"
        r = _rng(seed, 2).random()
        return "static" if r < self.static_fraction else "homography" if r < self.static_fraction + self.homography_fraction else "dynamic"

    def caption_of(self, seed: int) -> str:
        """The caption :meth:`sample` gives scene ``seed`` without rendering it (a homography sample
        keeps its monocular clip's caption)."""
        kind = self.kind_of(seed)
        if kind == "homography":
            return caption(scene_spec(seed, "monocular", self.moving_camera_fraction), 1)
        return caption(scene_spec(seed, kind, self.moving_camera_fraction), self.views)

    def _render_uncached(self, seed: int, num_frames: int) -> dict[str, Any]:
        kind = self.kind_of(seed)
        if kind == "homography":
            s = procedural_scene(seed, 1, num_frames, self.height, self.width, "monocular", self.moving_camera_fraction, self.arc_degrees, self.fps)
            frames = pseudo_views(s.frames[0], self.views, _rng(seed, 3))  # [V, F, 3, H, W]
            nan = float("nan")
            return {"frames": frames, "depth": torch.full(frames[:, :, 0].shape, nan),
                    "extrinsics": torch.full((*frames.shape[:2], 3, 4), nan), "intrinsics": torch.full((*frames.shape[:2], 3, 3), nan),
                    "kind": kind, "scene": f"procedural_homography_{seed:07d}", "caption": s.caption, "seed": seed,
                    "drop_freeze_time_frame_cond": False}
        s = procedural_scene(seed, self.views, num_frames, self.height, self.width, kind, self.moving_camera_fraction, self.arc_degrees, self.fps)
        return {"frames": s.frames, "depth": s.depth, "extrinsics": s.extrinsics, "intrinsics": s.intrinsics, "kind": kind,
                "scene": s.name, "caption": s.caption, "seed": seed, "drop_freeze_time_frame_cond": kind == "static"}

    def sample(self, index: int, num_frames: int) -> dict[str, Any]:
        """Sample ``index`` with ``num_frames`` frames (see the class docstring)."""
        return self._render(scene_seed(index, self.split, self.seed, self.num_scenes), num_frames)


def benchmark(repeats: int = 3) -> list[tuple[str, float]]:
    """Median seconds per rendered sample (:meth:`ProceduralSource.sample`, no cache) for the
    default sizes, on the current torch threads. Returns rows (description, seconds) and prints them."""
    rows = []
    for views, frames, size, static in ((1, 17, 64, 0.0), (1, 5, 64, 0.0), (4, 9, 64, 0.0), (4, 9, 64, 1.0), (1, 17, 128, 0.0)):
        source = ProceduralSource(views, size, size, static_fraction=static, cache=1)
        times = []
        for i in range(repeats):
            start = time.perf_counter()
            source.sample(i, frames)
            times.append(time.perf_counter() - start)
        kind = "monocular" if views == 1 else ("static" if static else "dynamic")
        rows.append((f"{kind} V={views} F={frames} {size}x{size}", float(np.median(times))))
    print(f"{'sample':>32} {'seconds':>8}")
    for name, seconds in rows:
        print(f"{name:>32} {seconds:>8.3f}")
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    """Command line entry: write captioned procedural scenes (see the module docstring), or ``--benchmark``."""
    parser = argparse.ArgumentParser(description="Write captioned procedural scenes in the fourd scene format.")
    parser.add_argument("--benchmark", action="store_true", help="print rendering times and exit")
    parser.add_argument("--out", help="output directory (any fsspec URL)")
    parser.add_argument("--num-scenes", type=int, default=1)
    parser.add_argument("--split", choices=SPLITS, default="train")
    parser.add_argument("--seed", type=int, default=0, help="offset of the split's seeds")
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=64, help="height and width in pixels")
    parser.add_argument("--kind", choices=("monocular", "dynamic", "static"), default="monocular")
    args = parser.parse_args(argv)
    if args.benchmark:
        benchmark()
        return
    if not args.out:
        parser.error("--out is required (or pass --benchmark)")
    for i in range(args.num_scenes):
        scene = procedural_scene(scene_seed(i, args.split, args.seed), args.views, args.frames, args.size, args.size, args.kind)
        write_scene(scene, posixpath.join(args.out.rstrip("/"), scene.name))
    print(f"wrote {args.num_scenes} scenes to {args.out}")


if __name__ == "__main__":
    main()
