"""Generic loop on a toy task, plain engine: LR schedule, grad accumulation, NaN skipping, resume state."""
from __future__ import annotations

import json
from pathlib import Path
import math
import os

import pytest
import torch
from torch import nn

from fourd.data.loader import TaskData
from fourd.train.distributed import DistEnv, strip_local_rank_args
from fourd.train.engine import OptimConfig, PlainEngine
from fourd.train.loop import DebugConfig, LoopConfig, train
from fourd.train.schedule import StepSchedule, build_lr_scheduler, warmup_cosine


class ToyData(torch.utils.data.Dataset):
    """Sample ``key.index``: a vector from a generator seeded by the index (any worker reproduces it)."""

    def __init__(self, dim: int):
        self.dim = dim

    def __getitem__(self, key):
        return torch.randn(self.dim, generator=torch.Generator().manual_seed(1000 + key.index))


class ToyTask:
    """Linear regression with dropout and generator noise: exercises every RNG the loop restores."""

    def __init__(self, dim: int = 6, seed: int = 0):
        self.dim = dim
        g = torch.Generator().manual_seed(seed)
        self.w_true = torch.randn(dim, 1, generator=g)
        self.frames_seen: list[int] = []

    def build_model(self, placement=None) -> nn.Module:
        return nn.Sequential(nn.Linear(self.dim, 16), nn.Dropout(0.1), nn.Linear(16, 1))

    def on_step(self, step: int) -> None:
        self.frames_seen.append(StepSchedule([[0, 5], [3, 9]])(step))

    def data(self, micro_batch: int):
        return TaskData(ToyData(self.dim), self.collate)

    def collate(self, xs):
        x = torch.stack(xs)
        return x, x @ self.w_true

    def loss(self, model, batch, generator):
        x, y = batch
        noise = 0.01 * torch.randn(y.shape, generator=generator)
        return ((model(x) - y - noise) ** 2).mean(), {"noise": float(noise.abs().mean())}

    def batch_size_and_tokens(self, batch):
        return batch[0].shape[0], batch[0].numel()

    def preview(self, model, step):
        return torch.rand(3, 8, 8)

    def export_metadata(self):
        return {"task": "toy"}


def _engine_factory(**optim):
    cfg = OptimConfig(**{"lr": 1e-2, "warmup_steps": 2, "total_steps": 8, "grad_clip": 1.0, **optim})
    return lambda model: PlainEngine(model, cfg, torch.device("cpu"))


def _metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_warmup_cosine_values():
    assert warmup_cosine(0, 4, 12) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 12) == pytest.approx(1.0)
    assert warmup_cosine(8, 4, 12) == pytest.approx(0.5)  # half way through the cosine
    assert warmup_cosine(12, 4, 12, min_ratio=0.1) == pytest.approx(0.1)
    assert warmup_cosine(50, 4, 12, min_ratio=0.1) == pytest.approx(0.1)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_lr_scheduler(opt, 4, 12)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [2.0 * warmup_cosine(s, 4, 12) for s in range(6)]
    assert seen == pytest.approx(expected)
    assert seen[5] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 1 / 8)))


def test_warmup_constant_schedule_is_the_video_default():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_lr_scheduler(opt, 4, 12, schedule="constant")
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.5, 1.0, 1.5] + [2.0] * 17)  # warm-up, then constant past total_steps
    with pytest.raises(ValueError, match="LR schedule"):
        build_lr_scheduler(opt, 4, 12, schedule="linear")
    from omegaconf import OmegaConf

    video = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs" / "train_video4d.yaml")
    assert video.optim.lr_schedule == "constant"


def test_step_schedule_and_errors():
    s = StepSchedule([[0, 29], [4000, 61]])
    assert (s(0), s(3999), s(4000), s(10**6)) == (29, 29, 61, 61)
    with pytest.raises(ValueError, match="start at step 0"):
        StepSchedule([[10, 29]])
    with pytest.raises(ValueError, match="increase"):
        StepSchedule([[0, 29], [0, 61]])


def test_strip_local_rank_args():
    argv = ["train.py", "--local_rank=1", "optim.lr=1e-4", "--local-rank", "3", "-m"]
    assert strip_local_rank_args(argv) == ["train.py", "optim.lr=1e-4", "-m"]


