"""Process-group setup shared by every launcher (plain python, torchrun, the ``deepspeed`` launcher).

Ranks come from the environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``; both torchrun and the
``deepspeed`` launcher set them). The process group is created once per process and kept for all
Hydra multirun jobs of that process (``init_distributed`` is idempotent); it is destroyed at exit.
Backend: ``nccl`` when CUDA is available, ``gloo`` otherwise.

The run directory must be the same on all ranks: :func:`shared_run_stamp` lets rank 0 pick a
timestamp and broadcasts it, and the Hydra config builds its run/sweep dirs from it (unless
``RUN_DIR`` is set, which always wins).
"""
from __future__ import annotations

import atexit
import datetime
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv",
    "dist_env",
    "sequence_parallel_groups",
    "init_distributed",
    "teardown",
    "barrier",
    "broadcast_object",
    "all_reduce_mean",
    "strip_local_rank_args",
    "shared_run_stamp",
]

_LOCAL_RANK_ARG = re.compile(r"^--local[-_]rank(=\d+)?$")


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: global ``rank``, ``local_rank`` on its node, ``world_size``,
    and the ``sequence_parallel`` size N (consecutive ranks ``[k*N, (k+1)*N)`` form one sequence-
    parallel group: they share one sample and split its tokens).

    Data is sharded by data-parallel rank (:attr:`dp_rank` of :attr:`dp_size`), never by global
    rank: every rank of a sequence-parallel group reads the same samples and draws the same noise.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    sequence_parallel: int = 1

    def __post_init__(self) -> None:
        if self.sequence_parallel < 1 or self.world_size % self.sequence_parallel:
            raise ValueError(f"sequence_parallel={self.sequence_parallel} must be >= 1 and divide the world size {self.world_size}")

    @property
    def is_main(self) -> bool:
        """True on global rank 0 (the rank that writes shared files and logs)."""
        return self.rank == 0

    @property
    def dp_rank(self) -> int:
        """Data-parallel rank: which shard of the data this rank (and its sequence-parallel group) reads."""
        return self.rank // self.sequence_parallel

    @property
    def dp_size(self) -> int:
        """Number of data-parallel shards (``world_size / sequence_parallel``)."""
        return self.world_size // self.sequence_parallel

    @property
    def sp_rank(self) -> int:
        """Rank inside the sequence-parallel group (which slice of the tokens it holds)."""
        return self.rank % self.sequence_parallel

    @property
    def device(self) -> torch.device:
        """``cuda:<local_rank>`` when CUDA is available, else the CPU."""
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def dist_env() -> DistEnv:
    """Read ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` from the environment (defaults: one process)."""
    return DistEnv(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


_SEQUENCE_PARALLEL_SIZE: list[int] = []  # the size whose groups this process made


def sequence_parallel_groups(size: int):
    """DeepSpeed's sequence-parallel groups for ``size`` ranks per group: the module
    ``deepspeed.runtime.sequence_parallel.parallel_state_sp``, which is also the ``mpu`` that
    ``deepspeed.initialize`` takes for Ulysses.

    Ranks ``[k*N, (k+1)*N)`` form sequence-parallel group ``k`` (:class:`DistEnv`'s layout:
    ``get_sequence_parallel_group()`` splits one sample's tokens); all ranks form the
    sequence-data-parallel group over which ZeRO partitions states and reduces gradients. Made once
    per process (every rank must call this: group creation is collective); another size later in
    the same process raises. Needs the default process group; sets up ``deepspeed.comm`` on it.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"sequence_parallel={size} needs a process group: launch {size} or more ranks with torchrun or deepspeed")
    import deepspeed
    from deepspeed.runtime.sequence_parallel import parallel_state_sp

    if _SEQUENCE_PARALLEL_SIZE and _SEQUENCE_PARALLEL_SIZE[0] != size:
        raise ValueError(f"sequence_parallel={size}: this process already made groups of {_SEQUENCE_PARALLEL_SIZE[0]} ranks (one size per process)")
    if not _SEQUENCE_PARALLEL_SIZE:
        DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), sequence_parallel=size)  # checks the size divides the world
        deepspeed.init_distributed(dist_backend=dist.get_backend())  # deepspeed.comm over the existing group
        parallel_state_sp.initialize_sequence_parallel(size)
        _SEQUENCE_PARALLEL_SIZE.append(size)
    return parallel_state_sp


def strip_local_rank_args(argv: Sequence[str]) -> list[str]:
    """Drop ``--local_rank=N`` / ``--local-rank N`` (added by the ``deepspeed`` launcher) from ``argv``.

    Hydra rejects unknown arguments; the rank is read from ``LOCAL_RANK`` instead.
    """
    out: list[str] = []
    skip_next = False
    for arg in argv:
        if skip_next:
            skip_next = False
            continue
        match = _LOCAL_RANK_ARG.match(arg)
        if match:
            skip_next = match.group(1) is None
            continue
        out.append(arg)
    return out


def init_distributed(timeout_s: float = 1800.0) -> DistEnv:
    """Create the default process group when ``WORLD_SIZE > 1`` (once per process) and return the env.

    Uses ``nccl`` on CUDA (and sets the local device), ``gloo`` on CPU. Needs ``MASTER_ADDR`` and
    ``MASTER_PORT`` (set by torchrun / deepspeed). Single-process runs create no group.
    """
    env = dist_env()
    if env.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "gloo":
            _share_cpu_threads()
        if backend == "nccl":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size, timeout=datetime.timedelta(seconds=timeout_s))
        atexit.register(teardown)
    return env


def _share_cpu_threads() -> None:
    """Give each local CPU rank ``cores // local ranks`` intra-op threads unless OMP_NUM_THREADS is set.

    torchrun sets OMP_NUM_THREADS=1 for several local ranks, the ``deepspeed`` launcher does not
    (unless --bind_cores_to_rank); without a cap every rank takes all cores and the oversubscribed
    ranks run small ops up to ~100x slower. Local rank counts: LOCAL_WORLD_SIZE (torchrun) or
    LOCAL_SIZE (deepspeed).
    """
    if "OMP_NUM_THREADS" in os.environ:
        return
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", 1)))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local, 1)))


def teardown() -> None:
    """Destroy the default process group if one exists (safe to call more than once)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for all ranks (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Return rank ``src``'s ``obj`` on every rank (picklable objects; identity without a group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _reduce_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(values: Sequence[float]) -> list[float]:
    """Mean of each float over all ranks (the values themselves without a group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def shared_run_stamp(env_var: str = "RUN_STAMP") -> str:
    """A timestamp ``YYYY-mm-dd_HH-MM-SS`` identical on all ranks, also stored in ``os.environ[env_var]``.

    An already set ``env_var`` is kept. Otherwise rank 0's clock is broadcast (this initialises the
    process group, see :func:`init_distributed`).
    """
    stamp = os.environ.get(env_var)
    if not stamp:
        init_distributed()
        stamp = broadcast_object(time.strftime("%Y-%m-%d_%H-%M-%S"))
        os.environ[env_var] = stamp
    return stamp
