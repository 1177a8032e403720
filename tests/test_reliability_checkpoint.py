"""Checkpoints that survive damage (issue 19, point 2): every file is fsynced before ``latest`` moves,
``trainer.json`` lists sizes and checksums, ``resume=auto`` falls back past a damaged checkpoint to
the same losses as an uninterrupted run, an explicitly named damaged checkpoint fails in one line."""
from __future__ import annotations

import json
import logging
import os
import shutil

import pytest

from fourd.train import checkpoint as ckpt_module
from fourd.train.checkpoint import CheckpointError, CheckpointManager
from fourd.train.distributed import DistEnv
from fourd.train.loop import LoopConfig, train
from tests.test_train_loop import ToyTask, _engine_factory

# The run is 8 steps long (the LR schedule's total); checkpoints every 2 steps.
CFG = LoopConfig(steps=8, micro_batch=2, checkpoint_every=2, keep_last=0, progress=False, export="none", log_every=100)
DAMAGED_FILES = ["engine/model.safetensors", "engine/engine_state.pt", "rank_00000.pt"]


def _run(run_dir, steps: int, resume: str = "auto"):
    cfg = LoopConfig(**{**CFG.__dict__, "steps": steps, "resume": resume})
    return train(ToyTask(), _engine_factory(), cfg, str(run_dir), DistEnv())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 8-step run and a run stopped after step 6 (its newest checkpoint)."""
    root = tmp_path_factory.mktemp("runs")
    full = _run(root / "full", 8)
    _run(root / "stopped", 6)
    return root, full.losses


def test_every_file_is_fsynced_before_latest_moves_and_listed_with_its_checksum(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(ckpt_module.os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd)))
    monkeypatch.setattr(ckpt_module.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b)))
    _run(tmp_path, 2)
    root = tmp_path / "checkpoints"
    moved = events.index(("replace", str(root / "latest")))
    synced = {path for kind, path in events[:moved] if kind == "fsync"}
    step = root / "step_00000002"
    files = sorted(os.path.relpath(os.path.join(d, f), step) for d, _, fs in os.walk(step) for f in fs)
    assert files == ["engine/engine_state.pt", "engine/model.safetensors", "rank_00000.pt", "trainer.json"]
    tmp = root / ".tmp-step_00000002"
    assert {str(tmp / f) for f in files[:-1]} | {str(tmp), str(tmp / "engine"), str(root)} <= synced  # files, folders, the rename
    assert any(p.startswith(str(tmp / "trainer.json.tmp-")) for p in synced)  # written, fsynced, then renamed into place
    listed = json.loads((step / "trainer.json").read_text())["files"]
    assert sorted(listed) == files[:-1]
    assert all(listed[f]["size"] == os.path.getsize(step / f) and len(listed[f]["sha256"]) == 64 for f in listed)


@pytest.mark.parametrize("name", DAMAGED_FILES)
def test_auto_resume_falls_back_past_a_cut_file_and_repeats_the_losses_exactly(runs, tmp_path, caplog, name):
    root, full = runs
    run = tmp_path / "run"
    shutil.copytree(root / "stopped", run)
    path = run / "checkpoints" / "step_00000006" / name
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])  # cut in half, as a power loss can leave it
    with caplog.at_level(logging.WARNING, logger="fourd.train.checkpoint"):
        resumed = _run(run, 8)
    assert sorted(resumed.losses) == [5, 6, 7, 8]
    assert [resumed.losses[s] for s in (5, 6, 7, 8)] == [full[s] for s in (5, 6, 7, 8)]  # bit for bit
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"step_00000006: {name} has" in warning and "resuming from step_00000004: 2 steps lost" in warning
    assert (run / "checkpoints" / "damaged-step_00000006" / name).is_file()  # set aside, not deleted


def test_a_named_damaged_checkpoint_fails_in_one_line_naming_the_file(runs, tmp_path):
    root, _ = runs
    run = tmp_path / "run"
    shutil.copytree(root / "stopped", run)
    step = run / "checkpoints" / "step_00000006"
    (step / "rank_00000.pt").write_bytes(b"\0" * os.path.getsize(step / "rank_00000.pt"))  # same size, other bytes
    with pytest.raises(CheckpointError) as error:
        _run(run, 8, resume=str(step))
    message = str(error.value)
    assert "\n" not in message and f"{step} is damaged: rank_00000.pt does not match its sha256" in message
    for other in ("step_00000002", "step_00000004"):
        shutil.rmtree(run / "checkpoints" / other)
    with pytest.raises(CheckpointError, match="every checkpoint in .* is damaged .*train.resume=none"):
        CheckpointManager(str(run / "checkpoints"), DistEnv()).resolve("auto")
    assert step.is_dir()  # nothing set aside when there is nothing to fall back to
