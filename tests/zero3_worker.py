"""Two-rank worker of tests/test_zero3.py (started with torchrun; not collected by pytest).

Runs, in one process group, each training case twice: DeepSpeed ZeRO-2 for a few steps (the
reference) and ZeRO-3 for 20 steps, both through :func:`fourd.train.hydra_app.run_task` with the
tiny configs, default sampling probabilities, activation checkpointing on and
``stage3_param_persistence_threshold: 0``. Cases: the DiT with self-attention trainable (weights from
a seeded file) and with every parameter trainable, the reconstructor's static and dynamic stages
(the static one from a weights file). The DiT self-attention case also runs 4 steps with optimizer
and parameter offload (torch AdamW on the host partitions; and DeepSpeed's CPU Adam when its op is
built already), is stopped after 2 ZeRO-3 steps and resumed to 4 (exact resume) with exports, and
its ZeRO-3 build is inspected: every parameter partitioned, this rank holding half of the elements.
Last, the memory planner's predicted peak is measured on 2 ranks (tests/test_memory_plan.py's settings).

Usage: ``torchrun --nproc_per_node 2 tests/zero3_worker.py OUT_DIR``; rank 0 writes
``OUT_DIR/results.json``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fourd.train.hydra_app import compose_training  # noqa: E402
from fourd.sharded import is_partitioned, numel  # noqa: E402
from fourd.train.distributed import barrier, dist_env, init_distributed  # noqa: E402
from fourd.train.hydra_app import run_task  # noqa: E402

STEPS, REF_STEPS = 20, 4
COMMON = ["launcher=deepspeed", "train.progress=false", "train.log_every=100", "train.checkpoint_every=0", "train.export=none",
          "optim.warmup_steps=2", "++deepspeed.zero_optimization.stage3_param_persistence_threshold=0",
          "++deepspeed.zero_optimization.stage3_max_reuse_distance=0", "++deepspeed.zero_optimization.stage3_prefetch_bucket_size=1000"]
DIT = ["model.gradient_checkpointing=true", "+model.text_len=32", "data.height=16", "data.width=16", "data.num_scenes=8", "text.encoder={config: tiny}"]
RECON = ["recon_model.gradient_checkpointing=true", "recon_data.num_frames=2", "recon_data.input_views=2", "recon_data.target_views=1", "recon_data.num_scenes=8", "loss.lpips_weight=0",
         "scene_export.enabled=false"]


def _task(app: str):
    if app == "train_video4d":
        from video4d.train_task import VideoTask

        return VideoTask
    from recon.train_task import ReconTask

    return ReconTask


SECONDS: dict[str, float] = {}


def _run(app: str, overrides: list[str], run_dir: Path) -> dict[int, float]:
    start = time.process_time()
    cfg = compose_training(app, overrides)
    result = run_task(cfg, lambda env: _task(app)(cfg, env), str(run_dir))
    SECONDS[run_dir.name] = time.process_time() - start
    return {int(k): float(v) for k, v in result.losses.items()}


def _weights_file(out: Path, app: str) -> str:
    """A seeded-init weights file of the case's model (written by rank 0)."""
    path = out / f"{app}_init.safetensors"
    if int(os.environ.get("RANK", 0)) == 0:
        from fourd.weights import write_safetensors

        torch.manual_seed(123)
        if app == "train_video4d":
            from video4d import load_dit

            model = load_dit("tiny", init="random")
        else:
            from recon import load_reconstructor

            model = load_reconstructor("tiny-4d")
        write_safetensors(str(path), model.state_dict())
    barrier()
    return str(path)


def _held_fraction(out: Path) -> float:
    """Fraction of the DiT's parameter elements this rank holds after the ZeRO-3 build (all partitioned)."""
    from fourd.train.engine import EngineFactory, OptimConfig

    cfg = compose_training("train_video4d", [*COMMON, *DIT, "deepspeed=zero3"])
    factory = EngineFactory("deepspeed", OptimConfig(), device=torch.device("cpu"), dtype=torch.float32, micro_batch=1,
                            ds_config=dict(cfg.deepspeed))
    from video4d.train_task import VideoTask

    model = VideoTask(cfg, dist_env()).build_model(factory.placement)
    params = list(model.parameters())
    assert all(is_partitioned(p) and p.data.numel() == 0 for p in params), "a parameter was not partitioned at construction"
    held = sum(p.ds_tensor.numel() for p in params)
    return held / sum(numel(p) for p in params)


def main(out: Path) -> None:
    env = init_distributed(timeout_s=120.0)  # a hung collective raises instead of waiting forever
    results: dict[str, object] = {}
    dit_weights = _weights_file(out, "train_video4d")
    recon_weights = _weights_file(out, "train_recon")
    cases = {
        "dit_self_attn": ("train_video4d", [*DIT, f"model.weights={dit_weights}"]),
        "dit_all": ("train_video4d", [*DIT, "model.trainable=[\"*\"]"]),
        "recon_static": ("train_recon", [*RECON, "stage=static", f"recon_model.weights={recon_weights}"]),
        "recon_dynamic": ("train_recon", [*RECON, "stage=dynamic"]),
    }
    for name, (app, extra) in cases.items():
        export = ["train.export=full"] if name == "dit_self_attn" else []
        results[name] = {
            "zero2": _run(app, [*COMMON, *extra, *export, "deepspeed=zero2", f"train.steps={REF_STEPS}"], out / f"{name}_zero2"),
            "zero3": _run(app, [*COMMON, *extra, "deepspeed=zero3", f"train.steps={STEPS}"], out / f"{name}_zero3"),
        }
    app, extra = cases["dit_self_attn"]
    offload = {"zero3_offload_torch_adamw": ["deepspeed=zero3_offload", "++deepspeed.zero_force_ds_cpu_optimizer=false"]}
    if (Path(os.environ.get("TORCH_EXTENSIONS_DIR", "")) / "cpu_adam" / "cpu_adam.so").is_file():  # built already: no 1-min JIT build here
        offload["zero3_offload_cpu_adam"] = ["deepspeed=zero3_offload_optimizer"]
    for name, settings in offload.items():
        results["dit_self_attn"][name] = _run(app, [*COMMON, *extra, *settings, f"train.steps={REF_STEPS}"], out / f"dit_self_attn_{name}")
    resumed = out / "dit_self_attn_zero3_resumed"
    _run(app, [*COMMON, *extra, "deepspeed=zero3", "train.steps=2"], resumed)
    results["dit_self_attn"]["zero3_resumed"] = _run(app, [*COMMON, *extra, "deepspeed=zero3", "train.steps=4", "train.export=both"], resumed)
    results["held_fraction"] = _held_fraction(out)
    from eval.perf.memory_check import check
    from tests.test_memory_plan import CHECKED

    results["memory"] = check([[*cfg, "dp=2"] for cfg in CHECKED])
    results["seconds"] = SECONDS
    if env.is_main:
        (out / "results.json").write_text(json.dumps(results, indent=1))
    barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
