"""The one-line notice before DeepSpeed JIT-compiles its CPU shm op (fourd/train/deepspeed_ops.py, issue 20)."""
from __future__ import annotations

import pytest
import torch

deepspeed = pytest.importorskip("deepspeed")

from deepspeed import git_version_info  # noqa: E402

from fourd.train.deepspeed_ops import SHM_OP, announce_jit_builds, shm_op_missing  # noqa: E402


def test_notice_only_when_the_op_would_be_compiled(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setitem(git_version_info.installed_ops, SHM_OP, False)
    assert shm_op_missing()
    announce_jit_builds(torch.device("cpu"))
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"DeepSpeed: compiling its CPU op {SHM_OP} into {tmp_path}")
    announce_jit_builds(torch.device("cuda"))  # nccl: no shm op
    monkeypatch.setenv("LOCAL_RANK", "1")  # one line per machine, from local rank 0
    announce_jit_builds(torch.device("cpu"))
    assert capsys.readouterr().out == ""
    built = tmp_path / "py311_cu130" / SHM_OP  # an earlier JIT build (torch's per-python/CUDA subfolder)
    built.mkdir(parents=True)
    (built / f"{SHM_OP}.so").write_bytes(b"")
    assert not shm_op_missing()
    (built / f"{SHM_OP}.so").unlink()
    monkeypatch.setitem(git_version_info.installed_ops, SHM_OP, 1)  # compiled at install (scripts/setup_env.sh)
    assert not shm_op_missing()
