"""Memory planner for training the 4D DiT: the bytes each rank needs, term by term.

    python -m eval.perf.memory_plan model=wan2.1-t2v-14b views=8 frames=29 height=144 width=256 \\
        trainable=self_attn zero=3 dp=8 sp=1 checkpointing=true micro_batch=1 offload=none
    python -m eval.perf.memory_plan table=readme        # the README "Scaling" tables

Arguments are ``key=value`` (Hydra style, type-checked against :class:`PlanConfig`). Rows (bytes per
rank; device = GPU memory, host = CPU memory of that rank):

- ``parameters``: every weight in the run's dtype, divided over all ``dp * sp`` ranks under ZeRO-3
  (host memory with ``offload=all``); ZeRO-2 and the plain engine keep a full copy (the plain
  engine keeps trainable weights in fp32);
- ``gathered parameters`` (ZeRO-3, more than one rank): weights gathered whole. Measured with
  DeepSpeed 0.19.8 on the CPU (eval/perf/memory_check.py): without prefetching, two blocks at the
  peak (the block back-propagated and the one recomputed next); with prefetching, once the module
  trace is recorded (from the second step on) what was gathered stays gathered up to
  ``stage3_max_live_parameters`` elements. One rank gathers nothing (its partition is the weight);
- ``gradients``: this rank's partition of the trainable gradients (DeepSpeed accumulates in the
  model dtype) plus the reduce bucket (``reduce_bucket_size`` elements); the plain engine holds every
  trainable gradient in fp32;
- ``optimizer states``: fp32 master weights + Adam's two moments (12 bytes per trainable element;
  the plain engine has no separate master: 8), divided over the ranks by ZeRO (host with
  ``offload=optimizer`` or ``all``, gradients' partitions then too);
- ``activations``: tokens of this rank (``micro_batch * tokens / sp``) times bytes per token measured
  once on the real model (:mod:`eval.perf.activation_bytes`, cached): the peak of one training
  step of the model cut to one block (loss and embeddings included), plus what each further block
  adds (measured as two blocks minus one: about its saved tensors, or with checkpointing its fp32
  input). Sequence parallelism (Ulysses, ``sp > 1``): each rank holds 1/sp of the tokens outside
  attention and, inside, all tokens for 1/sp of the heads (the same bytes), plus the all-to-all
  buffers (in and out copies of q, k, v and the output: 8 x dim values per token). Under ZeRO-3
  DeepSpeed's module hooks hold about 4 more fp32 hidden states per token (measured: ZeRO-3 minus
  ZeRO-2 on one rank, 4.1-4.3 x 4 x dim bytes per token for the tiny and small presets);
- ``optimizer step``: DeepSpeed's transient fp32 copy of this rank's gradient partition (the
  engines use fused AdamW, which adds no full-size temporaries; nothing on the device when the
  optimizer is offloaded);
- ``peak per rank``: resident terms + the larger of (activations + gathered parameters) and the
  optimizer step.

Checked on the CPU against measured peaks (tests/test_memory_plan.py; eval/perf/memory_check.py).
The numbers for GPUs are estimates until a GPU measures them (eval/perf/gpu_checks.py prints one
measured ZeRO-3 step of Wan-1.3B beside its estimate).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

__all__ = ["PlanConfig", "Plan", "plan", "ModelCounts", "model_counts", "readme_tables", "main"]

GB = 1e9
ZERO = (0, 2, 3)
ZERO3_HIDDEN_COPIES = 4  # fp32 hidden states per token that ZeRO-3's module hooks keep on top (measured, eval/perf/memory_check.py)
STEP_TEMPORARIES = 1  # transient fp32 copies of the trainable partition in a DeepSpeed optimizer step (fused AdamW adds none)
OFFLOAD = ("none", "optimizer", "all")


@dataclass
class PlanConfig:
    """One training setting (every field is a ``key=value`` argument)."""

    model: str = "wan2.1-t2v-14b"     # DiT preset (video4d.model.config.PRESETS)
    views: int = 8                    # V
    frames: int = 29                  # pixel frames per view (4k + 1); latent frames T = (frames - 1) / 4 + 1
    height: int = 144                 # pixels (multiple of 16)
    width: int = 256                  # pixels (multiple of 16)
    trainable: str = "self_attn"      # self_attn (the paper) | all
    zero: int = 3                     # 0 (plain engine, one rank) | 2 | 3
    dp: int = 1                       # data-parallel size
    sp: int = 1                       # sequence-parallel size (ranks = dp * sp)
    checkpointing: bool = True        # activation checkpointing of every block
    micro_batch: int = 1              # samples per rank per micro-batch
    offload: str = "none"             # none | optimizer (states, masters, gradient partitions to host) | all (+ parameters)
    dtype: str = "bf16"               # bf16 | fp32
    reduce_bucket_size: int = 50_000_000        # DeepSpeed zero_optimization.reduce_bucket_size
    prefetch_bucket_size: int = 50_000_000      # stage3_prefetch_bucket_size
    max_live_parameters: int = 1_000_000_000    # stage3_max_live_parameters
    gpu_gb: float = 80.0              # device memory to compare the peak with
    table: str = "none"               # none | readme: print the README tables instead of one plan


@dataclass(frozen=True)
class ModelCounts:
    """Element counts of a preset: all parameters, trainable ones, the largest block, latent channels,
    patch size, width and depth."""

    params: int
    trainable: int
    block: int
    dim: int
    layers: int
    in_dim: int
    patch: tuple[int, int, int]


@lru_cache(maxsize=None)
def model_counts(preset: str, trainable: str) -> ModelCounts:
    """Counts from the model built on the meta device (nothing allocated)."""
    from eval.perf.activation_bytes import TRAINABLE_SETS
    from video4d import load_dit
    from video4d.model import select_trainable

    if trainable not in TRAINABLE_SETS:
        raise ValueError(f"trainable={trainable!r} is not supported: allowed {', '.join(TRAINABLE_SETS)}")
    model = load_dit(preset, device="meta")
    select_trainable(model, TRAINABLE_SETS[trainable])
    params = list(model.parameters())
    block = max(sum(p.numel() for p in b.parameters()) for b in model.blocks)
    cfg = model.config
    return ModelCounts(sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad), block, cfg.dim,
                       cfg.num_layers, cfg.in_dim, cfg.patch_size)


@dataclass
class Plan:
    """Rows ``(term, device bytes, host bytes)`` and the inputs they came from."""

    config: PlanConfig
    tokens: int
    rows: list[tuple[str, float, float]]

    @property
    def peak(self) -> float:
        """Predicted peak device bytes per rank (the last row)."""
        return self.rows[-1][1]

    def table(self) -> str:
        """The rows as a markdown table (GB = 1e9 bytes)."""
        c = self.config
        head = (f"{c.model}, {c.views} views x {c.frames} frames @ {c.height}x{c.width} ({self.tokens:,} tokens/sample), "
                f"trainable={c.trainable}, ZeRO-{c.zero}, dp={c.dp}, sp={c.sp}, checkpointing={c.checkpointing}, "
                f"micro_batch={c.micro_batch}, offload={c.offload}, {c.dtype}")
        lines = [head, "", "| term | device GB / rank | host GB / rank |", "|---|---|---|"]
        lines += [f"| {name} | {dev / GB:.2f} | {host / GB:.2f} |" for name, dev, host in self.rows]
        fits = "fits" if self.peak <= c.gpu_gb * GB else "does NOT fit"
        return "\n".join(lines + ["", f"peak {self.peak / GB:.1f} GB per rank: {fits} in {c.gpu_gb:g} GB (estimate)"])


def _check(cfg: PlanConfig) -> None:
    choices = {"zero": (cfg.zero, ZERO), "offload": (cfg.offload, OFFLOAD), "dtype": (cfg.dtype, ("bf16", "fp32"))}
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ValueError(f"{key}={value!r} is not supported: allowed {', '.join(map(str, allowed))}")
    if cfg.zero == 0 and cfg.dp * cfg.sp != 1:
        raise ValueError("zero=0 is the plain one-process engine: dp=1 and sp=1")
    if cfg.offload == "all" and cfg.zero != 3 or cfg.offload == "optimizer" and cfg.zero == 0:
        raise ValueError(f"offload={cfg.offload} needs zero=3 (all) or zero>=2 (optimizer)")
    if (cfg.frames - 1) % 4 or cfg.height % 16 or cfg.width % 16:
        raise ValueError(f"frames must be 4k+1 and height/width multiples of 16, got {cfg.frames} @ {cfg.height}x{cfg.width}")


def _activation_entry(cfg: PlanConfig) -> dict[str, float]:
    from eval.perf.activation_bytes import load_cache

    key = f"{cfg.model}/{cfg.trainable}/{cfg.dtype}"
    entry = load_cache().get(key)
    if entry is None:
        raise ValueError(f"no measured activation bytes for {key}: run `python -m eval.perf.activation_bytes {cfg.model}` once "
                         "(a real 1- and 2-block model; 14B with every parameter trainable in fp32 needs more than 24 GB of host memory)")
    return entry


def plan(cfg: PlanConfig) -> Plan:
    """Per-rank memory of ``cfg`` (see the module docstring)."""
    _check(cfg)
    m = model_counts(cfg.model, cfg.trainable)
    world = cfg.dp * cfg.sp
    b = 2 if cfg.dtype == "bf16" else 4
    _, ph, pw = m.patch
    tokens = cfg.views * ((cfg.frames - 1) // 4 + 1) * (cfg.height // 8 // ph) * (cfg.width // 8 // pw)
    frozen = m.params - m.trainable
    shard = world if cfg.zero == 3 else 1
    opt_shard = world if cfg.zero >= 2 else 1
    host_states = cfg.offload != "none"

    if cfg.zero == 0:
        params = frozen * b + m.trainable * 4
        grads_dev, grads_host = m.trainable * 4.0, 0.0
        states = m.trainable * 8.0
        step = 0.0  # fused AdamW on the resident fp32 gradients
    else:
        params = m.params * b / shard
        partition = m.trainable * b / opt_shard
        bucket = cfg.reduce_bucket_size * b  # DeepSpeed allocates the whole bucket whatever the trainable count
        grads_dev = bucket + (0.0 if host_states else partition)
        grads_host = m.trainable * 4.0 / opt_shard if host_states else 0.0
        states = m.trainable * 12.0 / opt_shard
        step = 0.0 if host_states else STEP_TEMPORARIES * m.trainable * 4.0 / opt_shard
    params_dev, params_host = (0.0, params) if cfg.offload == "all" else (params, 0.0)
    gathered = 0.0
    if cfg.zero == 3 and world > 1:  # measured with eval/perf/memory_check.py, see the module docstring
        gathered = (min(cfg.max_live_parameters, m.params) if cfg.prefetch_bucket_size > 0 else 2 * m.block) * b
    states_dev, states_host = (0.0, states) if host_states else (states, 0.0)

    act = _activation_entry(cfg)
    per_rank_tokens = cfg.micro_batch * tokens / cfg.sp
    suffix = "_ckpt" if cfg.checkpointing else ""
    per_token = act["model_peak" + suffix] + (m.layers - 1) * act["block_peak" + suffix]
    per_token += 8 * m.dim * b if cfg.sp > 1 else 0
    per_token += ZERO3_HIDDEN_COPIES * 4 * m.dim if cfg.zero == 3 else 0
    activations = per_rank_tokens * per_token

    resident = params_dev + grads_dev + states_dev
    peak = resident + max(activations + gathered, step)
    rows = [
        ("parameters", params_dev, params_host),
        ("gathered parameters (ZeRO-3 working set)", gathered, 0.0),
        ("gradients (partition + reduce bucket)", grads_dev, grads_host),
        ("optimizer states (fp32 master + Adam m, v)", states_dev, states_host),
        ("activations (peak of forward/backward)", activations, 0.0),
        ("optimizer step (transient fp32 gradients)", step, 0.0),
        ("peak per rank", peak, params_host + grads_host + states_host),
    ]
    return Plan(cfg, tokens, rows)


GRIDS = ((8, 29, 144, 256), (8, 61, 144, 256), (8, 29, 480, 832))


def readme_tables(gpus: int = 8) -> str:
    """Peak GB per rank of Wan 1.3B and 14B (self-attention fine-tune, bf16, checkpointing) at the paper's
    grids on one ``gpus``-GPU node, ZeRO-2 / ZeRO-3 x sequence-parallel 1 / 4 / 8 (dp = gpus / sp), and
    the one-GPU 14B setting with the optimizer offloaded."""
    lines = [f"Peak memory per GPU, GB (estimates), {gpus} GPUs: dp = {gpus} / sp; bf16, activation checkpointing, "
             "self-attention trainable, micro-batch 1.", "",
             "| model | grid (V x frames @ HxW) | tokens | ZeRO | SP 1 | SP 4 | SP 8 |", "|---|---|---|---|---|---|---|"]
    for model in ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b"):
        for V, F, H, W in GRIDS:
            for zero in (2, 3):
                cells = [plan(PlanConfig(model=model, views=V, frames=F, height=H, width=W, zero=zero, dp=gpus // sp, sp=sp)) for sp in (1, 4, 8)]
                lines.append(f"| {model} | {V} x {F} @ {H}x{W} | {cells[0].tokens:,} | {zero} | "
                             + " | ".join(f"{c.peak / GB:.1f}" for c in cells) + " |")
    one = plan(PlanConfig(model="wan2.1-t2v-14b", zero=3, dp=1, sp=1, offload="optimizer"))
    return "\n".join(lines + ["", "One GPU, Wan 14B self-attention fine-tune, optimizer states offloaded to host memory "
                              "(`deepspeed=zero3_offload_optimizer`):", "", one.table()])


def parse(argv: list[str]) -> PlanConfig:
    """``key=value`` arguments -> :class:`PlanConfig` (unknown keys and wrong types raise, naming them)."""
    from omegaconf import OmegaConf

    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ValueError(f"arguments are key=value (e.g. model=wan2.1-t2v-14b zero=3), got {bad}")
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PlanConfig), OmegaConf.from_dotlist(argv)))
    except OmegaConfBaseException as exc:  # an unknown key or a wrong type, named
        raise ValueError(f"{str(exc).splitlines()[0]} (keys: {', '.join(f.name for f in dataclasses.fields(PlanConfig))})") from None


def main(argv: Optional[list[str]] = None) -> str:
    """Print (and return) the plan of the arguments, or the README tables with ``table=readme``."""
    cfg = parse(sys.argv[1:] if argv is None else argv)
    text = readme_tables() if cfg.table == "readme" else plan(cfg).table()
    print(text)
    return text


if __name__ == "__main__":
    try:
        main()
    except ValueError as exc:  # a bad argument or an unmeasured setting: one line, no traceback
        sys.exit(f"memory_plan: error: {exc}")
