"""Atomic checkpoints: exact in-process resume, crash during save, broken pointer, pruning, RNG round trip."""
from __future__ import annotations

import os
import random
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from fourd.train.checkpoint import CheckpointManager
from fourd.train.distributed import DistEnv
from fourd.train.engine import OptimConfig, PlainEngine
from fourd.train.loop import LoopConfig, train
from fourd.train.rng import capture_rng, restore_rng
from tests.test_train_loop import ToyTask, _engine_factory, _metrics


def _toy_engine():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    return model, PlainEngine(model, OptimConfig(lr=0.1, warmup_steps=1), torch.device("cpu"))


def test_rng_roundtrip_through_weights_only(tmp_path):
    g = torch.Generator().manual_seed(5)
    state = capture_rng({"loss": g})
    torch.save(state, tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=g))
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), {"loss": g})
    got = (random.random(), np.random.rand(), torch.rand(2), torch.rand(2, generator=g))
    assert got[:2] == expected[:2]
    assert torch.equal(got[2], expected[2]) and torch.equal(got[3], expected[3])
    with pytest.raises(KeyError, match="other"):
        restore_rng(state, {"other": g})


def test_resume_repeats_losses_exactly(tmp_path):
    cfg = LoopConfig(steps=6, micro_batch=2, checkpoint_every=2, keep_last=0, preview_every=1, progress=False, export="none")
    full = train(ToyTask(), _engine_factory(accumulation=2), cfg, str(tmp_path / "a"), DistEnv())
    ckpt = os.path.join(tmp_path, "a", "checkpoints", "step_00000002")
    cfg_b = LoopConfig(**{**cfg.__dict__, "resume": ckpt})
    resumed = train(ToyTask(), _engine_factory(accumulation=2), cfg_b, str(tmp_path / "b"), DistEnv())
    assert sorted(resumed.losses) == [3, 4, 5, 6]
    assert [resumed.losses[s] for s in range(3, 7)] == [full.losses[s] for s in range(3, 7)]
    assert [r["step"] for r in _metrics(tmp_path / "b")] == [3, 4, 5, 6]


def test_crash_during_save_keeps_previous_latest(tmp_path):
    model, engine = _toy_engine()
    mgr = CheckpointManager(str(tmp_path), DistEnv(), keep_last=2)
    good = mgr.save(2, engine, {"skipped_steps": 0}, {"data": {"position": 2}})
    weights_at_2 = model.weight.detach().clone()
    engine.backward(model(torch.randn(4, 3)).pow(2).mean())
    engine.step()

    def crash():
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated"):
        mgr.save(4, engine, {"skipped_steps": 0}, {"data": {"position": 4}}, before_commit=crash)
    assert os.path.isdir(tmp_path / ".tmp-step_00000004")  # half-written, never committed
    assert mgr.latest() == good and [s for s, _ in mgr.complete()] == [2]
    assert (tmp_path / "latest").read_text().strip() == "step_00000002"
    loaded = mgr.load(mgr.resolve("auto"), engine)
    assert torch.equal(model.weight, weights_at_2)
    assert loaded.trainer["step"] == 2 and loaded.rank_state["data"] == {"position": 2}


def test_broken_pointer_falls_back_and_pruning(tmp_path):
    _, engine = _toy_engine()
    mgr = CheckpointManager(str(tmp_path), DistEnv(), keep_last=2)
    for step in (1, 2, 3):
        mgr.save(step, engine, {}, {})
    assert [s for s, _ in mgr.complete()] == [2, 3]  # step 1 pruned
    os.remove(tmp_path / "step_00000003" / "trainer.json")  # e.g. a copy cut short
    assert mgr.latest() == str(tmp_path / "step_00000002")
    shutil.rmtree(tmp_path / "step_00000002")
    assert mgr.latest() is None and mgr.resolve("auto") is None and mgr.resolve("none") is None
    with pytest.raises(FileNotFoundError, match="incomplete"):
        mgr.resolve(str(tmp_path / "step_00000003"))


class _CountingTask(ToyTask):
    built = 0

    def build_model(self, placement=None):
        _CountingTask.built += 1
        return super().build_model(placement)


def test_resume_refuses_a_folder_of_a_run_with_other_settings(tmp_path, caplog):
    run = str(tmp_path / "run")
    cfg = LoopConfig(steps=2, micro_batch=2, checkpoint_every=1, keep_last=0, progress=False, export="none")
    settings = {"train.steps": 2, "optim.lr": 0.1, "model.width": 8}
    train(ToyTask(), _engine_factory(), cfg, run, DistEnv(), settings=settings)
    longer = LoopConfig(**{**cfg.__dict__, "steps": 4})
    # another lr in the same folder: refused before any model is built, naming the key, both values and the fixes;
    # train.steps may change by default (training longer)
    _CountingTask.built = 0
    with pytest.raises(ValueError, match=r"optim\.lr: 0\.1 -> 0\.5\).*train\.resume=none.*resume_allow_changes") as err:
        train(_CountingTask(), _engine_factory(), longer, run, DistEnv(), settings={**settings, "train.steps": 4, "optim.lr": 0.5})
    assert "train.steps" not in str(err.value).split("resuming")[0] and _CountingTask.built == 0
    # a key added to the configuration counts as a change too
    with pytest.raises(ValueError, match=r"model\.depth: '<unset>' -> 2"):
        train(ToyTask(), _engine_factory(), cfg, run, DistEnv(), settings={**settings, "model.depth": 2})
    # the change allowed by name: resumes at step 3
    allowed = LoopConfig(**{**longer.__dict__, "resume_allow_changes": ["train.steps", "optim"]})
    resumed = train(ToyTask(), _engine_factory(), allowed, run, DistEnv(), settings={**settings, "train.steps": 4, "optim.lr": 0.5})
    assert sorted(resumed.losses) == [3, 4]
    # its checkpoints record the new settings: the same settings resume silently
    again = LoopConfig(**{**longer.__dict__, "steps": 5})
    assert train(ToyTask(), _engine_factory(), again, run, DistEnv(), settings={**settings, "train.steps": 4, "optim.lr": 0.5}).step == 5
    # a checkpoint named explicitly resumes, with a warning listing the change
    named = LoopConfig(**{**cfg.__dict__, "steps": 3, "resume": os.path.join(run, "checkpoints", "step_00000002")})
    with caplog.at_level("WARNING"):
        train(ToyTask(), _engine_factory(), named, str(tmp_path / "other"), DistEnv(), settings={**settings, "optim.lr": 0.7})
    assert "optim.lr: 0.1 -> 0.7" in caplog.text


def test_run_settings_leave_bookkeeping_out():
    from omegaconf import OmegaConf

    from fourd.train.hydra_app import run_settings

    cfg = OmegaConf.create({"train": {"steps": 3, "resume": "auto", "log_every": 5, "loader": {"workers": 2}},
                            "optim": {"lr": 0.1, "betas": [0.9, 0.95]}, "width": "${optim.lr}", "publish_to": None,
                            "debug": {"stop_after_step": 2}})
    assert run_settings(cfg) == {"train.steps": 3, "optim.lr": 0.1, "optim.betas": [0.9, 0.95], "width": 0.1}
