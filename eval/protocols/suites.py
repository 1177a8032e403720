"""The benchmarks: which scenes, which protocol, which tables (one :class:`Scoreboard` per table).

Each benchmark function takes the composed eval config (``cfg``; its ``benchmark`` node is one file
of ``configs/benchmark/``), a :class:`Models` and the run's output dir (unused by most) and returns
``{table name: Scoreboard}``:

- ``synthetic``: synthetic 4D scenes of held-out seeds (no download): generation on held-out cells,
  and dynamic NVS (test-time cameras; oracle cameras in a separate table).
- ``motion``: generation on long held-out grids of moving objects, the motion stated per frame index
  and a per-pixel oracle of the copies (:mod:`eval.protocols.motion`).
- ``objaverse`` / ``nvidia_dynamic``: generation on held-out cells (Objaverse-style renders in the
  scene format; NVIDIA Dynamic Scenes' 12 cameras).
- ``llff`` / ``tanks_temples``: static NVS with each of ``benchmark.input_counts`` input views.
- ``neural3d``: dynamic NVS with ``benchmark.input_views`` input views, the other cameras as targets.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from eval.protocols import datasets
from eval.protocols.baselines import GENERATION_BASELINES, NVS_BASELINES, generation_baselines, nvs_baselines
from eval.protocols.generation import generate_grid, generate_monocular, scored_cells, vae_round_trip
from eval.protocols.models import Models
from eval.protocols.motion import MOTION_TABLE, ORACLE, best_of_copies, motion_table, moving_masks
from eval.protocols.recon import render_ground_truth_geometry, render_oracle_cameras, render_test_time_cameras
from eval.protocols.scoring import MetricSpec, Scoreboard

__all__ = ["Models", "BENCHMARKS", "generation_table", "nvs_tables", "select_views", "held_out_seeds"]

OURS_GEN = "ours (4D DiT)"
OURS_NVS = "ours (test-time cameras)"
OURS_ORACLE = "ours (oracle GT cameras + GT depth scale)"
GT_GEOMETRY = "GT depth + GT cameras, a Gaussian per input pixel (oracle ceiling)"
GT_GEOMETRY_FILLED = "the same, uncovered pixels from the mean of the 2 neighbours (oracle ceiling)"


def _spec(cfg: DictConfig) -> MetricSpec:
    return MetricSpec(lpips_weights=cfg.metrics.lpips_weights, lpips_net=cfg.metrics.lpips_net)


def _progress(items: Iterable, cfg: DictConfig, desc: str) -> Iterable:
    items = list(items)
    return tqdm(items, desc=desc, disable=not cfg.progress, total=len(items))


def select_views(num_views: int, count: Optional[int]) -> list[int]:
    """``count`` view indices spread evenly over ``num_views`` (both ends included; all when None)."""
    if count is None or count >= num_views:
        return list(range(num_views))
    return sorted({round(i * (num_views - 1) / max(count - 1, 1)) for i in range(count)})


# ------------------------------------------------------------------------------ protocols
def generation_table(cfg: DictConfig, models: Models, clips: Iterable[datasets.Clip], board: Optional[Scoreboard] = None,
                     method: str = OURS_GEN, baselines: bool = True) -> Scoreboard:
    """Generation on held-out cells of each clip's ``[V, F]`` grid (:mod:`eval.protocols.generation`),
    each clip sampled from its caption's context (:meth:`Models.context`). One model row per mode of
    ``cfg.generation.modes``: ``both`` (named ``method``: row + column given) and ``monocular`` (named
    ``method + " monocular"``: the video of view 0 only), on the same scored cells. ``baselines`` adds
    the VAE round trip and copy rows, and the same-view copy decoded through the VAE (a diagnostic: a
    copy that pays the codec's loss as the model does); every non-copy row then gets its margin over the better copy
    baseline over the benchmark (:meth:`Scoreboard.add_margins`)."""
    board = board or Scoreboard(_spec(cfg))
    s, ref = cfg.sampler, cfg.reference
    modes = list(cfg.generation.modes)
    if "monocular" in modes and (ref.view != 0 or ref.time != 0):
        raise ValueError(f"generation.modes has monocular, which gives view 0's video and generates time 0: set reference.view=0 and "
                         f"reference.time=0 (got {ref.view}, {ref.time})")
    if set(modes) - {"both", "monocular"} or not modes:
        raise ValueError(f"generation.modes must be a non-empty subset of [both, monocular], got {modes}")
    negative = models.negative_context if "monocular" in modes and s.guidance_single != 1.0 else None
    fvd_sets: dict[str, list[torch.Tensor]] = {}
    gt_grids: list[torch.Tensor] = []
    for i, clip in enumerate(clips):
        gt = clip.frames
        mask = scored_cells(gt.shape[0], gt.shape[1], ref.view, ref.time)
        context = models.context(clip.caption)
        preds = {}
        if "both" in modes:
            preds[method] = generate_grid(models.dit, models.vae, gt, context, s.steps, s.shift, s.seed + i, ref.view, ref.time)
        if "monocular" in modes:
            preds[f"{method} monocular"] = generate_monocular(models.dit, models.vae, gt[0], gt.shape[0], context, s.steps, s.shift,
                                                              s.seed + i, s.guidance_single, negative)
        if baselines:
            preds["VAE round trip (upper bound)"] = vae_round_trip(models.vae, gt)
            copies = generation_baselines(gt, ref.view or 0, ref.time or 0)
            preds.update(copies)
            # diagnostic: the same-view copy through the same codec as the model (isolates the VAE's loss)
            preds[f"{GENERATION_BASELINES[0]} through the VAE"] = vae_round_trip(models.vae, copies[GENERATION_BASELINES[0]])
        for name, pred in preds.items():
            board.add_grid(name, pred, gt, mask)
            _grid_metrics(board, name, pred, clip)
            if cfg.metrics.i3d_weights is not None:
                fvd_sets.setdefault(name, []).append(pred)
        if cfg.metrics.i3d_weights is not None:
            gt_grids.append(gt)
    _fvd(cfg, models, board, fvd_sets, gt_grids)
    board.add_margins(GENERATION_BASELINES, "better copy baseline over the benchmark")
    return board


def _grid_metrics(board: Scoreboard, method: str, pred: torch.Tensor, clip: datasets.Clip) -> None:
    """VBench temporal flickering of the fixed-view videos and, when the clip has ground-truth depth
    and cameras, the reprojection L1 under that geometry (:mod:`eval.consistency`)."""
    from eval.consistency import Geometry, reprojection_consistency
    from eval.flicker import grid_flickering

    board.add_scalar(method, "flicker", float(grid_flickering(pred[None]).mean()))
    if clip.depth is not None and clip.extrinsics is not None:
        geometry = Geometry(clip.depth[None], clip.extrinsics[None], clip.intrinsics[None])
        board.add_scalar(method, "reproj_l1", float(reprojection_consistency(pred[None].float(), geometry)["mean"][0]))


def _fvd(cfg: DictConfig, models: Models, board: Scoreboard, sets: dict[str, list[torch.Tensor]], gt_grids: list[torch.Tensor]) -> None:
    """FVD-F / -V (and -Diag / FV4D from 2 grids on) of each method's grids against the ground truth with
    the I3D of ``metrics.i3d_weights``; without that file the rows read ``"n/a (no I3D weights file)"``."""
    from eval.fvd import fvd_family
    from eval.i3d import load_i3d

    if cfg.metrics.i3d_weights is None:
        for method in board.values:
            board.extra.setdefault(method, {})["FVD"] = "n/a (no I3D weights file)"
        return
    gt = torch.stack(gt_grids)
    net = load_i3d(weights=cfg.metrics.i3d_weights, device=models.device)
    variants = ("FVD-F", "FVD-V", "FVD-Diag", "FV4D") if len(gt) >= 2 else ("FVD-F", "FVD-V")
    for method, grids in sets.items():
        scores = fvd_family(torch.stack(grids).to(models.device), gt.to(models.device), net, variants)
        board.extra.setdefault(method, {}).update({k: float(v) for k, v in scores.items()})


def nvs_tables(cfg: DictConfig, models: Models, clips: Iterable[tuple[datasets.Clip, list[int], list[int], Optional[torch.Tensor]]],
               boards: Optional[dict[str, Scoreboard]] = None, suffix: str = "", method: str = OURS_NVS,
               baselines: bool = True) -> dict[str, Scoreboard]:
    """Novel-view synthesis on ``(clip, input views, target views, depth [V, T, H, W] or None)``: the
    test-time table (the model's row named ``method``, plus the baselines when ``baselines``), and an
    oracle-cameras table (same baselines, and with them the ground-truth-geometry ceilings of
    :func:`eval.protocols.recon.render_ground_truth_geometry`) when depth is given. ``models.recon =
    None`` leaves the model's rows out (baselines and ceilings only)."""
    boards = boards if boards is not None else {}
    main = boards.setdefault(f"nvs{suffix}", Scoreboard(_spec(cfg)))
    bg, backend = list(cfg.render.background), cfg.render.backend
    for clip, inputs, targets, depth in clips:
        x_in = clip.frames[inputs][None].to(models.device)
        x_tgt = clip.frames[targets][None].to(models.device)
        gt = clip.frames[targets]
        if models.recon is not None:
            main.add_grid(method, render_test_time_cameras(models.recon, x_in, x_tgt, bg, backend)["renders"][0].cpu(), gt)
        copies = nvs_baselines(clip.frames[inputs], inputs, targets) if baselines else {}
        for name, pred in copies.items():
            main.add_grid(name, pred, gt)
        if depth is None:
            continue
        batch = {"inputs": x_in, "targets": x_tgt, "in_depth": depth[inputs][None].to(models.device), "scenes": [clip.name]}
        for key, views in (("in", inputs), ("tgt", targets)):
            batch[f"{key}_ext"] = clip.extrinsics[views][None].to(models.device)
            batch[f"{key}_K"] = clip.intrinsics[views][None].to(models.device)
        oracle = boards.setdefault(f"nvs{suffix} (oracle cameras)", Scoreboard(_spec(cfg)))
        if models.recon is not None:
            oracle.add_grid(method.replace(OURS_NVS, OURS_ORACLE), render_oracle_cameras(models.recon, batch, bg, backend)[0].cpu(), gt)
        for name, pred in copies.items():
            oracle.add_grid(name, pred, gt)
        if baselines:
            renders, alphas = (x[0].cpu() for x in render_ground_truth_geometry(batch, backend=backend))
            oracle.add_grid(GT_GEOMETRY, renders, gt)
            oracle.add_grid(GT_GEOMETRY_FILLED, renders + (1 - alphas) * copies[NVS_BASELINES[2]], gt)
    for board in boards.values():
        board.add_margins(NVS_BASELINES, "best trivial baseline over the benchmark")
    return boards


# ----------------------------------------------------------------------------- benchmarks
def held_out_seeds(b: DictConfig, moving_only: bool = False) -> list[int]:
    """Seeds of the ``benchmark.num_scenes`` held-out scenes: ``fourd.data.procedural.scene_seed(i,
    "held_out", benchmark.seed)`` for i = 0, 1, ... (>= 1,000,000; every training source draws below
    that); ``moving_only`` skips the seeds whose procedural scene has no moving object (copying a
    still frame would score them perfectly)."""
    from fourd.data.procedural import scene_seed, scene_spec

    seeds, i = [], 0
    while len(seeds) < b.num_scenes:
        seed = scene_seed(i, "held_out", b.seed)
        if not moving_only or any(o.motion != "rests" for o in scene_spec(seed, "dynamic").objects):
            seeds.append(seed)
        i += 1
    return seeds


def _generation_clip(seed: int, g: DictConfig):
    """``(clip, scene)``: held-out procedural scene ``seed`` as the generation grid ``g`` (views, frames,
    height, width, arc_degrees) describes (:func:`fourd.data.procedural.procedural_scene`)."""
    from fourd.data.procedural import procedural_scene

    s = procedural_scene(seed, g.views, g.frames, g.height, g.width, "dynamic", arc_degrees=g.arc_degrees)
    return datasets.Clip(s.name, s.frames, s.extrinsics, s.intrinsics, s.depth, caption=s.caption), s


def synthetic(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """Held-out synthetic scenes: generation on the video model's data (:func:`fourd.data.procedural.procedural_scene`),
    dynamic NVS on the reconstructor's (:func:`fourd.data.generate_scene`) and, when ``benchmark.chain``
    is set, the whole chain (:mod:`eval.protocols.chain`) on the generation scenes' seeds."""
    from fourd.data import generate_scene

    b = cfg.benchmark
    gen_clips = (_generation_clip(seed, b.generation)[0] for seed in _progress(held_out_seeds(b, moving_only=True), cfg, "synthetic: generation"))
    boards = {"generation (held-out cells)": generation_table(cfg, models, gen_clips)}
    n = b.nvs
    inputs, targets = _split(n.input_views + n.target_views, n.input_views)

    def nvs_clips():
        for seed in _progress(held_out_seeds(b), cfg, "synthetic: nvs"):
            s = generate_scene(seed, n.input_views + n.target_views, n.frames, n.height, n.width, "dynamic", arc_degrees=n.arc_degrees)
            yield datasets.Clip(s.name, s.frames, s.extrinsics, s.intrinsics), inputs, targets, s.depth

    boards = nvs_tables(cfg, models, nvs_clips(), boards, suffix=f" (dynamic, {n.input_views} inputs)")
    if b.get("chain"):
        from eval.protocols.chain import chain_table

        seeds = _progress(held_out_seeds(b, moving_only=True), cfg, "synthetic: chain")
        boards[f"whole chain (monocular video -> {b.chain.views}-view grid -> novel views)"] = chain_table(cfg, models, seeds)
    return boards


def _split(num_views: int, num_inputs: int) -> tuple[list[int], list[int]]:
    from recon.train_task import split_views

    return split_views(num_views, num_inputs)


def objaverse(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """Objaverse-style renders (scene format under ``benchmark.root``): generation on held-out cells."""
    b = cfg.benchmark
    scenes = datasets.list_scene_dirs(b.root, "scene.json")[: b.max_scenes]
    clips = (datasets.read_scene_format(u, (b.height, b.width), b.frames, b.views) for u in _progress(scenes, cfg, "objaverse"))
    return {"generation (held-out cells)": generation_table(cfg, models, clips)}


def nvidia_dynamic(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """NVIDIA Dynamic Scenes: generation on held-out cells of ``benchmark.views`` of the 12 cameras."""
    b = cfg.benchmark
    scenes = datasets.list_scene_dirs(b.root, "dense")[: b.max_scenes]

    def clips():
        for u in _progress(scenes, cfg, "nvidia_dynamic"):
            clip = datasets.read_nvidia_dynamic(u, (b.height, b.width), b.frames)
            views = select_views(clip.frames.shape[0], b.views)
            yield datasets.Clip(clip.name, clip.frames[views], clip.extrinsics[views], clip.intrinsics[views])

    return {"generation (held-out cells)": generation_table(cfg, models, clips())}


def _static_nvs(cfg: DictConfig, models: Models, scenes: list[str], read: Callable[[str], datasets.Clip],
                split: Callable[[datasets.Clip], tuple[list[int], list[int]]]) -> dict[str, Scoreboard]:
    """Static NVS with each input count of ``benchmark.input_counts``: targets from ``split``, inputs
    spread evenly over the candidate views."""
    boards: dict[str, Scoreboard] = {}
    for url in _progress(scenes, cfg, cfg.benchmark.name):
        clip = read(url)
        candidates, targets = split(clip)
        for count in cfg.benchmark.input_counts:
            inputs = [candidates[i] for i in select_views(len(candidates), count)]
            nvs_tables(cfg, models, [(clip, inputs, targets, None)], boards, suffix=f" ({count} inputs)")
    return boards


def llff(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """LLFF: targets every ``benchmark.hold``-th image (LLFF's standard hold-out), inputs among the others."""
    b = cfg.benchmark
    scenes = datasets.list_scene_dirs(b.root, "poses_bounds.npy")[: b.max_scenes]

    def split(clip):
        views = list(range(clip.frames.shape[0]))
        return [v for v in views if v % b.hold], [v for v in views if v % b.hold == 0]

    return _static_nvs(cfg, models, scenes, lambda u: datasets.read_llff(u, (b.height, b.width), b.image_dir), split)


def tanks_temples(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """Tanks and Temples (NeRF++ layout): targets = the test split, inputs among the train split."""
    b = cfg.benchmark
    scenes = datasets.list_scene_dirs(b.root, "test")[: b.max_scenes]

    def split(clip):
        return ([v for v, s in enumerate(clip.splits) if s == "train"], [v for v, s in enumerate(clip.splits) if s == "test"])

    return _static_nvs(cfg, models, scenes, lambda u: datasets.read_tanks_temples(u, (b.height, b.width)), split)


def neural3d(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """Neural 3D Video: ``benchmark.input_views`` cameras spread over the rig as inputs, the rest targets."""
    b = cfg.benchmark
    scenes = datasets.list_scene_dirs(b.root, "poses_bounds.npy")[: b.max_scenes]

    def clips():
        for u in _progress(scenes, cfg, "neural3d"):
            clip = datasets.read_neural3d(u, (b.height, b.width), b.frames, b.frame_stride, b.start_frame)
            inputs, targets = _split(clip.frames.shape[0], b.input_views)
            yield clip, inputs, targets, None

    return nvs_tables(cfg, models, clips(), suffix=f" (dynamic, {b.input_views} inputs)")


def motion(cfg: DictConfig, models: Models, out_dir: str) -> dict[str, Scoreboard]:
    """Long grids of moving objects with the motion stated (:mod:`eval.protocols.motion`, its docstring
    names the tables) on ``benchmark.num_scenes`` held-out scenes with a moving object."""
    from fourd.data.procedural import scene_spec

    b, ref = cfg.benchmark, cfg.reference
    clips = []
    for seed in _progress(held_out_seeds(b, moving_only=True), cfg, "motion: scenes"):
        clip, s = _generation_clip(seed, b.generation)
        ids = [k + 1 for k, o in enumerate(scene_spec(seed, "dynamic").objects) if o.motion != "rests"]
        clips.append((clip, moving_masks(s.masks, ids)))
    board = generation_table(cfg, models, _progress([c for c, _ in clips], cfg, "motion: generation"))
    for clip, _ in clips:
        gt = clip.frames
        board.add_grid(ORACLE, best_of_copies(gt, generation_baselines(gt, ref.view, ref.time).values()), gt,
                       scored_cells(gt.shape[0], gt.shape[1], ref.view, ref.time))
    board.add_margins(GENERATION_BASELINES, "better copy baseline over the benchmark")  # again: the oracle row gets its margin
    mono = f"{OURS_GEN} monocular"
    if mono in board.values:
        same_time = board.mean_psnr(GENERATION_BASELINES[1])
        margin = board.extra[mono]["margin_same_time_db"] = board.mean_psnr(mono) - same_time
        board.notes["monocular margin"] = f"{margin:+.2f} dB over {GENERATION_BASELINES[1]} ({same_time:.2f} dB; column 'margin over copy same time')"
    table = Scoreboard(MetricSpec(lpips_weights=cfg.metrics.lpips_weights, lpips_net=cfg.metrics.lpips_net))
    motion_table(table, clips, ref.view)
    return {"generation (held-out cells)": board, MOTION_TABLE: table}


BENCHMARKS: dict[str, Callable[[DictConfig, Models, str], dict[str, Scoreboard]]] = {
    "synthetic": synthetic, "motion": motion, "objaverse": objaverse, "nvidia_dynamic": nvidia_dynamic,
    "llff": llff, "tanks_temples": tanks_temples, "neural3d": neural3d,
}
