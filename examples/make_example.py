"""Write the bundled inference example: a held-out procedural 4D scene (fourd.data.generate_scene).

    python examples/make_example.py [--out examples/synthetic_dynamic] [--seed 990001]

Files: ``video.mp4`` (view 0, the fixed-view input video, ``frames`` frames), ``freeze_time/view_{v}.png``
(all ``views`` cameras at the first frame, view 0 first) and ``caption.txt``. The seed is far from the
seeds the synthetic training data uses (``recon_data.seed`` 0 + up to ``num_scenes``; held-out
evaluation from ``eval_seed`` 100000), so the scene is held out. Sizes are not multiples of the grid's so that inference's resize + crop is used.
"""
from __future__ import annotations

import argparse
import os

import imageio.v3 as iio

from fourd.data import generate_scene
from recon.export import save_video

CAPTION = "a few colourful objects move and spin over a checkered ground under a soft sky"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and write the example folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "synthetic_dynamic"))
    parser.add_argument("--seed", type=int, default=990001)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--height", type=int, default=72)
    parser.add_argument("--width", type=int, default=96)
    args = parser.parse_args(argv)
    scene = generate_scene(args.seed, args.views, args.frames, args.height, args.width, "dynamic")
    os.makedirs(os.path.join(args.out, "freeze_time"), exist_ok=True)
    save_video(os.path.join(args.out, "video.mp4"), scene.frames[0].permute(0, 2, 3, 1), fps=scene.fps)
    for v in range(args.views):
        image = (scene.frames[v, 0].permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()
        iio.imwrite(os.path.join(args.out, "freeze_time", f"view_{v:02d}.png"), image)
    with open(os.path.join(args.out, "caption.txt"), "w") as f:
        f.write(CAPTION + "\n")
    print(f"wrote {args.out} ({scene.name}: {args.views} views, {args.frames} frames, {args.height}x{args.width})")


if __name__ == "__main__":
    main()
