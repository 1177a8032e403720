"""The whole chain on held-out procedural scenes: monocular video -> generated grid -> Gaussians -> novel views.

Scene: ``procedural_scene(seed, 2V - 1, F, H, W, "dynamic", arc_degrees)``: ``2V - 1`` fixed cameras
evenly on the arc. Its even views ``0, 2, ..., 2V - 2`` are exactly the ``V``-view scene of the same
seed (same camera parameters, ``s = linspace(0, 1, .)`` hits every other point; a test checks it),
the grid the DiT was trained on; the odd views, each halfway between two grid views, are the
novel-view targets. The DiT reads the caption of the ``V``-view scene (``"... three fixed cameras"``).

Per scene: view 0's video (the grid's fixed-view row) is the only input; the grid ``[V, F]`` is
generated in monocular mode (:func:`eval.protocols.generation.generate_monocular`); frames
``select_times(F, frame_stride)`` of every view (``frame_stride = 4``: frame 0 and the last frame of
each later latent chunk, one timestep per latent frame as in ``launch/infer.py``) are fitted to the
reconstructor's ``img_size`` (:func:`recon.inference.fit_frames`, as its training data), the
reconstructor sees the ``V`` views x ``T`` timesteps, and the targets are rendered with test-time
cameras (:func:`eval.protocols.recon.render_test_time_cameras`; pass 2 sees the target frames,
never their cameras). Targets are the odd views at the same frames, fitted the same way.

Rows: the chain; the reconstructor on the ground-truth grid (the upper bound of the reconstruction
part); the NVS baselines (:func:`eval.protocols.baselines.nvs_baselines`) from the ground-truth grid
views and from the generated grid views; and the baseline that uses only the chain's input, copying
the input video's frame at the same time into every target (:data:`COPY_INPUT_VIDEO`). Margins
(``margin_db``) are over the best baseline from the ground-truth grid (reference rows: they see views
the chain does not); the chain and the reconstructor on the GT grid also get ``margin_input_video_db``,
their margin over :data:`COPY_INPUT_VIDEO` (issue 21 item 5's measure).
"""
from __future__ import annotations

from typing import Iterable

from omegaconf import DictConfig

from eval.protocols.baselines import NVS_BASELINES, nvs_baselines
from eval.protocols.generation import generate_monocular
from eval.protocols.models import Models
from eval.protocols.recon import render_test_time_cameras
from eval.protocols.scoring import MetricSpec, Scoreboard

__all__ = ["CHAIN", "RECON_ON_GT", "COPY_INPUT_VIDEO", "chain_views", "chain_scene", "chain_table"]

CHAIN = "chain: monocular video -> generated grid -> Gaussians"
RECON_ON_GT = "reconstructor on the GT grid (upper bound of the recon part)"
COPY_INPUT_VIDEO = "copy the input video's frame at the same time (monocular input only)"


def chain_views(views: int) -> tuple[list[int], list[int]]:
    """The chain's cameras for a ``views``-view grid: ``2 views - 1`` cameras on the arc, the even ones
    the grid's views (inputs), the odd ones the halfway targets."""
    return list(range(0, 2 * views - 1, 2)), list(range(1, 2 * views - 1, 2))


def chain_scene(seed: int, views: int, frames: int, height: int, width: int, arc_degrees: float = 90.0) -> dict:
    """The ground truth of one chain scene: ``grid [V, F, 3, H, W]`` (even cameras), ``targets
    [V - 1, F, 3, H, W]`` (odd cameras, halfway), ``caption`` (of the V-view scene), ``name``."""
    from fourd.data.procedural import caption, procedural_scene, scene_spec

    if views < 2:
        raise ValueError(f"chain.views={views}: the chain needs at least 2 grid views to have a target between them")
    s = procedural_scene(seed, 2 * views - 1, frames, height, width, "dynamic", arc_degrees=arc_degrees)
    inputs, targets = chain_views(views)
    return {"grid": s.frames[inputs], "targets": s.frames[targets], "caption": caption(scene_spec(seed, "dynamic"), views), "name": s.name}


def chain_table(cfg: DictConfig, models: Models, seeds: Iterable[int]) -> Scoreboard:
    """Score the chain (module docstring) on the scenes of ``seeds`` with ``cfg.benchmark.chain`` (views,
    frames, height, width, arc_degrees, frame_stride) and ``cfg.sampler``; returns one table."""
    from recon.inference import fit_frames, select_times

    c, s = cfg.benchmark.chain, cfg.sampler
    board = Scoreboard(MetricSpec(lpips_weights=cfg.metrics.lpips_weights, lpips_net=cfg.metrics.lpips_net))
    size = (models.recon.cfg.img_size,) * 2  # the reconstructor's training resolution (recon_config img_size)
    times = select_times(c.frames, c.frame_stride)
    inputs, targets = chain_views(c.views)
    negative = models.negative_context if s.guidance_single != 1.0 else None
    bg, backend = list(cfg.render.background), cfg.render.backend
    for i, seed in enumerate(seeds):
        scene = chain_scene(seed, c.views, c.frames, c.height, c.width, c.arc_degrees)
        generated = generate_monocular(models.dit, models.vae, scene["grid"][0], c.views, models.context(scene["caption"]),
                                       s.steps, s.shift, s.seed + i, s.guidance_single, negative)  # [V, F, 3, H, W]
        grids = {"GT grid": fit_frames(scene["grid"][:, times], size), "generated grid": fit_frames(generated[:, times], size)}
        gt = fit_frames(scene["targets"][:, times], size)  # [V - 1, T, 3, h, w]
        for method, grid in ((CHAIN, grids["generated grid"]), (RECON_ON_GT, grids["GT grid"])):
            x_in, x_tgt = grid[None].to(models.device), gt[None].to(models.device)
            board.add_grid(method, render_test_time_cameras(models.recon, x_in, x_tgt, bg, backend)["renders"][0].cpu(), gt)
        for source, grid in grids.items():
            for name, pred in nvs_baselines(grid, inputs, targets).items():
                board.add_grid(f"{name} ({source})", pred, gt)
        board.add_grid(COPY_INPUT_VIDEO, grids["GT grid"][:1].expand_as(gt), gt)  # GT grid view 0 = the input video
    board.add_margins([f"{name} (GT grid)" for name in NVS_BASELINES], "best trivial baseline (from the GT grid) over the benchmark")
    video = board.mean_psnr(COPY_INPUT_VIDEO)
    for method in (CHAIN, RECON_ON_GT):
        board.extra[method]["margin_input_video_db"] = board.mean_psnr(method) - video
    board.notes["monocular-only baseline"] = f"{COPY_INPUT_VIDEO} ({video:.2f} dB; column 'margin over copying the input video')"
    return board
