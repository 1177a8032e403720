"""Generation as library code: a fixed-view video (+ optional freeze-time images) and a prompt in,
a synchronized multi-view grid of frames ``[B, V, F, 3, H, W]`` out.

Data flow (paper §3, App. B): the input video is the fixed-view row ``v = 0`` and the freeze-time
images are the column ``t = 0`` of the ``V x T`` latent grid (:mod:`video4d.grid`)::

    video [B, F, 3, H, W] --VAE (one causal video)--> row latents [B, 1, T, C, h, w]
    images [B, V, 3, H, W] --VAE (each a 1-frame video)--> column latents [B, V, 1, C, h, w]
    reference cells placed -> video4d.sampler.sample -> latents [B, V, T, C, h, w]
    --VAE decode (temporal chunks)--> frames [B, V, F, 3, H, W]

Modes (:data:`MODES`):

- ``"both"``: row and column given (two references; the paper samples without CFG, ``guidance``).
- ``"monocular"``: video + prompt only. First a ``V x 1`` grid with cell ``(0, 0)`` known (the
  video's first latent frame) generates the freeze-time column with the same model
  (``guidance_single``), then the full grid is sampled with row and column as in ``"both"``.
- ``"row_only"``: only the row is given; one pass with text CFG (``guidance_single``, App. B).

The causal VAE encodes the first frame of a video on its own, so a single image's latent equals the
first latent frame of a video starting with it: column and row latents are interchangeable at (0, 0).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torchvision.utils import make_grid

from fourd.stages import StageRecorder
from video4d.grid import ReferenceCells, ReferenceLatents
from video4d.sampler import sample
from video4d.text_context import pad_contexts

__all__ = ["MODES", "GenerationSettings", "encode_text", "generate", "frames_to_image"]

MODES = ("monocular", "both", "row_only")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """How a grid is sampled.

    ``mode``: one of :data:`MODES`; ``views``: V (rows of the grid); ``steps``: Euler steps;
    ``shift``: timestep shift; ``guidance``: CFG scale when both references are given (1 = off,
    the paper's choice); ``guidance_single``: CFG scale of single-reference passes (monocular's
    column pass, ``row_only``); ``seed``: starting-noise seed (the column pass uses ``seed + 1``);
    ``decode_chunk``: latent frames the VAE decodes per streamed step; ``max_videos``: views the
    VAE encodes/decodes at once (None = all); ``progress``: tqdm bar while sampling.
    """

    mode: str = "monocular"
    views: int = 4
    steps: int = 40
    shift: float = 5.0
    guidance: float = 1.0
    guidance_single: float = 5.0
    seed: int = 0
    decode_chunk: int = 1
    max_videos: Optional[int] = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"generation mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.views < 2:
            raise ValueError(f"views={self.views}: a 4D grid needs at least 2 views")
        if self.steps < 1 or self.decode_chunk < 1:
            raise ValueError(f"steps={self.steps} and decode_chunk={self.decode_chunk} must be >= 1")

    def uses_cfg(self) -> bool:
        """Whether some pass of this mode runs classifier-free guidance (needs a negative context)."""
        if self.mode == "both":
            return self.guidance != 1.0
        return self.guidance_single != 1.0 or (self.mode == "monocular" and self.guidance != 1.0)


def encode_text(encoder: nn.Module, prompts: Sequence[str], negative_prompt: str, text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts -> contexts ``[B, text_len, D]`` and the CFG negative ``[1, text_len, D]`` (float32),
    zero-padded like Wan2.1. ``encoder.encode(list[str]) -> list[[L_i, D]]`` (the umT5 encoder of
    :func:`video4d.load_text_encoder`); the negative is an encoded prompt, never zeros. Tokens past
    the DiT's ``text_len`` are dropped with a warning (Wan2.1's encoder and DiT both use 512)."""
    encoded = encoder.encode([*prompts, negative_prompt])
    counts = encoder.count_tokens([*prompts, negative_prompt]) if hasattr(encoder, "count_tokens") else [c.shape[0] for c in encoded]
    read = min(text_len, getattr(getattr(encoder, "config", None), "text_len", text_len))
    if max(counts) > read:
        log.warning("a prompt has %d tokens; the text encoder and the DiT read the first %d (DiT text_len=%d), the rest is dropped",
                    max(counts), read, text_len)
    contexts = pad_contexts([c[:text_len].float() for c in encoded], text_len)
    return contexts[:-1], contexts[-1:]


