"""ZeRO-3 on 2 gloo ranks: every rank issues the same collectives whatever its samples, the model is
built partitioned, and the run equals ZeRO-2.

One launch of tests/zero3_worker.py (see its docstring) trains the tiny DiT (self-attention only,
weights from a file; all parameters) and the tiny reconstructor (static stage from a weights file;
dynamic stage) for 20 ZeRO-3 steps each with default sampling probabilities, activation
checkpointing and ``stage3_param_persistence_threshold: 0``, plus 4 ZeRO-2 steps of each. A hang
fails the test: the worker's process group times out collectives after 120 s, and the launch is
killed (its whole process group) after ``WATCHDOG_S``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WATCHDOG_S = 600


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch_two_ranks(script: Path, *args: str, timeout_s: float = WATCHDOG_S) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node 2 script args`` in its own process group, killed whole on timeout."""
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(ROOT / ".cache" / "torch_extensions"), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    env.pop("RUN_STAMP", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _port(), str(script), *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{script.name} did not finish in {timeout_s} s (a hang?)\n{out[-2000:]}\n{err[-4000:]}")
    assert proc.returncode == 0, f"rc {proc.returncode}\n{out[-2000:]}\n{err[-6000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def zero3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero3")
    launch_two_ranks(ROOT / "tests" / "zero3_worker.py", str(out))
    results = json.loads((out / "results.json").read_text())
    return out, results


CASES = ("dit_self_attn", "dit_all", "recon_static", "recon_dynamic")


@pytest.mark.deepspeed
@pytest.mark.parametrize("case", CASES)
def test_zero3_finishes_and_equals_zero2(zero3_run, case):
    _, results = zero3_run
    zero2, zero3 = ({int(k): v for k, v in results[case][s].items()} for s in ("zero2", "zero3"))
    assert sorted(zero3) == list(range(1, 21)) and all(v == v and abs(v) < 1e3 for v in zero3.values())
    assert [zero3[s] for s in sorted(zero2)] == pytest.approx([zero2[s] for s in sorted(zero2)], rel=1e-5)


@pytest.mark.deepspeed
def test_zero3_build_is_partitioned_resume_is_exact_and_export_equals_zero2(zero3_run):
    out, results = zero3_run
    assert results["held_fraction"] == pytest.approx(0.5, abs=0.01)  # each rank holds half of every parameter
    runs = results["dit_self_attn"]
    assert runs["zero3_resumed"] == {k: runs["zero3"][k] for k in ("3", "4")}  # stopped at 2, resumed: identical

    from safetensors.torch import load_file

    from video4d import load_dit
    from video4d.model import select_trainable

    full3 = load_file(str(out / "dit_self_attn_zero3_resumed" / "export" / "model.safetensors"))
    full2 = load_file(str(out / "dit_self_attn_zero2" / "export" / "model.safetensors"))
    trainable3 = load_file(str(out / "dit_self_attn_zero3_resumed" / "export" / "model_trainable.safetensors"))
    init = load_file(str(out / "train_video4d_init.safetensors"))
    assert set(full3) == set(full2) == set(init) and all(t.dtype == torch.float32 for t in full3.values())
    for k in full3:  # 4 steps of ZeRO-3 (2 + resumed 2) == 4 steps of ZeRO-2
        assert torch.allclose(full3[k], full2[k], rtol=1e-5, atol=1e-7), k
    model = load_dit("tiny", weights=str(out / "dit_self_attn_zero3_resumed" / "export" / "model.safetensors"))
    select_trainable(model)
    moved = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(trainable3) == moved and all(torch.equal(trainable3[k], full3[k]) for k in moved)
    assert all(torch.equal(full3[k], init[k]) for k in full3 if k not in moved)  # frozen: untouched
    assert any(not torch.equal(full3[k], init[k]) for k in moved)
