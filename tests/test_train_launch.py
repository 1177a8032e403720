"""The real entry point launch/train_video4d.py on the tiny model: plain path (crash in save +
resume, Hydra multirun) and 2-process DeepSpeed ZeRO-2 over gloo (NaN skip, export that loads
with video4d.load_dit, hard stop + resume under the ``deepspeed`` launcher)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fourd.train.observe import losses_by_step, read_metrics

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "launch" / "train_video4d.py")
TINY = ["data.height=16", "data.width=16", "data.num_scenes=4", "train.progress=false", "train.log_every=1", "optim.warmup_steps=2"]


def _env(run_dir=None):
    env = dict(os.environ)
    env.update(TORCH_EXTENSIONS_DIR=str(ROOT / ".cache" / "torch_extensions"), DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop("RUN_STAMP", None)
    if run_dir is not None:
        env["RUN_DIR"] = str(run_dir)
    return env


def _run(args, run_dir=None, expect_rc=0, cwd=None):
    proc = subprocess.run(args, cwd=cwd or ROOT, env=_env(run_dir), capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect_rc, f"rc {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_plain_crash_in_save_then_resume_is_exact(tmp_path):
    common = [sys.executable, SCRIPT, "launcher=plain", "train.steps=4", "train.checkpoint_every=2", *TINY]
    _run(common, tmp_path / "ref")
    crashed = tmp_path / "crashed"
    _run([*common, "debug.crash_in_save_at_step=4"], crashed, expect_rc=17)
    ckpts = crashed / "checkpoints"
    assert (ckpts / "latest").read_text().strip() == "step_00000002"
    assert (ckpts / ".tmp-step_00000004").is_dir() and not (ckpts / "step_00000004").exists()
    _run(common, crashed)  # resume=auto picks step 2
    ref, got = losses_by_step(tmp_path / "ref"), losses_by_step(crashed)
    assert sorted(got) == [1, 2, 3, 4]
    assert [got[s] for s in (3, 4)] == [ref[s] for s in (3, 4)]
    assert json.loads((crashed / "result.json").read_text())["step"] == 4
    assert (ckpts / "latest").read_text().strip() == "step_00000004" and not (ckpts / ".tmp-step_00000004").exists()
    from fourd.weights import read_metadata

    trained = json.loads(read_metadata(str(tmp_path / "ref" / "export" / "model.safetensors"))["trained_grid"])
    assert trained == {"views": 2, "frames": 5, "height": 16, "width": 16}  # the grid inference compares with (configs/data/procedural.yaml)


def test_hydra_multirun_two_jobs(tmp_path):
    _run([sys.executable, SCRIPT, "-m", "launcher=plain", "train.steps=2", "train.export=none", "optim.lr=1e-4,2e-4", *TINY], tmp_path / "sweep")
    for job, lr in (("0", 1e-4), ("1", 2e-4)):
        job_dir = tmp_path / "sweep" / job
        assert json.loads((job_dir / "result.json").read_text())["step"] == 2
        assert "training finished at step 2" in (job_dir / "train_video4d_rank0.log").read_text()
        rows = read_metrics(job_dir)
        assert rows[-1]["lr"] == pytest.approx(lr * 1.0)  # warm-up of 2 steps reached the peak


@pytest.mark.deepspeed
def test_deepspeed_zero2_two_ranks_nan_export_and_resume(tmp_path):
    common = ["launcher=deepspeed", "deepspeed=zero2", "train.steps=4", "train.checkpoint_every=2", "train.export=both", "debug.nan_loss_at_steps=[2]", *TINY]
    ref = tmp_path / "ref"
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", _port(), SCRIPT, *common], ref)
    result = json.loads((ref / "result.json").read_text())
    assert result["step"] == 4 and result["skipped_steps"] == 1
    rows = read_metrics(ref)
    assert [r["skipped_steps"] for r in rows] == [0, 1, 1, 1] and rows[1]["loss"] == "nan"
    assert (ref / "checkpoints" / "step_00000004" / "rank_00001.pt").is_file()

    from safetensors import safe_open

    from video4d import load_dit
    from video4d.model import select_trainable

    export = ref / "export" / "model.safetensors"
    with safe_open(str(export), "pt") as f:
        config = json.loads(f.metadata()["dit_config"])
    model = load_dit(config, weights=str(export))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        init = load_dit(config, init="random")
    select_trainable(init, ["self_attn", "cross_view_attn", "sync"])
    trained = dict(model.named_parameters())
    changed = {n for n, p in init.named_parameters() if not torch.equal(p, trained[n])}
    assert changed == {n for n, p in init.named_parameters() if p.requires_grad}  # only self-attention moved
    from safetensors.torch import load_file

    assert set(load_file(str(ref / "export" / "model_trainable.safetensors"))) == changed

    resumed = tmp_path / "resumed"
    launcher = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", _port(), SCRIPT, *common]
    proc = subprocess.run([*launcher, "debug.stop_after_step=3"], cwd=ROOT, env=_env(resumed), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and not (resumed / "result.json").exists()
    # a newer checkpoint with a DeepSpeed file cut short (as a power loss can leave it): resume=auto sets it aside
    shutil.copytree(ref / "checkpoints" / "step_00000004", resumed / "checkpoints" / "step_00000004")
    (cut,) = sorted((resumed / "checkpoints" / "step_00000004" / "engine").rglob("zero_pp_rank_1_*optim_states.pt"))
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (resumed / "checkpoints" / "latest").write_text("step_00000004\n")
    _run(launcher, resumed)
    got, want = losses_by_step(resumed), losses_by_step(ref)
    assert [got[s] for s in (3, 4)] == [want[s] for s in (3, 4)]
    log = (resumed / "train_video4d_rank0.log").read_text()
    assert f"step_00000004: {cut.relative_to(resumed / 'checkpoints' / 'step_00000004')} has" in log and "resuming from step_00000002: 2 steps lost" in log
