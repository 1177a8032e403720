"""Run a benchmark: results JSON + markdown tables + PNG plots (docs/eval.md).

    python launch/eval.py                                   # benchmark=synthetic, tiny untrained models, CPU
    python launch/eval.py benchmark=llff benchmark.root=/data/nerf_llff_data recon.preset=vggt-1b-4d recon.weights=...
    python launch/eval.py -m dit.weights=a.safetensors,b.safetensors   # one combined table over the runs
    python launch/eval.py benchmark=ablation_attention      # trains each attention variant, then one table
    python launch/eval.py --config-name eval_shipped        # issue 11's tables on the shipped checkpoints/ models

Writes ``results.json``, ``results.md`` and ``plots/*.png`` into the Hydra run dir (in a sweep: each
job's dir, plus ``combined.md`` / ``combined.json`` in the sweep dir).
"""
from __future__ import annotations

import os
import sys

# This script is named eval.py: its folder must not shadow the `eval` package on the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != os.path.dirname(os.path.abspath(__file__))]

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from eval.runner import run  # noqa: E402
from fourd.preflight import argv_problem, one_line_errors  # noqa: E402


@hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """One Hydra job: run ``cfg.benchmark`` and print where the tables went."""
    hc = HydraConfig.get()
    sweep = hc.sweep.dir if hc.mode == RunMode.MULTIRUN else None
    with one_line_errors("eval"):
        doc = run(cfg, hc.runtime.output_dir, overrides=list(hc.overrides.task), sweep_dir=sweep)
    print(f"{doc['benchmark']}: {len(doc['tables'])} tables, {len(doc['plots'])} plots in {hc.runtime.output_dir}")


if __name__ == "__main__":
    if problem := argv_problem(sys.argv):  # before Hydra's parser, which fails on it with a grammar error
        sys.exit(f"eval: error: {problem}")
    main()
