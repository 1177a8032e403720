"""Atomic full-state training checkpoints with a ``latest`` pointer, automatic resume and pruning.

Layout under ``root`` (a local or shared directory seen by all ranks)::

    step_00000500/            one complete checkpoint
        engine/               the engine's files (model, optimizer, LR schedule; DeepSpeed's own
                              save_checkpoint layout under DeepSpeed)
        rank_00000.pt ...     per-rank state: RNGs (python, numpy, torch, CUDA, named generators)
                              and the data position of that rank
        trainer.json          step, counters, world size and every other file's size and sha256:
                              written last, the completeness mark
    latest                    text file naming the newest complete checkpoint, replaced atomically
    .tmp-step_00000600/       a save in progress (or left by a crash: ignored and removed)
    damaged-step_00000700/    a checkpoint that failed verification, set aside (never deleted)

A save writes everything into ``.tmp-step_N``; every rank fsyncs every file and folder there (the
engine's own files, DeepSpeed's included: a rank's fsync flushes what its node wrote); the ranks
hash a share of the files each; rank 0 writes ``trainer.json`` with the sizes and checksums,
renames the directory to ``step_N``, fsyncs the root and only then replaces ``latest`` (written to a
temporary file, fsynced, renamed). A crash or power loss at any point leaves the previous ``latest``
and its directory intact.

Resume (``resume="auto"``) takes ``latest`` (else the newest ``step_*`` with a ``trainer.json``) and
verifies every listed file's size and checksum; a damaged checkpoint is set aside as
``damaged-step_N`` with one warning line naming the file and the steps lost, and the next older
complete one is used. An explicitly named checkpoint that is damaged raises
:class:`CheckpointError` naming the file.

``trainer.json`` also records the run's settings (``settings``: dotted config key -> value, as the
caller gives them); :func:`settings_changes` lists what a resuming run changed, so the loop can
refuse to mix two runs in one folder.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import torch.distributed as dist

from fourd.train.distributed import DistEnv, barrier, broadcast_object
from fourd.train.engine import Engine

__all__ = ["CheckpointManager", "LoadedCheckpoint", "CheckpointError", "SETTINGS_KEY", "key_under", "recorded_settings", "settings_changes"]

log = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d+)$")
TRAINER_FILE = "trainer.json"
LATEST_FILE = "latest"


FILES_KEY = "files"
SETTINGS_KEY = "settings"
DAMAGED_PREFIX = "damaged-"


def recorded_settings(path: str) -> Optional[dict[str, Any]]:
    """The settings checkpoint ``path`` recorded in its ``trainer.json`` (None when it recorded none)."""
    with open(os.path.join(path, TRAINER_FILE)) as f:
        return json.load(f).get(SETTINGS_KEY)


def key_under(key: str, prefixes: Sequence[str]) -> bool:
    """Whether dotted ``key`` equals an entry of ``prefixes`` or lies under one (``"a.b"`` is under ``"a"``)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def settings_changes(saved: Mapping[str, Any], current: Mapping[str, Any], allowed: Sequence[str] = ()) -> list[str]:
    """``"key: old -> new"`` for every dotted key whose value differs between ``saved`` and ``current``
    (a key only one side has counts, shown as ``<unset>``), except keys equal to or under an entry of
    ``allowed``. Sorted by key."""
    unset = "<unset>"
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k, unset)!r} -> {current.get(k, unset)!r}" for k in keys
            if not key_under(k, allowed) and saved.get(k, unset) != current.get(k, unset)]


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (damaged or incomplete); the message is one line naming the file."""


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_path(os.path.dirname(path) or ".")


def _files(directory: str) -> list[str]:
    """Every file under ``directory`` (relative paths, sorted), ``trainer.json`` excluded."""
    found = []
    for parent, _, names in os.walk(directory):
        found += [os.path.relpath(os.path.join(parent, n), directory) for n in names]
    return sorted(f for f in found if f != TRAINER_FILE)


def _fsync_tree(directory: str) -> None:
    """fsync every file and folder under ``directory`` (folders after their entries)."""
    for parent, _, names in os.walk(directory, topdown=False):
        for name in names:
            _fsync_path(os.path.join(parent, name))
        _fsync_path(parent)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _gather(obj: Any) -> list[Any]:
    """``obj`` of every rank (a list of one without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


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
        _fsync_tree(tmp)  # every rank: flushes what this node wrote, whoever wrote it
        files = broadcast_object(_files(tmp) if self.env.is_main else None)  # one listing (shared filesystems cache them)
        share = {f: {"size": os.path.getsize(os.path.join(tmp, f)), "sha256": _sha256(os.path.join(tmp, f))}
                 for f in files[self.env.rank :: self.env.world_size]}
        manifest = {k: v for part in _gather(share) for k, v in part.items()}
        if before_commit is not None:
            before_commit()
        if self.env.is_main:
            doc = {**dict(trainer), "step": step, "world_size": self.env.world_size, FILES_KEY: dict(sorted(manifest.items()))}
            _fsync_write(os.path.join(tmp, TRAINER_FILE), json.dumps(doc, indent=1))
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_path(self.root)
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
        else the complete checkpoint with the highest step; None when there is none (not verified)."""
        candidates = self._candidates()
        return candidates[0] if candidates else None

    def _candidates(self) -> list[str]:
        """Complete checkpoints, the pointer's first, then the others newest first."""
        done = [path for _, path in reversed(self.complete())]
        pointer = os.path.join(self.root, LATEST_FILE)
        if os.path.isfile(pointer):
            with open(pointer) as f:
                candidate = os.path.join(self.root, f.read().strip())
            if os.path.isfile(os.path.join(candidate, TRAINER_FILE)):
                return [candidate] + [p for p in done if os.path.abspath(p) != os.path.abspath(candidate)]
            log.warning("checkpoint pointer %s names an incomplete checkpoint %s; scanning %s", pointer, candidate, self.root)
        return done

    def verify(self, path: str) -> Optional[str]:
        """What is wrong with checkpoint ``path`` (a file missing, cut short or changed against the sizes and
        checksums in its ``trainer.json``), or None when it is intact. Every rank calls this (each hashes a
        share of the files). Checkpoints written before ``trainer.json`` listed files are not checked."""
        try:
            with open(os.path.join(path, TRAINER_FILE)) as f:
                listed = json.load(f).get(FILES_KEY, {})
        except (OSError, ValueError, AttributeError) as e:
            listed, problem = {}, f"{TRAINER_FILE} is unreadable ({type(e).__name__})"
        else:
            problem = None
        problems = []
        for name in sorted(listed)[self.env.rank :: self.env.world_size]:
            file, want = os.path.join(path, name), listed[name]
            if not os.path.isfile(file):
                problems.append(f"{name} is missing")
            elif os.path.getsize(file) != want["size"]:
                problems.append(f"{name} has {os.path.getsize(file)} bytes, {TRAINER_FILE} lists {want['size']}")
            elif _sha256(file) != want["sha256"]:
                problems.append(f"{name} does not match its sha256 in {TRAINER_FILE}")
        found = sorted(p for part in _gather(problems) for p in part)
        return problem or (found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else "") if found else None)

    def resolve(self, resume: Optional[str]) -> Optional[str]:
        """``"auto"`` -> the newest intact checkpoint (None on a fresh run): damaged newer ones are set aside
        with one warning line; ``None``/``"none"`` -> None; anything else is a checkpoint directory that must
        be complete (else ``FileNotFoundError``) and intact (else :class:`CheckpointError` naming the file).
        Every rank calls this."""
        if resume in (None, "", "none", "null"):
            return None
        if resume != "auto":
            if not os.path.isfile(os.path.join(resume, TRAINER_FILE)):
                raise FileNotFoundError(f"resume checkpoint {resume} is missing or incomplete (no {TRAINER_FILE}): "
                                        "name a step_* folder holding one, or train.resume=auto")
            problem = self.verify(resume)
            if problem:
                raise CheckpointError(f"resume checkpoint {resume} is damaged: {problem}; resume from an older "
                                      f"step_* of its folder or with train.resume=auto (which skips damaged checkpoints)")
            return resume
        damaged = []
        for path in self._candidates():
            problem = self.verify(path)
            if problem is None:
                if damaged:
                    self._set_aside(damaged, path)
                return path
            damaged.append((path, problem))
        if damaged:
            listing = "; ".join(f"{os.path.basename(p)}: {problem}" for p, problem in damaged)
            raise CheckpointError(f"every checkpoint in {self.root} is damaged ({listing}): restore one, or start over with train.resume=none")
        return None

    def _set_aside(self, damaged: list[tuple[str, str]], fallback: str) -> None:
        """Rename damaged checkpoints to ``damaged-step_N`` (kept, never counted or pruned), point ``latest``
        at ``fallback`` and say so in one warning line."""
        steps = [int(_STEP_DIR.match(os.path.basename(p)).group(1)) for p, _ in damaged]
        lost = max(steps) - int(_STEP_DIR.match(os.path.basename(fallback)).group(1))
        listing = "; ".join(f"{os.path.basename(p)}: {problem}" for p, problem in damaged)
        log.warning("damaged checkpoint%s in %s (%s), set aside as %s; resuming from %s: %d step%s lost (trained again)",
                    "s" if len(damaged) > 1 else "", self.root, listing, ", ".join(DAMAGED_PREFIX + os.path.basename(p) for p, _ in damaged),
                    os.path.basename(fallback), lost, "" if lost == 1 else "s")
        if self.env.is_main:
            for path, _ in damaged:
                target = os.path.join(self.root, DAMAGED_PREFIX + os.path.basename(path))
                if os.path.exists(target):
                    shutil.rmtree(target)  # an older copy set aside at the same step
                os.replace(path, target)
            _fsync_write(os.path.join(self.root, LATEST_FILE), os.path.basename(fallback) + "\n")
        barrier()

    def load(self, path: str, engine: Engine) -> LoadedCheckpoint:
        """Restore the engine from checkpoint ``path`` (every rank calls this) and return the rest."""
        with open(os.path.join(path, TRAINER_FILE)) as f:
            trainer = json.load(f)
        trainer.pop(FILES_KEY, None)
        rank_file = os.path.join(path, f"rank_{self.env.rank:05d}.pt")
        try:
            engine.load(os.path.join(path, "engine"))
            rank_state = torch.load(rank_file, map_location="cpu", weights_only=True) if os.path.isfile(rank_file) else None
        except Exception as e:  # unverified (older) checkpoints: name the folder rather than a deep traceback
            detail = (str(e).splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"checkpoint {path} cannot be loaded ({type(e).__name__}: {detail}): it was written for another "
                                  "model/optimizer configuration, or a file is damaged (resume from another step_* of its folder)") from e
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
