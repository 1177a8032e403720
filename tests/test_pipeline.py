"""video4d.pipeline (generation modes, reference placement, text contexts), fourd.video_io (input
reading, resize + crop as training, clear errors) and fourd.stages (per-stage records)."""
from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import video4d.pipeline as pipeline
from fourd.stages import StageRecorder
from fourd.video_io import InputError, check_frame_count, read_images, read_video
from recon.inference import fit_frames, select_times
from video4d import load_dit, load_vae
from video4d.pipeline import GenerationSettings, encode_text, generate


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return load_dit("tiny", init="random").eval(), load_vae("tiny")


def _recording_sampler(monkeypatch):
    """Wrap video4d.pipeline.sample, keeping (shape, reference, guidance, negative, output) per call."""
    calls, real = [], pipeline.sample

    def wrapped(model, shape, context, reference=None, guidance=1.0, negative_context=None, **kw):
        out = real(model, shape, context, reference=reference, guidance=guidance, negative_context=negative_context, **kw)
        calls.append({"shape": tuple(shape), "reference": reference, "guidance": guidance, "negative": negative_context, "out": out})
        return out

    monkeypatch.setattr(pipeline, "sample", wrapped)
    return calls


def _inputs(B=1, V=3, F_=5, H=32, W=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, F_, 3, H, W, generator=g), torch.rand(B, V, 3, H, W, generator=g)


def test_monocular_generates_the_column_from_cell_00_then_samples_the_grid_with_row_and_column(models, monkeypatch):
    dit, vae = models
    calls = _recording_sampler(monkeypatch)
    video, _ = _inputs()
    ctx, neg = torch.randn(1, 8, 32), torch.randn(1, 8, 32)
    s = GenerationSettings(mode="monocular", views=3, steps=2, guidance=1.0, guidance_single=3.0)
    out = generate(dit, vae, video, ctx, s, neg)
    row = vae.encode(video[:, None])  # [1, 1, T=2, 16, 4, 4], independent of the pipeline
    assert len(calls) == 2
    first, second = calls
    assert first["shape"] == (1, 3, 1, 16, 4, 4) and first["guidance"] == 3.0 and first["negative"] is neg
    assert first["reference"].cell_mask()[0].tolist() == [[True], [False], [False]]
    torch.testing.assert_close(first["reference"].latents[:, 0, 0], row[:, 0, 0])
    assert second["shape"] == (1, 3, 2, 16, 4, 4) and second["guidance"] == 1.0
    assert second["reference"].cell_mask()[0].tolist() == [[True, True], [True, False], [True, False]]
    torch.testing.assert_close(second["reference"].latents[:, 0], row[:, 0])
    torch.testing.assert_close(second["reference"].latents[:, 1:, 0], first["out"][:, 1:, 0])
    # the output holds the references exactly and decodes to [B, V, F, 3, H, W] in [0, 1]
    torch.testing.assert_close(out["latents"][:, 0], row[:, 0])
    assert out["frames"].shape == (1, 3, 5, 3, 32, 32) and 0 <= float(out["frames"].min()) <= float(out["frames"].max()) <= 1
    torch.testing.assert_close(out["frames"], vae.decode(out["latents"]))


def test_both_places_single_frame_image_latents_in_column_zero(models, monkeypatch):
    dit, vae = models
    calls = _recording_sampler(monkeypatch)
    video, images = _inputs(seed=1)
    out = generate(dit, vae, video, torch.randn(1, 8, 32), GenerationSettings(mode="both", views=3, steps=1), None, images)
    (call,) = calls
    column = torch.stack([vae.encode(images[:, v, None, None])[:, 0, 0] for v in range(3)], dim=1)  # each image its own 1-frame video
    assert call["reference"].cell_mask()[0].tolist() == [[True, True], [True, False], [True, False]]
    torch.testing.assert_close(out["latents"][:, 1:, 0], column[:, 1:], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["latents"][:, 0], vae.encode(video[:, None])[:, 0], rtol=1e-4, atol=1e-5)


def test_row_only_uses_text_cfg_with_the_row_as_the_only_reference(models, monkeypatch):
    dit, vae = models
    calls = _recording_sampler(monkeypatch)
    video, _ = _inputs(seed=2)
    neg = torch.randn(1, 8, 32)
    generate(dit, vae, video, torch.randn(1, 8, 32), GenerationSettings(mode="row_only", views=2, steps=1, guidance_single=4.0), neg)
    (call,) = calls
    assert call["guidance"] == 4.0 and call["negative"] is neg
    assert call["reference"].cell_mask()[0].tolist() == [[True, True], [False, False]]


def test_bad_requests_fail_with_clear_errors(models):
    dit, vae = models
    video, images = _inputs()
    ctx = torch.randn(1, 8, 32)
    with pytest.raises(ValueError, match="never zeros"):
        generate(dit, vae, video, ctx, GenerationSettings(mode="row_only", views=3, guidance_single=5.0))
    with pytest.raises(ValueError, match="needs freeze-time"):
        generate(dit, vae, video, ctx, GenerationSettings(mode="both", views=3))
    with pytest.raises(ValueError, match=r"V=2"):
        generate(dit, vae, video, ctx, GenerationSettings(mode="both", views=2), None, images)
    with pytest.raises(ValueError, match="not one of"):
        GenerationSettings(mode="column")


