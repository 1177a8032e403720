"""Train (or export with) the feedforward 4D reconstructor. Works under every launcher:

    python launch/train_recon.py launcher=plain                              # one process, no DeepSpeed
    torchrun --nproc_per_node 2 launch/train_recon.py                        # DeepSpeed ZeRO-2 engine
    deepspeed --num_gpus 8 launch/train_recon.py recon_model=vggt-1b-4d recon_model.weights=...  # ``--local_rank`` is dropped
    python launch/train_recon.py -m launcher=plain optim.lr=1e-4,2e-4        # Hydra sweep, sequential
    python launch/train_recon.py mode=export recon_model.weights=<model.safetensors> scene_export.out=<dir>

All ranks share one run dir (``RUN_DIR`` if set, else a timestamp broadcast from rank 0); re-running
with the same ``RUN_DIR`` resumes from its newest complete checkpoint. The weights exported at the end
(``<run dir>/export/model.safetensors``) load with ``recon.load_reconstructor(config, weights)``, the
config being the JSON in its ``recon_config`` metadata. With ``scene_export.enabled`` rank 0 then
exports one scene (launch/export_recon.py) to ``<run dir>/scene_export``. See docs/recon.md.
"""
from __future__ import annotations

import os

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fourd.preflight import check_config, one_line_errors
from fourd.train.hydra_app import prepare_launch, run_task


@hydra.main(config_path="../configs", config_name="train_recon", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    """One Hydra job: train the reconstructor (``mode=train``) or export one scene (``mode=export``)."""
    with one_line_errors("train_recon"):
        check_config(cfg)  # unset keys and named files, before any model is built
        _run(cfg)


def _run(cfg: DictConfig) -> None:
    from fourd.train.distributed import dist_env
    from launch.export_recon import export_from_config
    from recon.train_task import ReconTask

    run_dir = HydraConfig.get().runtime.output_dir
    out = cfg.scene_export.out or os.path.join(run_dir, "scene_export")
    if cfg.mode == "export":
        export_from_config(cfg, cfg.recon_model.weights, out)
        return
    if cfg.mode != "train":
        raise ValueError(f"unknown mode {cfg.mode!r}; use 'train' or 'export'")
    result = run_task(cfg, lambda env: ReconTask(cfg, env), run_dir)
    if cfg.scene_export.enabled and dist_env().is_main:
        full = [p for p in result.exports if p.endswith("model.safetensors")]
        if not full:
            raise ValueError("scene_export.enabled needs the full weights: set train.export=full or both (or scene_export.enabled=false)")
        export_from_config(cfg, full[0], out)


if __name__ == "__main__":
    prepare_launch()
    hydra_main()
