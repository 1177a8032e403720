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
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fourd.train.hydra_app import compose_training
from tests.test_train_launch import _port

ROOT = Path(__file__).resolve().parents[1]
WATCHDOG_S = 600


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
def test_offload_equals_zero2(zero3_run):
    _, results = zero3_run
    runs = results["dit_self_attn"]
    if "zero3_offload_cpu_adam" not in runs:
        print("DeepSpeed's CPU Adam op is not built in TORCH_EXTENSIONS_DIR: only torch AdamW on offloaded states was run")
    for name in (k for k in runs if k.startswith("zero3_offload")):
        assert list(runs[name].values()) == pytest.approx(list(runs["zero2"].values()), rel=1e-5), name


@pytest.mark.deepspeed
def test_memory_plan_matches_the_measured_peak_on_two_ranks(zero3_run):
    from tests.test_memory_plan import CHECKED, check_rows

    _, results = zero3_run
    assert len(results["memory"]) == len(CHECKED)  # rank 0's rows (rank 1 measures too)
    check_rows(results["memory"])


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


def _compose(*overrides):
    return compose_training("train_video4d", ["train.progress=false", *overrides])


@pytest.mark.parametrize("overrides, message", [
    (["deepspeed.zero_optimization.stage=4"], "deepspeed.zero_optimization.stage=4 is not supported: allowed 0, 1, 2, 3"),
    (["deepspeed=zero2", "+deepspeed.zero_optimization.offload_param.device=cpu"],
     "deepspeed.zero_optimization.offload_param.device=cpu needs deepspeed.zero_optimization.stage >= 3 (got 2): allowed stages 3"),
    (["deepspeed=zero3_offload", "deepspeed.zero_optimization.offload_optimizer.device=disk"],
     "deepspeed.zero_optimization.offload_optimizer.device='disk' is not supported: allowed none, cpu, nvme"),
    (["deepspeed=zero3_offload", "deepspeed.zero_optimization.offload_param.device=nvme"],
     "deepspeed.zero_optimization.offload_param.device=nvme needs deepspeed.zero_optimization.offload_param.nvme_path"),
    (["launcher.precision=fp16"], "launcher.precision='fp16' is not supported: allowed auto, bf16, fp32"),
    (["+deepspeed.fp16.enabled=true"], "deepspeed.fp16.enabled=true is not supported"),
    (["launcher.engine=megatron"], "launcher.engine='megatron' is not supported: allowed plain, deepspeed"),
])
def test_settings_the_run_cannot_honour_fail_before_any_model(tmp_path, overrides, message):
    from fourd.train.hydra_app import run_task

    def no_task(env):
        raise AssertionError("the task (and its model) must not be built")

    with pytest.raises(ValueError) as info:
        run_task(_compose(*overrides), no_task, str(tmp_path))
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_bf16_without_a_cuda_gpu_is_refused(tmp_path):
    from fourd.train.hydra_app import run_task

    with pytest.raises(ValueError, match="launcher.precision=bf16 needs a CUDA GPU with bf16 support.*allowed on this machine: auto, fp32"):
        run_task(_compose("launcher.precision=bf16"), None, str(tmp_path))