def _encode(vae: nn.Module, frames: torch.Tensor, max_videos: Optional[int]) -> torch.Tensor:
    return vae.encode(frames.to(next(vae.parameters()).device), max_videos=max_videos)


@torch.no_grad()
def generate(
    dit: nn.Module,
    vae: nn.Module,
    video: torch.Tensor,
    context: torch.Tensor,
    settings: GenerationSettings,
    negative_context: Optional[torch.Tensor] = None,
    freeze_time: Optional[torch.Tensor] = None,
    recorder: Optional[StageRecorder] = None,
) -> dict[str, torch.Tensor]:
    """Sample the grid of ``settings.mode`` (module docstring) and decode it.

    ``video``: the fixed-view row, frames ``[B, F, 3, H, W]`` in [0, 1] (``F = 4k + 1``, H and W
    multiples of 16 = VAE factor x patch size); ``freeze_time``: ``[B, V, 3, H, W]`` (needed for
    ``"both"``, refused otherwise); ``context`` ``[B or 1, L, D]`` and ``negative_context``
    ``[1, L, D]`` (needed when a pass uses CFG) on the compute device. ``recorder`` times the stages
    ``vae_encode``, ``sample_column`` (monocular), ``sample``, ``vae_decode`` and moves the models.
    Returns ``{"frames" [B, V, F, 3, H, W] in [0, 1] (CPU, float32), "latents" [B, V, T, C, h, w]
    (CPU), "reference_cells" bool [V, T]}``.

    Sequence parallelism (``dit.sequence_parallel`` set, :meth:`video4d.model.WanDiT4D.set_sequence_parallel`):
    every rank of the group calls this with the same inputs; each encodes the references itself (no
    communication, the same time as one rank encoding), the ranks sample one grid together, decode
    ``ceil(V / N)`` views each, and the group's first rank gathers the frames: the others return
    ``frames`` None.
    """
    s = settings
    recorder = recorder or StageRecorder(context.device)
    if video.dim() != 5 or video.shape[2] != 3:
        raise ValueError(f"video must be [B, F, 3, H, W], got {list(video.shape)}")
    if (s.mode == "both") != (freeze_time is not None):
        raise ValueError(f"mode={s.mode!r} {'needs' if s.mode == 'both' else 'does not take'} freeze-time images")
    if freeze_time is not None and tuple(freeze_time.shape) != (video.shape[0], s.views, *video.shape[2:]):
        raise ValueError(f"freeze-time images must be [B, V={s.views}, 3, H, W] = {[video.shape[0], s.views, *video.shape[2:]]}, "
                         f"got {list(freeze_time.shape)}")
    if s.uses_cfg() and negative_context is None:
        raise ValueError(f"mode={s.mode!r} uses CFG (guidance != 1): give a negative context (an encoded prompt, never zeros)")
    B, V = video.shape[0], s.views

    with recorder.stage("vae_encode", vae):
        row = _encode(vae, video[:, None], s.max_videos)  # [B, 1, T, C, h, w]
        column = None if freeze_time is None else _encode(vae, freeze_time[:, :, None], s.max_videos)  # [B, V, 1, C, h, w]
    row = row.to(context.device)
    T, latent_cell = row.shape[2], row.shape[3:]

    def run(shape: tuple[int, ...], reference: ReferenceLatents, guidance: float, seed: int) -> torch.Tensor:
        return sample(dit, shape, context, reference=reference, steps=s.steps, shift=s.shift, guidance=guidance,
                      negative_context=negative_context, seed=seed, progress=s.progress)

    if s.mode == "monocular":
        with recorder.stage("sample_column", dit):
            known = row.new_zeros(B, V, 1, *latent_cell)
            known[:, 0, 0] = row[:, 0, 0]
            cells = ReferenceCells(view=0, time=None).mask(V, 1, device=row.device)  # only cell (0, 0)
            column = run((B, V, 1, *latent_cell), ReferenceLatents(known, cells), s.guidance_single, s.seed + 1)
    with recorder.stage("sample", dit):
        refs = row.new_zeros(B, V, T, *latent_cell)
        refs[:, 0] = row[:, 0]
        if column is not None:
            refs[:, 1:, 0] = column[:, 1:, 0].to(row.device)  # (0, 0) stays the video's own first frame
        cells = ReferenceCells(view=0, time=None if column is None else 0).mask(V, T, device=row.device)
        guidance = s.guidance_single if column is None else s.guidance
        latents = run((B, V, T, *latent_cell), ReferenceLatents(refs, cells), guidance, s.seed)
    with recorder.stage("vae_decode", vae):
        frames = _decode(vae, latents, video.shape, s, getattr(dit, "sequence_parallel", None))
    return {"frames": None if frames is None else frames.cpu(), "latents": latents.cpu(), "reference_cells": cells.cpu()}


