"""Train the Wan2.1-architecture VAE (tiny preset) from scratch on procedural clips, then evaluate it:

    python launch/train_vae.py                                      # the committed base VAE's recipe (CPU)
    python launch/train_vae.py publish_to=checkpoints/base/vae.safetensors publish_overwrite=true   # replace the shipped file
    python launch/train_vae.py mode=eval vae_weights=checkpoints/base/vae.safetensors
    torchrun --nproc_per_node 2 launch/train_vae.py launcher=deepspeed

The export (``<run dir>/export/model.safetensors``) loads with ``video4d.load_vae`` (config in its
``vae_config`` metadata, with measured latent statistics); ``<run dir>/eval`` holds the held-out
reconstruction PSNR against baselines (``eval.json``) and ``recon.png``. Re-running with the same
``RUN_DIR`` resumes. See docs/base_models.md.
"""
from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fourd.preflight import check_config, one_line_errors
from fourd.train.hydra_app import prepare_launch


@hydra.main(config_path="../configs", config_name="train_vae", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    """One Hydra job: train + evaluate (``mode=train``) or evaluate (``mode=eval``) the VAE."""
    from video4d.vae.train_task import train_and_evaluate

    with one_line_errors("train_vae"):
        check_config(cfg)  # unset keys and named files, before any model is built
        train_and_evaluate(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    prepare_launch()
    hydra_main()
