"""Write the bundled inference example: a held-out procedural 4D scene (fourd.data.procedural).

    python examples/make_example.py --overwrite          # rewrite the bundled examples/heldout_scene
    python examples/make_example.py --out runs/my_example --seed 1005001

The shipped tiny models never saw this scene: training draws seeds below 1_000_000 and the benchmark
uses held-out seeds from 1_000_000 up (``fourd.data.procedural.scene_seed``); 1_005_000 is the first
seed of a range nothing else reads, and it has moving objects. Files (all lossless, so the input is
exactly the ground truth the quality-floor test compares against):

- ``video/frame_{f:03d}.png``: view 0, the fixed-view input video (``frames`` frames);
- ``freeze_time/view_{v:02d}.png``: all ``views`` cameras at the first frame, view 0 first;
- ``caption.txt``: the scene's generated caption;
- ``scene.json``: seed and sizes, so the full ground-truth grid can be rendered again
  (``procedural_scene(seed, views, frames, height, width, "dynamic")``).
"""
from __future__ import annotations

import argparse
import json
import os

import imageio.v3 as iio
import torch

from fourd.data.procedural import procedural_scene


def _png(path: str, image: torch.Tensor) -> None:
    """Write ``image [3, H, W]`` in [0, 1] as an 8-bit PNG."""
    iio.imwrite(path, (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and write the example folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "heldout_scene"))
    parser.add_argument("--seed", type=int, default=1_005_000)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing example folder (the bundled one included)")
    args = parser.parse_args(argv)
    if args.seed < 1_000_000:
        raise ValueError(f"--seed {args.seed} is a training seed; the example must be held out (>= 1000000)")
    if os.path.exists(os.path.join(args.out, "scene.json")) and not args.overwrite:
        raise SystemExit(f"error: {args.out} already holds an example; add --overwrite to replace it (or give another --out)")
    scene = procedural_scene(args.seed, args.views, args.frames, args.height, args.width, "dynamic")
    for sub in ("video", "freeze_time"):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    for f in range(args.frames):
        _png(os.path.join(args.out, "video", f"frame_{f:03d}.png"), scene.frames[0, f])
    for v in range(args.views):
        _png(os.path.join(args.out, "freeze_time", f"view_{v:02d}.png"), scene.frames[v, 0])
    with open(os.path.join(args.out, "caption.txt"), "w") as f:
        f.write(scene.caption + "\n")
    meta = {"seed": args.seed, "kind": "dynamic", "views": args.views, "frames": args.frames,
            "height": args.height, "width": args.width, "caption": scene.caption}
    with open(os.path.join(args.out, "scene.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out} ({scene.name}: {args.views} views, {args.frames} frames, {args.height}x{args.width})")


if __name__ == "__main__":
    main()
