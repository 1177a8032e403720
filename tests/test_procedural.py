"""Captioned procedural scenes (fourd.data.procedural): determinism, the held-out seed rule,
captions against the rendered pixels and geometry, paper-style static samples, V = 1 clips and the
caption field of the scene format."""
import re

import pytest
import torch

from fourd.data import read_scene, write_scene
from fourd.data.procedural import HELD_OUT_SEED_START, PALETTE, ProceduralSource, procedural_scene, scene_seed

H = W = 32
_CAPTION = re.compile(r"(?:an?) (\w+) (sphere|cube) (rests|slides|bounces|spins)")


def _parse(caption: str) -> tuple[list[tuple[str, str, str]], str]:
    """Objects (colour, shape, motion) and the camera phrase of a caption."""
    things, camera = caption.split(" . ")
    return _CAPTION.findall(things), camera


def test_deterministic_per_seed_and_distinct_across_seeds():
    a = ProceduralSource(views=1, height=H, width=W).sample(5, 5)
    b = ProceduralSource(views=1, height=H, width=W).sample(5, 5)
    c = ProceduralSource(views=1, height=H, width=W).sample(6, 5)
    assert torch.equal(a["frames"], b["frames"]) and a["caption"] == b["caption"]
    assert not torch.allclose(a["frames"], c["frames"])
    # the same seed gives the same scene whatever the source's caching or clip length asks first
    assert procedural_scene(a["seed"], num_frames=5, height=H, width=W).caption == a["caption"]


def test_held_out_rule_never_overlaps_training():
    train = {scene_seed(i, "train", seed) for seed in (0, 7, HELD_OUT_SEED_START - 3) for i in (*range(50), 10**9, 10**12 + 5)}
    held = {scene_seed(i, "held_out", seed) for seed in (0, 7) for i in (*range(50), 10**9)}
    assert max(train) < HELD_OUT_SEED_START <= min(held)
    assert not train & held
    assert scene_seed(13, "train", num_scenes=8) == 5  # a finite scene set cycles
    assert ProceduralSource(views=1, height=H, width=W, split="held_out").sample(0, 1)["seed"] == HELD_OUT_SEED_START
    with pytest.raises(ValueError, match="split"):
        scene_seed(0, "test")


def _chromaticity(rgb: torch.Tensor) -> torch.Tensor:
    return rgb / rgb.sum(-1, keepdim=True).clamp_min(1e-6)


@pytest.mark.parametrize("seed", [0, 1, 3, 4, 11])
def test_caption_matches_rendered_colours_motions_and_camera(seed):
    s = procedural_scene(seed, num_views=1, num_frames=9, height=48, width=48)
    objects, camera = _parse(s.caption)
    assert len(objects) == len(s.object_radii) and s.caption.endswith(camera)
    names = list(PALETTE)
    palette = _chromaticity(torch.tensor([PALETTE[n] for n in names]))
    pixels = s.frames[0].permute(0, 2, 3, 1)  # [F, H, W, 3]
    for k, (color, _shape, motion) in enumerate(objects):
        visible = pixels[s.masks[0] == k + 1]
        if len(visible) >= 10:  # colour from the pixels: nearest palette chromaticity (shading only scales RGB)
            mean = _chromaticity(visible).mean(0)
            assert names[int((palette - mean).norm(dim=-1).argmin())] == color
        c = s.object_centers[k]  # [F, 3]
        moved_xy = (c[:, :2] - c[0, :2]).norm(dim=-1).max()
        moved_z = (c[:, 2] - c[0, 2]).abs().max()
        assert (moved_xy > 0.05) == (motion == "slides"), (motion, moved_xy)
        assert (moved_z > 0.05) == (motion == "bounces"), (motion, moved_z)
    E = s.extrinsics[0]  # [F, 3, 4]
    centres = -(E[:, :, :3].transpose(1, 2) @ E[:, :, 3:]).squeeze(-1)  # camera centres [F, 3]
    step = centres[-1] - centres[0]
    if camera == "the camera is fixed":
        assert torch.allclose(E, E[:1].expand_as(E))
    elif camera.startswith("the camera orbits"):
        dist = centres.norm(dim=-1)
        assert torch.allclose(dist, dist[0].expand_as(dist), atol=1e-4) and step.norm() > 0.5
        rightward = float(step @ E[0, 0, :3])  # displacement along the first camera's x (right) axis
        assert (rightward > 0) == camera.endswith("right")
    else:
        approach = float(centres[-1].norm() - centres[0].norm())
        assert (approach < 0) == camera.endswith("in") and abs(approach) > 0.5


