"""Pretrain the tiny VGGT base from scratch (recon/pretrain_task.py; docs/base_models.md):

    python launch/train_recon_base.py publish_to=checkpoints/base/vggt.safetensors publish_overwrite=true   # replace the committed base
    python launch/train_recon_base.py train.steps=200 base_data.views=2              # a quick variant

Same loop, checkpoints and resume rule as launch/train_recon.py (``RUN_DIR`` = resume); ``publish_to``
refuses an existing file unless ``publish_overwrite=true`` (fourd/train/publish.py). The export
``<run dir>/export/model.safetensors`` loads with ``recon.load_reconstructor(json.loads(metadata
["recon_config"]), weights=...)`` and starts the paper's stage 1 (``launch/train_recon.py
recon_model.weights=<it>``).
"""
from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fourd.preflight import check_config, one_line_errors
from fourd.train.hydra_app import prepare_launch


@hydra.main(config_path="../configs", config_name="train_recon_base", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    """One Hydra job: pretrain the base in the Hydra run dir."""
    from recon.pretrain_task import pretrain

    with one_line_errors("train_recon_base"):
        check_config(cfg)  # unset keys and named files, before any model is built
        pretrain(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    prepare_launch()
    hydra_main()
