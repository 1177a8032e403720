"""From a composed Hydra config to a training run; shared by every ``launch/train_*.py`` script.

Config nodes read here (the groups any task reuses): ``train`` (:class:`~fourd.train.loop.LoopConfig`),
``debug`` (:class:`~fourd.train.loop.DebugConfig`), ``optim`` (:class:`~fourd.train.engine.OptimConfig`
without ``total_steps``, which is ``train.steps``), ``launcher`` (``engine``: plain | deepspeed,
``precision``: auto | bf16 | fp32) and ``deepspeed`` (a DeepSpeed config dict, used with
``launcher.engine=deepspeed``). Values are type-checked against the dataclasses; engine settings the
run cannot honour fail before the task or any model is built (:class:`~fourd.train.engine.EngineFactory`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from typing import Callable, Type, TypeVar

import torch
from omegaconf import DictConfig, OmegaConf

from fourd.preflight import argv_problem
from fourd.train.checkpoint import key_under
from fourd.train.distributed import DistEnv, dist_env, init_distributed, shared_run_stamp, strip_local_rank_args
from fourd.train.engine import EngineFactory, OptimConfig, resolve_precision
from fourd.train.loop import DebugConfig, LoopConfig, Task, TrainResult, train
from fourd.train.publish import check_publish_target, publish_export

__all__ = ["CONFIG_DIR", "compose_training", "prepare_launch", "typed", "run_task"]

log = logging.getLogger(__name__)
T = TypeVar("T")


CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "configs")


def compose_training(config_name: str, overrides: list[str]) -> DictConfig:
    """The composed config ``configs/<config_name>.yaml`` with ``overrides`` (Hydra syntax); works
    inside a running Hydra app (launch/eval.py) and outside it (benchmarks, tests)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name=config_name, overrides=overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def prepare_launch() -> DistEnv:
    """Call before the Hydra entry point: drop ``--local_rank`` from ``sys.argv``, agree on one
    run stamp over all ranks (``RUN_STAMP``, see :func:`~fourd.train.distributed.shared_run_stamp`)
    and give ranks > 0 their own Hydra output subdir (``FOURD_HYDRA_SUBDIR``). An argument that is not
    UTF-8 ends the program with one line (Hydra's parser would raise a grammar exception)."""
    if problem := argv_problem(sys.argv):
        sys.exit(f"{os.path.splitext(os.path.basename(sys.argv[0]))[0]}: error: {problem}")
    sys.argv = strip_local_rank_args(sys.argv)
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    shared_run_stamp()
    env = dist_env()
    if not env.is_main:
        os.environ.setdefault("FOURD_HYDRA_SUBDIR", f".hydra/rank{env.rank}")
    return env


def typed(cls: Type[T], node: DictConfig, **extra) -> T:
    """``node`` checked against dataclass ``cls`` (unknown keys and wrong types raise) -> instance."""
    schema = OmegaConf.structured(cls)
    merged = OmegaConf.merge(schema, node, extra)
    return OmegaConf.to_object(merged)


BOOKKEEPING = ("train.resume", "train.resume_allow_changes", "train.log_every", "train.checkpoint_every", "train.keep_last",
               "train.preview_every", "train.progress", "train.export", "train.loader", "publish_to", "publish_overwrite", "debug", "hydra")
"""Config keys (and parents) that do not change what a run computes: left out of the settings a
checkpoint records, so a resumed run may change them freely."""


def run_settings(cfg: DictConfig) -> dict:
    """The run's settings as ``{dotted key: value}`` (interpolations resolved, :data:`BOOKKEEPING`
    left out): what checkpoints record and a resumed run is compared with (:func:`fourd.train.loop.train`)."""
    flat: dict = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif not key_under(prefix, BOOKKEEPING):
            flat[prefix] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def run_task(cfg: DictConfig, make_task: Callable[[DistEnv], Task], run_dir: str) -> TrainResult:
    """Train ``make_task(env)`` as configured; rank 0 writes ``<run_dir>/result.json`` at the end and,
    with ``publish_to`` set, copies the full export there (:mod:`fourd.train.publish`)."""
    check_publish_target(cfg)  # before any model is built: an existing target fails now, not after training
    loop_cfg = typed(LoopConfig, cfg.train)
    env = dataclasses.replace(init_distributed(), sequence_parallel=loop_cfg.sequence_parallel)
    debug = typed(DebugConfig, cfg.debug)
    optim = typed(OptimConfig, cfg.optim, total_steps=loop_cfg.steps)
    engine_kind = cfg.launcher.engine
    ds_config = OmegaConf.to_container(cfg.deepspeed, resolve=True) if engine_kind == "deepspeed" else None
    factory = EngineFactory(engine_kind, optim, device=env.device, dtype=resolve_precision(cfg.launcher.precision, env.device),
                            micro_batch=loop_cfg.micro_batch, ds_config=ds_config, sequence_parallel=env.sequence_parallel)  # bad settings fail here, before any model
    task = make_task(env)
    if env.sequence_parallel > 1 and not getattr(task, "supports_sequence_parallel", False):
        raise ValueError(f"train.sequence_parallel={env.sequence_parallel}: {type(task).__name__} does not split its tokens over ranks; use 1")
    result = train(task, factory, loop_cfg, run_dir, env, debug, placement=factory.placement, settings=run_settings(cfg))
    if env.is_main:
        summary = {k: v for k, v in dataclasses.asdict(result).items() if k != "losses"}
        with open(os.path.join(run_dir, "result.json"), "w") as f:
            json.dump(summary, f, indent=1)
        log.info("training finished at step %d (%d skipped); exports: %s", result.step, result.skipped_steps, result.exports)
        publish_export(cfg, result.exports)
    return result
