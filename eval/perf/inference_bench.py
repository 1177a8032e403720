"""End-to-end inference per stage on tiny random models (``python -m eval.perf``'s ``inference`` section).

:func:`video4d.pipeline.generate` (monocular mode) with its :class:`fourd.stages.StageRecorder`, then
:func:`recon.inference.reconstruct` and the renders of every view; one row per stage (seconds, peak memory).
"""
from __future__ import annotations

import torch

__all__ = ["perf_section"]


def perf_section(quick: bool, device: str, work: str) -> tuple[str, list[dict]]:
    """Quick: 3 views x 5 frames at 32 x 32, 2 Euler steps, reconstruction at 28 x 28; full: 4 x 9 at 64, 8 steps, 56."""
    from eval.perf.cli import Progress
    from fourd.stages import StageRecorder
    from recon.inference import reconstruct, render_views
    from recon.model import load_reconstructor
    from video4d import load_dit, load_vae
    from video4d.pipeline import GenerationSettings, generate
    from video4d.text_context import empty_context

    progress = Progress("inference", 3, quick)
    torch.manual_seed(0)
    dit = load_dit("tiny", init="random", device=device).eval()
    vae = load_vae("tiny", device=device)
    recon = load_reconstructor("tiny-4d").to(device).eval()
    progress.step("models built")
    V, F, size = (3, 5, 32) if quick else (4, 9, 64)
    video = torch.rand(1, F, 3, size, size)
    settings = GenerationSettings(mode="monocular", views=V, steps=2 if quick else 8, guidance_single=1.0)
    recorder = StageRecorder(device)
    context = empty_context(1, dit.config.text_len, dit.config.text_dim, device=device)
    frames = generate(dit, vae, video, context, settings, recorder=recorder)["frames"][0]  # [V, F, 3, H, W]
    progress.step("grid generated")
    side = 28 if quick else 56
    grid = torch.nn.functional.interpolate(frames.flatten(0, 1), size=(side, side), mode="bilinear", antialias=True)
    grid = grid.reshape(V, F, 3, side, side).to(device)
    with torch.no_grad(), recorder.stage("reconstruct", recon):
        scene = reconstruct(recon, grid)
    with torch.no_grad(), recorder.stage("render_views"):
        render_views(scene["gaussians"], scene["extrinsics"][None], scene["intrinsics"][None], side, side, backend="auto")
    progress.step("reconstructed and rendered")
    rows = [{"stage": name, **record} for name, record in recorder.stages.items()]
    return f"End-to-end inference per stage (tiny models, {V} views x {F} frames, {settings.steps} Euler steps)", rows
