"""4D inference in one command: a video and a prompt in; a multi-view grid and per-timestep Gaussians out.

    python launch/infer.py                                       # the bundled example, shipped tiny models, CPU
    python launch/infer.py input.video=clip.mp4 prompt="a dog runs" dit.preset=wan2.1-t2v-14b dit.weights=... \
        vae.config=wan2.1-vae vae.weights=... text_encoder=umt5-xxl text_encoder.weights=... text_encoder.tokenizer=... \
        reconstructor.config=vggt-1b-4d reconstructor.weights=... views=8 frames=49 height=480 width=720 device=cuda
    python launch/infer.py input.freeze_time=views_t0/           # with freeze-time images (mode both)
    python launch/infer.py stages=generate                       # grid only; later: stages=reconstruct input.video=<run>/<name>/scene
    torchrun --nproc_per_node 8 launch/infer.py input.list=videos.txt   # batch, inputs sharded over ranks
    torchrun --nproc_per_node 8 launch/infer.py ... sequence_parallel=8     # one grid sampled by 8 ranks (Ulysses)

Config: configs/infer.yaml; files written: infer4d/job.py. Exit status 1 when something
failed (one line per failure; a batch skips failing inputs and prints a table at the end).
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fourd.preflight import one_line_errors
from fourd.train.hydra_app import prepare_launch

log = logging.getLogger("infer")


@hydra.main(config_path="../configs", config_name="infer", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run every input; exit 1 with one line per problem when something failed."""
    from infer4d.job import run_inference

    out_root = cfg.output.dir or HydraConfig.get().runtime.output_dir
    with one_line_errors("infer", catch=(Exception,)):  # bad config, input or weights: one clear line, no traceback
        failed = run_inference(cfg, out_root)
    if failed:
        print(f"infer: error: {failed} input(s) failed (see the lines above); outputs of the others are in {out_root}", file=sys.stderr)
        sys.exit(1)
    print(f"infer: outputs in {out_root}")


if __name__ == "__main__":
    prepare_launch()
    main()