def test_grad_accumulation_matches_bigger_batch():
    torch.manual_seed(0)
    model_a = nn.Linear(4, 3)
    model_b = nn.Linear(4, 3)
    model_b.load_state_dict(model_a.state_dict())
    x, y = torch.randn(2, 4), torch.randn(2, 3)
    cfg = dict(lr=0.1, warmup_steps=1, total_steps=10, grad_clip=0.5)
    big = PlainEngine(model_a, OptimConfig(**cfg, accumulation=1), torch.device("cpu"))
    acc = PlainEngine(model_b, OptimConfig(**cfg, accumulation=2), torch.device("cpu"))
    for _ in range(3):
        big.backward(((model_a(x) - y) ** 2).mean())
        r_big = big.step()
        for i in range(2):
            acc.backward(((model_b(x[i : i + 1]) - y[i : i + 1]) ** 2).mean())
        r_acc = acc.step()
        assert r_big.grad_norm == pytest.approx(r_acc.grad_norm, rel=1e-5)
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_nan_step_is_skipped_counted_and_not_applied(tmp_path):
    task = ToyTask()
    cfg = LoopConfig(steps=4, micro_batch=2, checkpoint_every=0, progress=False, export="none")
    result = train(task, _engine_factory(), cfg, str(tmp_path), DistEnv(), DebugConfig(nan_loss_at_steps=[2]))
    rows = _metrics(tmp_path)
    assert result.skipped_steps == 1
    assert [r["skipped_steps"] for r in rows] == [0, 1, 1, 1]
    assert rows[1]["loss"] == "nan" and rows[1]["nonfinite_losses"] == 1
    # the skipped step neither updated weights nor advanced the LR schedule
    assert rows[2]["lr"] == pytest.approx(rows[1]["lr"])
    ckpt = torch.load(os.path.join(result.checkpoint, "engine", "engine_state.pt"), weights_only=True)
    assert ckpt["scheduler"]["last_epoch"] == 3


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_engine_skips_nonfinite_loss_and_grads(bad):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    engine = PlainEngine(model, OptimConfig(lr=0.1, warmup_steps=1, accumulation=2), torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3)
    engine.backward(model(x).pow(2).mean())
    engine.backward(model(x).pow(2).mean() * bad)  # poisons the whole step
    assert engine.step().applied is False
    model.weight.register_hook(lambda g: g * bad)  # finite loss, non-finite gradient
    for _ in range(2):
        engine.backward(model(x).pow(2).mean())
    result = engine.step()
    assert result.applied is False and not math.isfinite(result.grad_norm)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert engine.optimizer.state == {} and engine.scheduler.last_epoch == 0


def test_progressive_schedule_hook_and_previews(tmp_path):
    task = ToyTask()
    cfg = LoopConfig(steps=4, micro_batch=1, checkpoint_every=0, preview_every=2, progress=False, export="both")
    result = train(task, _engine_factory(accumulation=2), cfg, str(tmp_path), DistEnv())
    assert task.frames_seen == [5, 5, 5, 9]
    data = torch.load(os.path.join(result.checkpoint, "rank_00000.pt"), weights_only=True)["data"]
    assert data == {"position": 8, "skipped": 0}  # 4 steps x 2 micro-batches x 1 sample
    assert sorted(os.listdir(tmp_path / "samples")) == ["preview_00000002.png", "preview_00000004.png"]
    from safetensors.torch import load_file

    full = load_file(result.exports[0])
    trainable = load_file(result.exports[1])
    assert set(full) == {"0.weight", "0.bias", "2.weight", "2.bias"} == set(trainable)
    assert os.listdir(tmp_path / "tb")


def test_plot_metrics_overlays_runs_and_names_what_is_missing(tmp_path):
    """Several runs' metrics.jsonl in one PNG (CLI: run dirs, then the output); a missing key or a
    wrong number of labels raises naming the problem."""
    import imageio.v3 as iio

    from fourd.train.observe import main as observe_main, plot_metrics

    runs = []
    for name, scale in (("narrow", 1.0), ("wide", 0.5)):
        run = tmp_path / name
        run.mkdir()
        with open(run / "metrics.jsonl", "w") as f:
            for step in range(1, 41):
                f.write(json.dumps({"step": step, "loss": scale / step}) + "\n")
        runs.append(str(run))
    out = tmp_path / "curves.png"
    observe_main([*runs, str(out), "--smooth", "5", "--log-y", "--labels", "narrow DiT", "wide DiT"])
    image = iio.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0
    with pytest.raises(ValueError, match="2 runs"):
        plot_metrics(runs, str(tmp_path / "x.png"), labels=["only one"])
    with pytest.raises(ValueError, match=r"narrow/metrics.jsonl has no \['psnr'\]"):
        plot_metrics(runs, str(tmp_path / "x.png"), keys=("loss", "psnr"))
    with pytest.raises(SystemExit):
        observe_main([str(out)])