def _decode(vae: nn.Module, latents: torch.Tensor, video_shape: torch.Size, s: GenerationSettings, sp) -> Optional[torch.Tensor]:
    """Latents ``[B, V, T, C, h, w]`` -> float32 frames ``[B, V, F, 3, H, W]`` (``video_shape``: the
    input row ``[B, F, 3, H, W]``). With a sequence-parallel group ``sp`` each rank decodes
    ``ceil(V / N)`` views and the group's first rank gathers them (None on the others); whether
    every rank decoded is agreed on before the gather, so a failed rank leaves no rank waiting."""
    device = next(vae.parameters()).device
    if sp is None:
        return vae.decode(latents.to(device), chunk_latents=s.decode_chunk, max_videos=s.max_videos).float()
    B, V = latents.shape[:2]
    k = -(-V // sp.size)
    mine = latents[:, sp.rank * k : (sp.rank + 1) * k]
    part = torch.zeros(B, k, *video_shape[1:], device=device)  # this rank's views, zero-padded to k
    error = None
    try:
        if mine.shape[1]:
            part[:, : mine.shape[1]] = vae.decode(mine.to(device), chunk_latents=s.decode_chunk, max_videos=s.max_videos).float()
    except Exception as e:  # raised below, once the group knows
        error = e
    failed = torch.tensor([int(error is not None)], device=device)
    dist.all_reduce(failed, group=sp.group)
    if error is not None:
        raise error
    if int(failed):
        raise RuntimeError("VAE decoding failed on another rank of the sequence-parallel group (its log has the error)")
    parts = [torch.empty_like(part) for _ in range(sp.size)] if sp.rank == 0 else None
    dist.gather(part, parts, dst=dist.get_global_rank(sp.group, 0), group=sp.group)
    return torch.cat(parts, dim=1)[:, :V] if sp.rank == 0 else None


def frames_to_image(frames: torch.Tensor, padding: int = 2) -> torch.Tensor:
    """Frames ``[V, T, 3, H, W]`` in [0, 1] -> one uint8 image (rows = views, columns = times) of
    ``[V*(H+p)+p, T*(W+p)+p, 3]`` with ``p = padding`` white pixels between cells."""
    image = make_grid(frames.flatten(0, 1).float(), nrow=frames.shape[1], padding=padding, pad_value=1.0).permute(1, 2, 0)
    return (image * 255).round().clamp(0, 255).to(torch.uint8)