def test_static_samples_are_the_moving_camera_frames_duplicated_over_time():
    source = ProceduralSource(views=4, height=H, width=W, static_fraction=1.0)
    s = source.sample(2, 5)
    assert s["kind"] == "static" and s["drop_freeze_time_frame_cond"]
    f = s["frames"]
    assert f.shape == (4, 5, 3, H, W)
    assert torch.equal(f, f[:, :1].expand_as(f))  # each row is one trajectory frame held over time
    assert all(not torch.equal(f[v, 0], f[v + 1, 0]) for v in range(3))
    E = s["extrinsics"][:, 0]  # [V, 3, 4]: the views are successive positions of one orbiting camera
    centres = -(E[:, :, :3].transpose(1, 2) @ E[:, :, 3:]).squeeze(-1)
    steps = (centres[1:] - centres[:-1]).norm(dim=-1)
    assert torch.allclose(steps, steps[:1].expand_as(steps), rtol=1e-3) and steps.min() > 0.05
    objects, camera = _parse(s["caption"])
    assert all(m == "rests" for _, _, m in objects) and camera.startswith("the camera orbits")


def test_dynamic_grid_and_single_view_shapes():
    grid = ProceduralSource(views=3, height=H, width=W, static_fraction=0.0).sample(0, 5)
    assert grid["kind"] == "dynamic" and not grid["drop_freeze_time_frame_cond"]
    assert grid["frames"].shape == (3, 5, 3, H, W) and grid["depth"].shape == (3, 5, H, W)
    ext = grid["extrinsics"]
    assert torch.equal(ext, ext[:, :1].expand_as(ext))  # fixed cameras per view
    assert "three fixed cameras" in grid["caption"]
    one = ProceduralSource(views=1, height=H, width=W).sample(3, 9)
    assert one["kind"] == "monocular" and not one["drop_freeze_time_frame_cond"]
    assert one["frames"].shape == (1, 9, 3, H, W) and one["extrinsics"].shape == (1, 9, 3, 4)
    assert one["intrinsics"].shape == (1, 9, 3, 3) and float(one["frames"].min()) >= 0 and float(one["frames"].max()) <= 1
    with pytest.raises(ValueError, match="num_views"):
        procedural_scene(0, num_views=2, kind="monocular")


def test_caption_round_trip_through_the_scene_format():
    scene = procedural_scene(4, num_views=2, num_frames=2, height=16, width=16, kind="dynamic")
    write_scene(scene, "memory://procedural_caption/scene")
    back = read_scene("memory://procedural_caption/scene")
    assert back.caption == scene.caption and back.caption.startswith("a")
    scene.caption = None
    write_scene(scene, "memory://procedural_caption/none")
    assert read_scene("memory://procedural_caption/none").caption is None


def test_every_caption_word_is_in_the_tiny_text_encoders_word_list():
    from fourd.data.procedural import scene_spec, caption
    from video4d.text_encoder.tokenizer import tiny_words

    words = set(tiny_words())
    used = {w for seed in range(200) for kind, views in (("monocular", 1), ("dynamic", 4), ("static", 3))
            for w in caption(scene_spec(seed, kind), views).split()}
    assert used <= words, sorted(used - words)


def test_homography_samples_warp_the_seeds_monocular_clip_into_pseudo_views():
    source = ProceduralSource(views=3, height=H, width=W, static_fraction=0.0, homography_fraction=1.0)
    s = source.sample(4, 5)
    assert s["kind"] == "homography" and not s["drop_freeze_time_frame_cond"]
    mono = procedural_scene(s["seed"], 1, 5, H, W, "monocular")
    f = s["frames"]
    assert f.shape == (3, 5, 3, H, W) and s["caption"] == mono.caption
    assert torch.equal(f[0], mono.frames[0])  # view 0 is the clip itself
    for v in (1, 2):  # the others are warps of it: different pixels, same colours
        assert not torch.allclose(f[v], f[0], atol=1e-3)
        assert (f[v].mean((0, 2, 3)) - f[0].mean((0, 2, 3))).abs().max() < 0.15
    assert torch.isnan(s["extrinsics"]).all() and torch.isnan(s["depth"]).all()
    kinds = [ProceduralSource(views=2, static_fraction=0.3, homography_fraction=0.3).kind_of(seed) for seed in range(200)]
    assert 40 < kinds.count("homography") < 80 and 40 < kinds.count("static") < 80
    with pytest.raises(ValueError, match="homography_fraction"):
        ProceduralSource(views=2, static_fraction=0.8, homography_fraction=0.3)
