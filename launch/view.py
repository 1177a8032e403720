"""Look at an inference or export output directory in the browser.

Interactive (per-timestep Gaussians with a time slider and play/pause, orbit camera, camera frusta
with their frames, the V x T grid), served on this machine only unless ``--host`` says otherwise::

    python launch/view.py outputs/infer/my_scene                 # open http://127.0.0.1:8080
    python launch/view.py outputs/infer/my_scene --port 8090
    ssh -L 8080:127.0.0.1:8080 gpu-box                           # from a laptop, for a remote box

Static (no Python needed to look at it; a 3D player of the splats, the grid, mp4s and summary.json
tables)::

    python launch/view.py outputs/infer/my_scene --static        # writes .../index.html and splats.html

Stops cleanly on Ctrl-C / SIGTERM. Details: docs/viewer.md.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="output directory of launch/infer.py or train_recon.py mode=export (path or fsspec URL)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only; 0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; the next free one if taken)")
    parser.add_argument("--static", action="store_true", help="write out_dir/index.html (+ splats.html) instead of serving")
    args = parser.parse_args(argv)
    try:
        from fourd.viewer.static_page import view

        page = view(args.out_dir, host=args.host, port=args.port, static=args.static)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
    if page is not None:
        print(f"wrote {page}")


if __name__ == "__main__":
    main()