def test_encode_text_pads_prompts_and_encodes_the_negative():
    class Encoder:  # per-prompt [L_i, D]: L_i = number of words + 1, values = word count
        def encode(self, prompts):
            return [torch.full((len(p.split()) + 1, 4), float(len(p.split()) + 1)) for p in prompts]

    ctx, neg = encode_text(Encoder(), ["a red ball", "dog"], "", text_len=6)
    assert ctx.shape == (2, 6, 4) and neg.shape == (1, 6, 4)
    assert ctx[0, :4].eq(4).all() and ctx[0, 4:].eq(0).all() and ctx[1, :2].eq(2).all() and ctx[1, 2:].eq(0).all()
    assert neg[0, 0].eq(1).all() and neg[0, 1:].eq(0).all()  # the empty prompt still has its end token, not zeros
    long, _ = encode_text(Encoder(), ["one two three four five six seven"], "", text_len=6)
    assert long.shape == (1, 6, 4) and long.eq(8).all()  # truncated to the DiT's text length


def _frames(n, h, w, seed=0):
    return (np.random.default_rng(seed).random((n, h, w, 3)) * 255).astype(np.uint8)


def _reference_fit(frames_u8, size):
    """Independent resize (aspect kept, covering) + centre crop of uint8 [N, H, W, 3]."""
    x = torch.from_numpy(frames_u8).permute(0, 3, 1, 2).float() / 255
    H, W = x.shape[-2:]
    s = max(size[0] / H, size[1] / W)
    rh, rw = max(size[0], round(H * s)), max(size[1], round(W * s))
    x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (rh - size[0]) // 2, (rw - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


def test_read_video_from_a_frame_folder_resizes_and_crops_like_training(tmp_path):
    frames = _frames(7, 40, 60)
    for i, f in enumerate(frames):
        iio.imwrite(tmp_path / f"{i:03d}.png", f)
    out = read_video(str(tmp_path), 5, (32, 32))
    torch.testing.assert_close(out, _reference_fit(frames[:5], (32, 32)))
    strided = read_video(str(tmp_path), 3, (32, 32), stride=3)
    torch.testing.assert_close(strided, _reference_fit(frames[[0, 3, 6]], (32, 32)))
    with pytest.raises(InputError, match=r"has 7 frames, 9 needed"):
        read_video(str(tmp_path), 9, (32, 32))


@pytest.mark.parametrize("ext", [".mp4", ".gif"])
def test_read_video_files_and_errors(tmp_path, ext):
    frames = _frames(9, 48, 64)
    path = tmp_path / f"clip{ext}"
    iio.imwrite(path, frames, extension=ext, **({"fps": 8, "macro_block_size": 1} if ext == ".mp4" else {}))
    out = read_video(str(path), 5, (32, 48))
    assert out.shape == (5, 3, 32, 48) and out.dtype == torch.float32 and 0 <= float(out.min()) <= float(out.max()) <= 1
    with pytest.raises(InputError, match=r"has 9 frames, 13 needed"):
        read_video(str(path), 13, (32, 48))
    with pytest.raises(InputError, match="not found"):
        read_video(str(tmp_path / "missing.mp4"), 5)
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(InputError, match="cannot decode video"):
        read_video(str(tmp_path / "bad.mp4"), 5)


def test_read_images_needs_one_image_per_view_and_frame_counts_are_4k_plus_1(tmp_path):
    for v in range(3):
        iio.imwrite(tmp_path / f"view_{v}.png", _frames(1, 36, 50, seed=v)[0])
    out = read_images(str(tmp_path), 3, (32, 32))
    torch.testing.assert_close(out[1], _reference_fit(_frames(1, 36, 50, seed=1), (32, 32))[0])
    with pytest.raises(InputError, match="has 3 images, views=4 needed"):
        read_images(str(tmp_path), 4, (32, 32))
    check_frame_count(9)
    with pytest.raises(InputError, match="4k\\+1"):
        check_frame_count(8)


def test_stage_recorder_accumulates_and_offloads():
    rec = StageRecorder("cpu", offload=True)
    model = torch.nn.Linear(2, 2)
    with rec.stage("a", model):
        assert model.weight.device.type == "cpu"
    with pytest.raises(RuntimeError):
        with rec.stage("a"):
            raise RuntimeError("boom")  # a failing stage is still recorded
    with rec.stage("b", None):
        pass
    assert list(rec.stages) == ["a", "b"]
    assert rec.stages["a"]["seconds"] >= 0 and rec.stages["a"]["cpu_rss_peak_mib"] > 10
    assert "cuda_max_allocated_mib" not in rec.stages["a"] and "a" in rec.table()


def test_reconstruction_takes_every_nth_frame_at_patch_multiples():
    assert select_times(9, 4) == [0, 4, 8] and select_times(10, 4) == [0, 4, 8] and select_times(1, 4) == [0]
    frames = torch.rand(2, 3, 3, 32, 48)
    fitted = fit_frames(frames, (28, 28))
    torch.testing.assert_close(fitted[1, 2], _reference_fit((frames[1, 2:3].permute(0, 2, 3, 1) * 255).round().byte().numpy(), (28, 28))[0],
                               atol=3e-3, rtol=0)
    with pytest.raises(ValueError, match="multiples of the patch size 14"):
        fit_frames(frames, (28, 30))
