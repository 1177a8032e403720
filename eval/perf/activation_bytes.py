"""Activation bytes per token of the 4D DiT, measured once on real modules and cached for the planner.

    python -m eval.perf.activation_bytes                     # measure every entry of MEASURED, rewrite the cache
    python -m eval.perf.activation_bytes wan2.1-t2v-1.3b     # only that preset's entries
    python -m eval.perf.activation_bytes wan2.1-t2v-14b/self_attn/bf16   # one entry

For a preset, with the parameters of the trainable set requiring gradients (``self_attn``: the
paper's self-attention only; ``all``), attention backend ``split`` (it saves q, k, v, the output and
the log-sum-exp, as FlashAttention / FlexAttention do), in ``bf16`` (bf16 weights and bf16
autocast: what a DeepSpeed bf16 run computes) or ``fp32``:

- ``block_saved``: bytes autograd saves in the forward of one real DiT block whose input requires
  gradients (earlier blocks train): ``saved_tensors_hooks``, each storage once, parameters and the
  RoPE tables (shared by all blocks) excluded;
- ``model_peak`` / ``model_peak_ckpt``: the peak bytes torch allocates in one training step's
  forward + backward (rectified-flow loss with a reference row and column) of the same model cut to
  one block, without / with activation checkpointing, above the level before (torch's CPU allocator
  events, :func:`eval.perf.measure.peak_bytes`), every parameter gradient dropped as soon as it is
  complete (as ZeRO moves it into a bucket);
- ``block_peak`` / ``block_peak_ckpt``: what a second block adds to those peaks (the model cut to two
  blocks minus one): the planner's cost of every further block (about ``block_saved`` without
  checkpointing, about the block's fp32 input with it).

Each is a per-token slope between two token counts (1024 and 4096 tokens: 2 views x 2 frames x
16x16 and 32x32 tokens; 4096 and 8192 for models of width >= 4096, whose per-block constants are as
large as 1024 tokens' activations and move the peak), so per-sample and per-parameter terms (text,
modulation, a weight's gradient, the CPU kernels' packed copies of a bf16 weight) drop out. Results go to
``eval/perf/activation_bytes.json`` (committed); the planner (:mod:`eval.perf.memory_plan`) reads them.
Measured on the CPU: a GPU's kernels may save and allocate somewhat differently.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import torch

from eval.perf.measure import saved_bytes
from fourd.weights import atomic_write_bytes

__all__ = ["CACHE", "MEASURED", "TRAINABLE_SETS", "load_cache", "measure", "measure_entry"]

CACHE = Path(__file__).with_name("activation_bytes.json")
TRAINABLE_SETS = {"self_attn": ("self_attn", "cross_view_attn", "sync"), "all": ("*",)}
MEASURED = [(p, t, d) for p in ("tiny", "small", "wan2.1-t2v-1.3b", "wan2.1-t2v-14b") for t in TRAINABLE_SETS for d in ("bf16", "fp32")]
_GRIDS = ((2, 2, 16, 16), (2, 2, 32, 32))  # V, T, h, w: 1024 and 4096 tokens
_GRIDS_WIDE = ((2, 2, 32, 32), (2, 4, 32, 32))  # 4096 and 8192 tokens, for width >= WIDE_DIM
WIDE_DIM = 4096
_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def load_cache() -> dict[str, dict[str, float]]:
    """``{"<preset>/<trainable>/<dtype>": {"block_saved", "model_peak", "model_peak_ckpt", "block_peak", "block_peak_ckpt"}}``
    (bytes per token)."""
    return json.loads(CACHE.read_text())["entries"] if CACHE.is_file() else {}


def _slope(values: list[float], tokens: list[int]) -> float:
    return (values[1] - values[0]) / (tokens[1] - tokens[0])


def _autocast(dtype: torch.dtype):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


def _model(preset: str, layers: int, trainable: str, dtype: torch.dtype):
    from video4d import load_dit
    from video4d.model import select_trainable

    torch.manual_seed(0)
    model = load_dit({"preset": preset, "num_layers": layers, "attention_backend": "split"}, init="random", dtype=dtype).train()
    select_trainable(model, TRAINABLE_SETS[trainable])
    for p in model.parameters():  # a parameter's gradient leaves at once, as into a ZeRO bucket: only activations accumulate
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda q: setattr(q, "grad", None))
    return model


def _step_peaks(model, grid, dtype: torch.dtype) -> tuple[int, int]:
    """Peak bytes of one loss forward + backward without and with activation checkpointing."""
    from eval.perf.measure import peak_bytes
    from video4d.flow import build_reference, flow_matching_loss
    from video4d.grid import ReferenceCells

    cfg = model.config
    latents = torch.randn(1, grid.V, grid.T, cfg.in_dim, grid.h * cfg.patch_size[1], grid.w * cfg.patch_size[2])
    context = torch.randn(1, cfg.text_len, cfg.text_dim)
    reference = build_reference(latents, ReferenceCells(view=0, time=0))

    def loss_step():
        with _autocast(dtype):
            loss = flow_matching_loss(model, latents, context, reference, torch.Generator().manual_seed(0))[0]
        loss.backward()

    peaks = []
    for ckpt in (False, True):
        model.config = cfg.replace(gradient_checkpointing=ckpt)
        peaks.append(peak_bytes(loss_step, torch.device("cpu")))
    model.config = cfg
    return peaks[0], peaks[1]


def measure_entry(preset: str, trainable: str, dtype_name: str) -> dict[str, float]:
    """The bytes per token of the module docstring, for one preset, trainable set and dtype."""
    from video4d.grid import GridShape
    from video4d.model.rope import rope_tables

    dtype = _DTYPES[dtype_name]
    one, two = _model(preset, 1, trainable, dtype), _model(preset, 2, trainable, dtype)
    cfg = one.config
    params = {p.untyped_storage().data_ptr() for p in one.parameters()}
    grad_all = trainable == "all"
    values: dict[str, list[float]] = {k: [] for k in ("block_saved", "model_peak", "model_peak_ckpt", "block_peak", "block_peak_ckpt")}
    tokens = []
    for V, T, h, w in (_GRIDS_WIDE if cfg.dim >= WIDE_DIM else _GRIDS):
        grid = GridShape(V, T, h, w)
        rope = rope_tables(cfg.head_dim, grid, cfg.rope_t_max, cfg.rope_position_mode, torch.device("cpu"))
        x = torch.randn(1, grid.num_tokens, cfg.dim, requires_grad=True)
        e0 = torch.randn(1, 6, cfg.dim, requires_grad=grad_all)
        text = torch.randn(1, cfg.text_len, cfg.dim, dtype=dtype, requires_grad=grad_all)
        exclude = params | {t.untyped_storage().data_ptr() for t in (rope.cos, rope.sin, e0, text)}

        def run_block():
            with _autocast(dtype):
                return one.blocks[0](x, e0, text, grid, rope)

        saved, out = saved_bytes(run_block, exclude)
        del out
        peak_one, peak_one_ckpt = _step_peaks(one, grid, dtype)
        peak_two, peak_two_ckpt = _step_peaks(two, grid, dtype)
        for key, value in zip(values, (saved, peak_one, peak_one_ckpt, peak_two - peak_one, peak_two_ckpt - peak_one_ckpt)):
            values[key].append(value)
        tokens.append(grid.num_tokens)
    return {k: _slope(v, tokens) for k, v in values.items()}


def measure(presets: Optional[list[str]] = None) -> dict[str, dict[str, float]]:
    """Measure the entries of :data:`MEASURED` (only those whose preset or ``preset/trainable/dtype``
    key is in ``presets``, if given), merge them into the cache file and return it."""
    entries = load_cache()
    for preset, trainable, dtype in MEASURED:
        if presets and preset not in presets and f"{preset}/{trainable}/{dtype}" not in presets:
            continue
        key = f"{preset}/{trainable}/{dtype}"
        entries[key] = {k: round(v, 1) for k, v in measure_entry(preset, trainable, dtype).items()}
        print(f"{key}: " + ", ".join(f"{k} {v / 1e3:.2f} kB" for k, v in entries[key].items()), flush=True)
        payload = {"doc": "bytes per token; see eval/perf/activation_bytes.py", "torch": torch.__version__, "entries": dict(sorted(entries.items()))}
        atomic_write_bytes(str(CACHE), (json.dumps(payload, indent=1) + "\n").encode())  # after every entry: a long run keeps what it measured
    return entries


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    measure(sys.argv[1:] or None)
