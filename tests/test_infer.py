"""launch/infer.py and infer4d.job end to end on the CPU with tiny random models: every
output written and readable in every mode, two-stage runs, failures that leave nothing complete,
batch mode and rank sharding, clear errors."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
from hydra import compose, initialize_config_dir
from plyfile import PlyData

import infer4d.job as job
from fourd.data import generate_scene, read_scene
from fourd.formats import PLY_PROPERTIES, load_cameras_json, save_video
from video4d import load_vae

ROOT = Path(__file__).resolve().parents[1]
V, F, H, W, RH, PATH = 2, 5, 32, 32, 28, 3  # views, frames, grid size, reconstructor size, novel-view frames


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """A tiny held-out input in the example layout: video.mp4 (view 0), freeze_time/, caption.txt; and VAE weights."""
    root = tmp_path_factory.mktemp("example")
    scene = generate_scene(4242, V, F, 36, 44)
    save_video(str(root / "clip.mp4"), scene.frames[0].permute(0, 2, 3, 1), fps=8)
    (root / "freeze").mkdir()
    for v in range(V):
        iio.imwrite(root / "freeze" / f"view_{v}.png", (scene.frames[v, 0].permute(1, 2, 0) * 255).round().byte().numpy())
    (root / "caption.txt").write_text("a red ball\n")
    torch.manual_seed(0)
    from safetensors.torch import save_file

    save_file(load_vae("tiny").state_dict(), str(root / "vae.safetensors"))
    return root


def _cfg(example, *overrides):
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("infer", overrides=[
            f"input.video={example / 'clip.mp4'}", f"views={V}", f"frames={F}", f"height={H}", f"width={W}",
            "sampler.steps=1", "sampler.progress=false", f"reconstructor.height={RH}", f"reconstructor.width={RH}",
            f"reconstructor.path_frames={PATH}", f"vae.weights={example / 'vae.safetensors'}", "device=cpu",
            # the tiny random models (the defaults are the shipped checkpoints; tests/test_shipped_models.py runs those)
            "dit.preset=tiny", "dit.weights=null", "vae.config=tiny", "reconstructor.config=tiny-4d", "reconstructor.weights=null",
            "input.freeze_time=null", "sampler.shift=5.0", "sampler.guidance_single=5.0", *overrides])


def _check_reconstruction(out: Path, T: int):
    for t in range(T):
        ply = PlyData.read(str(out / f"gaussians_t{t:04d}.ply"))
        assert [p.name for p in ply["vertex"].properties] == list(PLY_PROPERTIES)
        assert ply["vertex"].count == V * RH * RH  # one Gaussian per input pixel of every view
    assert not (out / f"gaussians_t{T:04d}.ply").exists()
    cams = load_cameras_json(str(out / "cameras.json"))
    assert cams["extrinsics"].shape == (V, 3, 4) and cams["intrinsics"].shape == (V, 3, 3) and (cams["width"], cams["height"]) == (RH, RH)
    torch.testing.assert_close(cams["extrinsics"][0], torch.eye(3, 4, dtype=torch.float64), atol=1e-5, rtol=0)  # first camera = identity
    assert iio.imread(out / "novel_views.mp4").shape == (PATH, RH, RH, 3)
    assert iio.imread(out / "novel_times.mp4").shape == (T, RH, RH, 3)


@pytest.mark.parametrize("mode,freeze", [("auto", False), ("auto", True), ("row_only", False)])
def test_every_mode_writes_every_output_readably(example, tmp_path, mode, freeze):
    extra = [f"input.freeze_time={example / 'freeze'}"] if freeze else []
    assert job.run_inference(_cfg(example, f"mode={mode}", *extra), str(tmp_path)) == 0
    out = tmp_path / "clip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch_summary.json", "clip"]  # no partial dir left
    grid = iio.imread(out / "grid.png")
    assert grid.shape == (V * (H + 2) + 2, F * (W + 2) + 2, 3)  # every frame of every view
    for v in range(V):
        assert iio.imread(out / "views" / f"view_{v}.mp4").shape == (F, H, W, 3)
    scene = read_scene(str(out / "scene"))
    assert scene.frames.shape == (V, F, 3, H, W) and scene.caption == "a red ball"
    cell = lambda v, t: torch.from_numpy(grid[2 + v * (H + 2) : 2 + v * (H + 2) + H, 2 + t * (W + 2) : 2 + t * (W + 2) + W]).float()  # noqa: E731
    for v, t in ((0, 0), (V - 1, F - 1), (1, 2)):  # row = view, column = frame
        assert (cell(v, t) - scene.frames[v, t].permute(1, 2, 0) * 255).abs().max() <= 1.0
    _check_reconstruction(out, T=2)  # frames 0 and 4 with frame_stride 4
    summary = json.loads((out / "summary.json").read_text())
    expected = {"read_input", "text_encode", "vae_encode", "sample", "vae_decode", "write_grid", "reconstruct", "load_models", "hash_weights"}
    expected |= {"sample_column"} if mode == "auto" and not freeze else set()
    assert set(summary["stages"]) == expected
    assert all(s["seconds"] >= 0 and s["cpu_rss_peak_mib"] > 0 for s in summary["stages"].values())
    vae_hash = hashlib.sha256((example / "vae.safetensors").read_bytes()).hexdigest()
    assert summary["weights"]["vae"]["sha256"] == vae_hash and summary["weights"]["dit"]["url"] is None
    assert summary["settings"]["mode"] == mode and summary["grid"]["reconstructed_timesteps"] == 2


def test_generate_then_reconstruct_the_written_scene(example, tmp_path):
    assert job.run_inference(_cfg(example, "stages=generate"), str(tmp_path / "gen")) == 0
    gen = tmp_path / "gen" / "clip"
    assert (gen / "grid.png").exists() and not (gen / "cameras.json").exists()
    scene_url = str(gen / "scene")
    assert job.run_inference(_cfg(example, "stages=reconstruct", f"input.video={scene_url}"), str(tmp_path / "rec")) == 0
    out = tmp_path / "rec" / "scene"
    _check_reconstruction(out, T=2)
    assert set(json.loads((out / "summary.json").read_text())["stages"]) == {"load_models", "read_input", "reconstruct"}


def test_failure_mid_run_leaves_nothing_complete_looking(example, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected reconstructor failure")

    monkeypatch.setattr(job, "_reconstruct_item", broken)  # the grid files are written before this stage
    with pytest.raises(RuntimeError, match="injected reconstructor failure"):
        job.run_inference(_cfg(example), str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # neither the item folder nor its partial folder


def test_batch_survives_a_bad_item_and_ranks_shard_the_items(example, tmp_path, monkeypatch):
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# video | freeze_time | prompt\n{example / 'missing.mp4'}\n{example / 'clip.mp4'} | | a dog\n")
    out = tmp_path / "out"
    assert job.run_inference(_cfg(example, f"input.list={listing}", "stages=generate"), str(out)) == 1
    rows = json.loads((out / "batch_summary.json").read_text())["items"]
    assert [(r["item"], r["status"]) for r in rows] == [("0000_missing", "failed"), ("0001_clip", "ok")]
    assert "input video not found" in rows[0]["detail"]
    assert read_scene(str(out / "0001_clip" / "scene")).caption == "a dog"
    assert sorted(p.name for p in out.iterdir()) == ["0001_clip", "batch_summary.json"]

    names = [f"{example / f'missing_{i}.mp4'}" for i in range(5)]
    listing.write_text("\n".join(names) + "\n")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert job.run_inference(_cfg(example, f"input.list={listing}", "stages=reconstruct"), str(tmp_path / "ranked")) == 2
    rows = json.loads((tmp_path / "ranked" / "batch_summary_rank1.json").read_text())["items"]
    assert [r["item"] for r in rows] == ["0001_missing_1", "0003_missing_3"]


def test_bad_settings_exit_non_zero_with_one_line(example, tmp_path, capsys):
    from launch.infer import main

    with pytest.raises(SystemExit) as exit_info:
        main(_cfg(example, "frames=8", f"output.dir={tmp_path}"))  # the Hydra entry point, config passed in
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == ["infer: error: InputError: frames=8 is not 4k+1 (use 1, 5, 9, 17, ...)"]
    (tmp_path / "o" / "clip").mkdir(parents=True)
    with pytest.raises(job.InputError, match="exists: choose another output.dir or set output.overwrite=true"):
        job.run_inference(_cfg(example, "stages=generate"), str(tmp_path / "o"))
    assert not any((tmp_path / "o" / "clip").iterdir())
    with pytest.raises(SystemExit):
        main(_cfg(example, "input.video=/no/such/clip.mp4", f"output.dir={tmp_path}"))
    assert capsys.readouterr().err.strip().splitlines() == ["infer: error: InputError: input video not found: /no/such/clip.mp4"]
