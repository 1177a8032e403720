"""Fill a training config's latent cache (``vae.latent_cache``) for sample indices [start, stop):

    python launch/warm_latent_cache.py --config-name train_dit_base +warm.start=0 +warm.stop=500

Several processes on disjoint ranges fill it in parallel; the training run then reads the clips
without rendering or encoding them (video4d.train_task.warm_latent_cache).
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../configs", config_name="train_video4d", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Encode the clips of ``warm.start .. warm.stop - 1`` into ``vae.latent_cache``."""
    from video4d.train_task import warm_latent_cache

    print(f"encoded {warm_latent_cache(cfg, int(cfg.warm.start), int(cfg.warm.stop))} clips into {cfg.vae.latent_cache}")


if __name__ == "__main__":
    from fourd.train.hydra_app import prepare_launch

    prepare_launch()  # the run stamp the config's hydra.run.dir names
    main()
