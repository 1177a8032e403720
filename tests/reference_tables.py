"""The official state-dict key/shape tables in tests/data/reference (copied from the checkpoints' code).

Each ``<name>.keys.tsv`` starts with a ``# {json header}`` line, then ``key<TAB>shape<TAB>dtype`` rows
in ``state_dict()`` order; the header's ``key_shape_sha256`` hashes the ``key<TAB>shape`` lines.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

REFERENCE = Path(__file__).parent / "data" / "reference"

Rows = list[tuple[str, tuple[int, ...]]]


def read_table(name: str) -> tuple[dict, Rows]:
    """``(header, [(key, shape), ...])`` of ``<name>.keys.tsv`` in file order."""
    lines = (REFERENCE / f"{name}.keys.tsv").read_text().splitlines()
    header = json.loads(lines[0].lstrip("#").strip())
    rows = []
    for line in lines[1:]:
        if line and not line.startswith("#"):
            key, shape, _ = line.split("\t")
            rows.append((key, tuple(int(s) for s in shape.split(","))))
    return header, rows


def key_shape_sha256(rows: Rows) -> str:
    """SHA-256 of the ``key<TAB>shape`` lines joined with newlines (the header's ``key_shape_sha256``)."""
    text = "\n".join(f"{k}\t{','.join(str(s) for s in shape)}" for k, shape in rows)
    return hashlib.sha256(text.encode()).hexdigest()


def state_rows(module: torch.nn.Module) -> Rows:
    """``[(key, shape), ...]`` of ``module.state_dict()`` in order (works on the meta device)."""
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]
