"""Novel views with test-time cameras on held-out scenes of the chain's procedural family.

``python -m eval.nvs_procedural --weights W [--scenes 8 --frames 2 --size S]`` (or ``--size S`` without
``--weights``: the baselines and ceilings alone, no model): for each held-out seed
(:func:`eval.protocols.suites.held_out_seeds`, >= 1_000_000), ``procedural_scene(seed, 2V - 1, T, S, S,
"dynamic", 90)`` rendered at the reconstructor's ``img_size`` (default; as ``recon_data=procedural``
trains), the even cameras ``0, 2, ..`` are the inputs and the odd (halfway) ones the targets, the
layout of :mod:`eval.protocols.chain` on the ground-truth grid. Scoring is
:func:`eval.protocols.suites.nvs_tables`: the model with test-time cameras, with oracle cameras, and
the NVS baselines (copy a neighbouring input, mean of the two neighbouring inputs, mean of all), and
in the oracle-cameras table the ground-truth-geometry ceilings (one Gaussian per input pixel at its
true depth; :func:`eval.protocols.recon.render_ground_truth_geometry`). Prints one markdown table per
board.
"""
from __future__ import annotations

import argparse
import json
import types
from typing import Optional

import torch
from omegaconf import OmegaConf

__all__ = ["procedural_nvs", "main"]


@torch.no_grad()
def procedural_nvs(model: Optional[torch.nn.Module], size: int, num_scenes: int = 8, frames: int = 2, views: int = 3,
                   arc_degrees: float = 90.0, seed: int = 0) -> dict:
    """Scoreboards ``{name: Scoreboard}`` of :func:`eval.protocols.suites.nvs_tables` for ``model`` (None:
    no model rows) on ``num_scenes`` held-out procedural scenes (module docstring) of ``views`` input views."""
    from eval.protocols import datasets
    from eval.protocols.chain import chain_views
    from eval.protocols.suites import held_out_seeds, nvs_tables
    from fourd.data.procedural import procedural_scene

    cfg = OmegaConf.create({"render": {"background": [0.0, 0.0, 0.0], "backend": "auto"},
                            "metrics": {"lpips_weights": None, "lpips_net": "vgg"}})
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    inputs, targets = chain_views(views)

    def clips():
        for s in held_out_seeds(OmegaConf.create({"num_scenes": num_scenes, "seed": seed})):
            scene = procedural_scene(s, 2 * views - 1, frames, size, size, "dynamic", arc_degrees=arc_degrees)
            yield datasets.Clip(scene.name, scene.frames, scene.extrinsics, scene.intrinsics), inputs, targets, scene.depth

    return nvs_tables(cfg, types.SimpleNamespace(recon=None if model is None else model.eval(), device=device), clips())


def main(argv: Optional[list[str]] = None) -> None:
    """Command line entry (module docstring)."""
    from fourd.weights import read_metadata
    from recon.model import load_reconstructor

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", default=None, help="exported reconstructor (safetensors with recon_config metadata); "
                        "without it, the baselines and ceilings alone at --size")
    parser.add_argument("--scenes", type=int, default=8, help="held-out scenes")
    parser.add_argument("--frames", type=int, default=2, help="timesteps T per scene")
    parser.add_argument("--size", type=int, default=None, help="pixels (default: the model's img_size)")
    args = parser.parse_args(argv)
    if args.weights is None and args.size is None:
        parser.error("without --weights give --size (the pixels of the scenes to score the baselines and ceilings on)")
    model = None if args.weights is None else load_reconstructor(json.loads(read_metadata(args.weights)["recon_config"]), weights=args.weights)
    size = args.size or model.cfg.img_size
    from eval.tables import markdown_table

    for name, board in procedural_nvs(model, size, args.scenes, args.frames).items():
        print(f"\n{name}: {args.scenes} held-out procedural scenes, {size} x {size}, T = {args.frames}\n")
        print(markdown_table(board.rows()))


if __name__ == "__main__":
    main()
