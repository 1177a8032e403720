"""Convert a public dataset into the scene format (docs/data_format.md, "Bringing your own data").

    python launch/convert_data.py dataset=realestate10k root=/data/RealEstate10K/train out=/data/scenes/re10k height=360 width=640
    python launch/convert_data.py dataset=dl3dv root=/data/DL3DV-10K out=/data/scenes/dl3dv +options.image_dir=images_4
    python launch/convert_data.py dataset=colmap root=/data/mvimgnet out=/data/scenes/mvimgnet shard=0 num_shards=8

Config: configs/convert_data.yaml; library: :func:`fourd.data.readers.convert`. Prints one summary
line (and the first skipped scenes with their reasons) and writes ``convert_report.json`` into the
Hydra run dir. Exit status 1 with one line when the root, a path or an option is wrong.
"""
from __future__ import annotations

import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf


@hydra.main(config_path="../configs", config_name="convert_data", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Convert ``cfg.root`` and print what was done."""
    from fourd.data.readers import ReaderError, convert

    node = OmegaConf.to_container(cfg, resolve=True)
    options = node.pop("options") or {}
    try:
        report = convert(**node, **options)
    except (ReaderError, ValueError) as e:
        print(f"convert_data: error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(1)
    with open(os.path.join(HydraConfig.get().runtime.output_dir, "convert_report.json"), "w") as f:
        f.write(report.to_json())
    print(report.summary())
    for name, reason in list(report.skipped.items())[:5]:
        print(f"  skipped {name}: {reason}")


if __name__ == "__main__":
    main()
