"""Say what DeepSpeed is about to compile before it compiles it (issue 20: no silent stalls).

On a CPU (gloo) run DeepSpeed's communication backend loads its shared-memory op ``deepspeed_shm_comm``
when it starts. ``scripts/setup_env.sh`` compiles that op into the installed ``deepspeed`` package
(``DS_BUILD_SHM_COMM=1``); an environment set up otherwise JIT-compiles it, silently, into the torch
extensions folder at the first run (measured here: ~45 s on an idle 2-core machine, ~5 min on a busy
one). :func:`announce_jit_builds` prints one line before that happens.
"""
from __future__ import annotations

import glob
import os

import torch

__all__ = ["SHM_OP", "shm_op_missing", "announce_jit_builds"]

SHM_OP = "deepspeed_shm_comm"


def _extensions_root() -> str:
    from torch.utils.cpp_extension import get_default_build_root

    return os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()


def shm_op_missing() -> bool:
    """True when DeepSpeed (already importable) would JIT-compile its CPU shm op: it was not compiled at
    install time and no earlier JIT build lies in the torch extensions folder."""
    from deepspeed.git_version_info import installed_ops

    if installed_ops.get(SHM_OP):
        return False
    root = _extensions_root()
    return not glob.glob(os.path.join(root, SHM_OP, f"{SHM_OP}*.so")) + glob.glob(os.path.join(root, "*", SHM_OP, f"{SHM_OP}*.so"))


def announce_jit_builds(device: torch.device) -> None:
    """Before ``deepspeed.init_distributed`` on CPU: one line (local rank 0) when the shm op is about to be JIT-compiled."""
    if device.type != "cpu" or int(os.environ.get("LOCAL_RANK", 0)) != 0 or not shm_op_missing():
        return
    print(f"DeepSpeed: compiling its CPU op {SHM_OP} into {_extensions_root()} (once per machine: ~1 min on 2 idle cores, "
          f"up to ~5 min on busy ones; `bash scripts/setup_env.sh` compiles it into .venv at set-up instead)", flush=True)
