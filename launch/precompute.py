"""Pre-encode a training config's data (VAE latents + text contexts) into ``data.encoded``:

    torchrun --nproc_per_node 8 launch/precompute.py data=mixture data.sources.objects_4d.scenes=... data.encoded=/data/enc
    python launch/precompute.py --config-name train_dit_base

Pass the training run's own config and overrides: the latents are those the run draws (clip lengths of
``schedule.frames``, its buckets, sizes and VAE). Rerunning the same command after a crash resumes.
Then train with the same overrides. See docs/data_format.md, "Pre-encoding".
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../configs", config_name="train_video4d", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Encode ``cfg``'s data (:func:`video4d.precompute.precompute`)."""
    from video4d.precompute import precompute

    summary = precompute(cfg)
    print(f"precompute: {summary['encoded']} of {summary['scenes']} scenes encoded by this rank into {cfg.data.encoded}")


if __name__ == "__main__":
    from fourd.train.hydra_app import prepare_launch

    prepare_launch()  # the run stamp the config's hydra.run.dir names; drops the deepspeed launcher's --local_rank
    main()
