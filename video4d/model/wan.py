"""The Wan2.1 DiT applied to a 4D grid of latents (synchronized multi-view video).

State-dict keys and shapes equal those of the official ``WanModel`` (T2V) for the "fused" and
"full" variants; the other variants add ``blocks.i.cross_view_attn.*`` or ``blocks.i.sync.*``.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from fourd.sharded import gathered, is_partitioned, numel
from video4d.grid import GridShape, ReferenceLatents
from video4d.model.blocks import DiTBlock, Head
from video4d.model.config import INITS, DiTConfig
from video4d.model.layers import FP32LayerNorm, RMSNorm, linear_fp32
from video4d.model.rope import rope_tables
from video4d.model.sequence_parallel import SequenceParallel

__all__ = ["WanDiT4D", "timestep_features"]


def timestep_features(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's sinusoidal timestep features: ``[B]`` (sigma * 1000) -> float32 ``[B, dim]`` = ``[cos, sin]``
    of ``t * 10000 ** (-k / (dim/2))``, computed in float64."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device) / half)
    angles = timestep.to(torch.float64)[:, None] * freqs[None, :]
    return torch.cat((angles.cos(), angles.sin()), dim=1).float()


class WanDiT4D(nn.Module):
    """Wan2.1 T2V DiT over a 4D grid ``[B, V, T, C, h, w]``.

    Frames are patch-embedded one by one (Conv3d, kernel = stride = ``patch_size``), flattened
    view-major (:class:`video4d.grid.GridShape`), given 3D RoPE positions (frame position from
    :func:`video4d.grid.collapsed_time_positions`, then row, column), run through the blocks with the
    configured attention variant and projected back to latent patches.

    Reference conditioning (paper §3.1, "grounded generation": "adding the patch embeddings of the
    reference frames to the noised latent tokens"): ``reference.latents`` are CLEAN latents on the
    same grid; their patch embeddings (the same ``patch_embedding`` layer, bias included) are ADDED
    to the tokens of ``latents`` at the reference cells only (``reference.cells``: ``[V, T]`` or
    per-sample ``[B, V, T]``; a fixed-view row and/or a freeze-time column, either may be absent).
    Latents at other cells are never read. What ``latents`` holds at reference cells (noised, the
    paper's form, or clean) is set by the caller (``config.reference_mode``, :mod:`video4d.flow`).
    The bias is kept: "the patch embedding of a frame" is the layer's output, and the second bias is
    the one content-independent marker of a reference token for the frozen pretrained layers (with
    the bias dropped the sum would equal embedding ``x_sigma + x0``, indistinguishable from a target
    cell holding those latents).

    Build it with :func:`video4d.model.load_dit`: the constructor leaves PyTorch's default init
    (so that meta-device builds for weight loading cost nothing); ``load_dit`` applies Wan's init
    (:meth:`reset_parameters`) or the checkpoint.
    """

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Conv3d(config.in_dim, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(DiTBlock(config) for _ in range(config.num_layers))
        self.head = Head(config)
        self.sequence_parallel: Optional[SequenceParallel] = None

    def set_sequence_parallel(self, group) -> None:
        """Split every forward's tokens over the ranks of ``group`` (a ``torch.distributed`` process
        group; DeepSpeed-Ulysses, :mod:`video4d.model.sequence_parallel`) or stop (``None``, or a
        group of one rank). Every rank of the group must then call the model with the same inputs;
        each returns the whole output. The group size must divide ``num_heads``."""
        size = 1 if group is None else torch.distributed.get_world_size(group)
        self.sequence_parallel = SequenceParallel(group, self.config.num_heads) if size > 1 else None

    # ----------------------------------------------------------------------------------- init
    def reset_parameters(self, init: str = "official") -> None:
        """Initialise every parameter.

        ``"official"``: Wan2.1's init (Xavier-uniform Linear and patch weights, zero Linear biases,
        N(0, 0.02) text/time embedding weights, zero output Linear; the patch bias keeps PyTorch's
        default and the modulation tables their N(0, 1/dim) draw from construction), so a fresh model
        outputs 0; new variant layers as in :meth:`reset_new_layers`. ``"random"``: the same, but the
        zero-initialised weights and all biases and norm affines are random too (for tests that
        need non-trivial outputs).
        """
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; use one of {', '.join(INITS)}")
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Linear):
                    with gathered(module.parameters()):
                        nn.init.xavier_uniform_(module.weight)
                        nn.init.zeros_(module.bias)
            with gathered([self.patch_embedding.weight]):
                nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
            for seq in (self.text_embedding, self.time_embedding):
                for layer in seq:
                    if isinstance(layer, nn.Linear):
                        with gathered([layer.weight]):
                            nn.init.normal_(layer.weight, std=0.02)
            with gathered([self.head.head.weight]):
                nn.init.zeros_(self.head.head.weight)
            if init == "random":
                self._randomise_zero_init()
        self.reset_new_layers(init)

    def _randomise_zero_init(self) -> None:
        with gathered([self.head.head.weight]):
            nn.init.xavier_uniform_(self.head.head.weight)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                with gathered([module.bias]):
                    nn.init.normal_(module.bias, std=0.02)
            elif isinstance(module, (RMSNorm, FP32LayerNorm)) and module.weight is not None:
                with gathered(module.parameters()):
                    module.weight.normal_(1.0, 0.1)
                    if getattr(module, "bias", None) is not None:
                        module.bias.normal_(0.0, 0.1)

    def new_layers(self) -> list[nn.Module]:
        """Layers added by the attention variant (``cross_view_attn`` / ``sync`` of every block)."""
        return [layer for block in self.blocks for layer in block.new_layers()]

    def reset_new_layers(self, init: str = "official", layers: Optional[list[nn.Module]] = None) -> None:
        """Initialise the variant's new layers (all of them, or those in ``layers``): ``sync`` to the
        branch average (alpha 0.5 or ``[I/2, I/2]``); ``cross_view_attn`` Xavier with zero biases and
        a ZERO output projection (``"official"``: the block starts as the per-view video model) or a
        random one (``"random"``)."""
        with torch.no_grad():
            for layer in self.new_layers() if layers is None else layers:
                with gathered(layer.parameters()):
                    if hasattr(layer, "reset_parameters"):
                        layer.reset_parameters()
                        continue
                    for proj in (layer.q, layer.k, layer.v, layer.o):
                        nn.init.xavier_uniform_(proj.weight)
                        nn.init.zeros_(proj.bias)
                    layer.norm_q.weight.fill_(1.0)
                    layer.norm_k.weight.fill_(1.0)
                    if init == "official":
                        nn.init.zeros_(layer.o.weight)

    # -------------------------------------------------------------------------------- forward
    def _check_inputs(self, latents: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> GridShape:
        cfg = self.config
        if latents.dim() != 6 or latents.shape[3] != cfg.in_dim:
            raise ValueError(f"latents must be [B, V, T, {cfg.in_dim}, h, w], got {list(latents.shape)}")
        _, ph, pw = cfg.patch_size
        if latents.shape[4] % ph or latents.shape[5] % pw:
            raise ValueError(f"latent height/width {tuple(latents.shape[4:])} must be multiples of the patch size {(ph, pw)}")
        B = latents.shape[0]
        if timestep.shape != (B,):
            raise ValueError(f"timestep must be [B={B}] (sigma * 1000), got {list(timestep.shape)}")
        if context.dim() != 3 or context.shape[0] != B or context.shape[2] != cfg.text_dim:
            raise ValueError(f"context must be [B={B}, L, {cfg.text_dim}], got {list(context.shape)}")
        if context.shape[1] > cfg.text_len:
            raise ValueError(f"context has {context.shape[1]} tokens, more than text_len={cfg.text_len}")
        V, T = latents.shape[1], latents.shape[2]
        return GridShape(V, T, latents.shape[4] // ph, latents.shape[5] // pw)

    def embed_patches(self, latents: torch.Tensor, grid: GridShape) -> torch.Tensor:
        """``[B, V, T, C, h*ph, w*pw]`` -> patch embeddings ``[B, N, dim]`` (view-major tokens)."""
        B, V, T = latents.shape[:3]
        frames = latents.permute(0, 3, 1, 2, 4, 5).flatten(2, 3)
        emb = self.patch_embedding(frames.to(self.patch_embedding.weight.dtype))
        emb = emb.unflatten(2, (V, T)).permute(0, 2, 3, 4, 5, 1)
        return grid.flatten(emb)

    def _add_reference(self, x: torch.Tensor, reference: Optional[ReferenceLatents], grid: GridShape, latents: torch.Tensor) -> torch.Tensor:
        """``x`` plus the patch embeddings of the reference latents at the reference cells.

        Without a reference ``x`` is returned as it is, except under ZeRO-3 (``patch_embedding``
        partitioned): there the embedding of all-zero latents is computed and discarded (every token
        keeps ``x`` exactly), so that ``patch_embedding`` runs twice in every forward whatever the
        sample and all ranks issue the same parameter gathers (a rank whose micro-batch drew no
        reference would otherwise skip one and deadlock the others).
        """
        if reference is None and not is_partitioned(self.patch_embedding.weight):
            return x
        if reference is None:
            reference = ReferenceLatents(torch.zeros_like(latents), torch.zeros(latents.shape[:3], dtype=torch.bool, device=latents.device))
        shape = latents.shape
        if reference.latents.shape != shape:
            raise ValueError(f"reference latents {list(reference.latents.shape)} must match the noisy latents {list(shape)}")
        cells = reference.cell_mask()
        if cells.shape != (shape[0], grid.V, grid.T):
            raise ValueError(f"reference cells {list(cells.shape)} must be [V={grid.V}, T={grid.T}] or [B, V, T]")
        clean = torch.where(cells[:, :, :, None, None, None], reference.latents, 0.0)
        ref = self.embed_patches(clean, grid)
        token_mask = grid.flatten(cells[:, :, :, None, None, None].expand(-1, -1, -1, grid.h, grid.w, 1))
        return torch.where(token_mask, x + ref, x)

    def embed_text(self, context: torch.Tensor) -> torch.Tensor:
        """``[B, L, text_dim]`` -> ``[B, text_len, dim]``: zero-padded to ``text_len`` (as Wan pads to
        512) and passed through the text MLP."""
        pad = self.config.text_len - context.shape[1]
        context = F.pad(context, (0, 0, 0, pad))
        return self.text_embedding(context.to(self.text_embedding[0].weight.dtype))

    def embed_time(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B]`` -> (time embedding ``[B, dim]``, block modulation ``[B, 6, dim]``), float32."""
        feats = timestep_features(timestep, self.config.freq_dim)
        e = linear_fp32(self.time_embedding[2], F.silu(linear_fp32(self.time_embedding[0], feats)))
        e0 = linear_fp32(self.time_projection[1], F.silu(e))
        return e, e0.unflatten(1, (6, self.config.dim))

    def unpatchify(self, out: torch.Tensor, grid: GridShape) -> torch.Tensor:
        """Head output ``[B, N, ph*pw*C]`` (channel order (ph, pw, C) as in Wan) -> ``[B, V, T, C, h*ph, w*pw]``."""
        _, ph, pw = self.config.patch_size
        x = grid.unflatten(out).unflatten(-1, (ph, pw, -1))
        x = x.permute(0, 1, 2, 7, 3, 5, 4, 6)
        return x.reshape(*x.shape[:4], grid.h * ph, grid.w * pw)

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        reference: Optional[ReferenceLatents] = None,
    ) -> torch.Tensor:
        """Predict the flow velocity.

        ``latents``: noisy ``[B, V, T, C, h, w]``; ``timestep``: float ``[B]`` = sigma * 1000;
        ``context``: text embeddings ``[B, L, text_dim]`` (L <= text_len, may be 0);
        ``reference``: clean conditioning latents and their cells, or None.
        Returns float32 ``[B, V, T, out_dim, h, w]``.
        """
        grid = self._check_inputs(latents, timestep, context)
        x = self._add_reference(self.embed_patches(latents, grid), reference, grid, latents)
        x = x.float()
        e, e0 = self.embed_time(timestep)
        text = self.embed_text(context)
        rope = rope_tables(self.config.head_dim, grid, self.config.rope_t_max, self.config.rope_position_mode, x.device)
        sp = self.sequence_parallel
        if sp is not None:  # this rank's share of the tokens from here to the head
            x, rope = sp.shard(x), sp.shard_rope(rope)
        for block in self.blocks:
            if self.config.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, e0, text, grid, rope, sp, use_reentrant=False)
            else:
                x = block(x, e0, text, grid, rope, sp)
        out = self.head(x, e)
        if sp is not None:
            out = sp.gather(out, grid.num_tokens)
        return self.unpatchify(out, grid)

    def extra_repr(self) -> str:
        cfg = self.config
        params = sum(numel(p) for p in self.parameters())
        return f"variant={cfg.attention_variant}, backend={cfg.attention_backend}, params={params / 1e6:.1f}M, rope={cfg.rope_position_mode}/t_max={cfg.rope_t_max}"
