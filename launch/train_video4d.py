"""Train the 4D video DiT. Works under every launcher:

    python launch/train_video4d.py launcher=plain                     # one process, no DeepSpeed
    torchrun --nproc_per_node 2 launch/train_video4d.py               # DeepSpeed ZeRO-2 engine
    deepspeed --num_gpus 2 launch/train_video4d.py deepspeed=zero3    # ``--local_rank`` is dropped
    python launch/train_video4d.py -m launcher=plain optim.lr=1e-4,2e-4   # Hydra sweep, sequential

All ranks share one run dir (``RUN_DIR`` if set, else a timestamp broadcast from rank 0); re-running
with the same ``RUN_DIR`` resumes from its newest complete checkpoint. See docs/training.md.
"""
from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fourd.preflight import check_config, one_line_errors
from fourd.train.hydra_app import prepare_launch, run_task


@hydra.main(config_path="../configs", config_name="train_video4d", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    """One Hydra job: train the video task with the composed config."""
    from video4d.train_task import VideoTask

    with one_line_errors("train_video4d"):
        check_config(cfg)  # unset keys and named files, before any model is built
        run_task(cfg, lambda env: VideoTask(cfg, env), HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    prepare_launch()
    hydra_main()
