"""Atomic full-state training checkpoints with a ``latest`` pointer, automatic resume and pruning.

Layout under ``root`` (a local or shared directory seen by all ranks)::

    step_00000500/            one complete checkpoint
        engine/               the engine's files (model, optimizer, LR schedule; DeepSpeed's own
                              save_checkpoint layout under DeepSpeed)
        rank_00000.pt ...     per-rank state: RNGs (python, numpy, torch, CUDA, named generators)
                              and the data position of that rank
        trainer.json          step, counters, world size: written last, the completeness mark
    latest                    text file naming the newest complete checkpoint, replaced atomically
    .tmp-step_00000600/       a save in progress (or left by a crash: ignored and removed)

A save writes everything into ``.tmp-step_N``, then rank 0 writes ``trainer.json``, renames the
directory to ``step_N`` and only then replaces ``latest`` (write to a temporary file + rename).
A crash at any point leaves the previous ``latest`` and its directory intact. Resume reads
``latest`` and falls back to the newest ``step_*`` directory holding a ``trainer.json``.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from typing import Any, Callable, Mapping, Optional

import torch

from fourd.train.distributed import DistEnv, barrier
from fourd.train.engine import Engine

__all__ = ["CheckpointManager", "LoadedCheckpoint"]

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d+)$")
TRAINER_FILE = "trainer.json"
LATEST_FILE = "latest"


def _fsync_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class LoadedCheckpoint:
    """What :meth:`CheckpointManager.load` restores besides the engine: ``path``, ``trainer``
    (the dict given to ``save``) and this rank's ``rank_state`` (None when the checkpoint was
    written with fewer ranks)."""

    def __init__(self, path: str, trainer: dict[str, Any], rank_state: Optional[dict[str, Any]]):
        self.path, self.trainer, self.rank_state = path, trainer, rank_state


class CheckpointManager:
    """Saves and finds checkpoints under ``root``; ``keep_last`` complete ones are kept (0 = all)."""

    def __init__(self, root: str, env: DistEnv, keep_last: int = 3):
        self.root, self.env, self.keep_last = root, env, keep_last
        if env.is_main:
            os.makedirs(root, exist_ok=True)

    @staticmethod
    def step_dir_name(step: int) -> str:
        """Directory name of the checkpoint at optimizer step ``step``."""
        return f"step_{step:08d}"

    def save(self, step: int, engine: Engine, trainer: Mapping[str, Any], rank_state: Mapping[str, Any], before_commit: Optional[Callable[[], None]] = None) -> str:
        """Write a complete checkpoint for ``step`` (every rank calls this) and return its path.

        ``trainer``: JSON-serialisable global state (rank 0's is written). ``rank_state``: this
        rank's state (tensors, numbers, strings, lists, dicts; loadable with ``weights_only``).
        ``before_commit``: called on every rank after all files are written and before the commit
        (the crash-injection point used by the tests).
        """
        name = self.step_dir_name(step)
        final = os.path.join(self.root, name)
        tmp = os.path.join(self.root, f".tmp-{name}")
        if self.env.is_main and os.path.exists(tmp):
            shutil.rmtree(tmp)
        barrier()
        os.makedirs(os.path.join(tmp, "engine"), exist_ok=True)
        barrier()
        engine.save(os.path.join(tmp, "engine"), {"step": step})
        torch.save(dict(rank_state), os.path.join(tmp, f"rank_{self.env.rank:05d}.pt"))
        barrier()
        if before_commit is not None:
            before_commit()
        if self.env.is_main:
            _fsync_write(os.path.join(tmp, TRAINER_FILE), json.dumps({**dict(trainer), "step": step, "world_size": self.env.world_size}, indent=1))
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_write(os.path.join(self.root, LATEST_FILE), name + "\n")
            self._prune()
        barrier()
        return final

    def complete(self) -> list[tuple[int, str]]:
        """``[(step, path)]`` of complete checkpoints (those with a ``trainer.json``), oldest first."""
        if not os.path.isdir(self.root):
            return []
        found = []
        for entry in os.listdir(self.root):
            match = _STEP_DIR.match(entry)
            path = os.path.join(self.root, entry)
            if match and os.path.isfile(os.path.join(path, TRAINER_FILE)):
                found.append((int(match.group(1)), path))
        return sorted(found)

    def latest(self) -> Optional[str]:
        """Path of the newest complete checkpoint: the ``latest`` pointer if it names a complete one,
        else the complete checkpoint with the highest step; None when there is none."""
        pointer = os.path.join(self.root, LATEST_FILE)
        if os.path.isfile(pointer):
            with open(pointer) as f:
                candidate = os.path.join(self.root, f.read().strip())
            if os.path.isfile(os.path.join(candidate, TRAINER_FILE)):
                return candidate
            log.warning("checkpoint pointer %s names an incomplete checkpoint %s; scanning %s", pointer, candidate, self.root)
        done = self.complete()
        return done[-1][1] if done else None

    def resolve(self, resume: Optional[str]) -> Optional[str]:
        """``"auto"`` -> :meth:`latest` (None on a fresh run); ``None``/``"none"`` -> None;
        anything else is a checkpoint directory that must be complete (else ``FileNotFoundError``)."""
        if resume in (None, "", "none", "null"):
            return None
        if resume == "auto":
            return self.latest()
        if not os.path.isfile(os.path.join(resume, TRAINER_FILE)):
            raise FileNotFoundError(f"resume checkpoint {resume} is missing or incomplete (no {TRAINER_FILE})")
        return resume

    def load(self, path: str, engine: Engine) -> LoadedCheckpoint:
        """Restore the engine from checkpoint ``path`` (every rank calls this) and return the rest."""
        with open(os.path.join(path, TRAINER_FILE)) as f:
            trainer = json.load(f)
        engine.load(os.path.join(path, "engine"))
        rank_file = os.path.join(path, f"rank_{self.env.rank:05d}.pt")
        rank_state = torch.load(rank_file, map_location="cpu", weights_only=True) if os.path.isfile(rank_file) else None
        if trainer.get("world_size") != self.env.world_size:
            log.warning("checkpoint %s was written by %s ranks, resuming with %d: per-rank RNG/data state is re-seeded where missing", path, trainer.get("world_size"), self.env.world_size)
        return LoadedCheckpoint(path, trainer, rank_state)

    def _prune(self) -> None:
        for entry in os.listdir(self.root):
            if entry.startswith(".tmp-"):
                shutil.rmtree(os.path.join(self.root, entry), ignore_errors=True)
        if self.keep_last > 0:
            for _, path in self.complete()[: -self.keep_last]:
                shutil.rmtree(path, ignore_errors=True)
