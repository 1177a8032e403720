"""Every command line of README.md and docs/*.md runs as written (step counts reduced) or has its Hydra
config composed / its arguments parsed (tests/docs_commands.py says which and why; issue 20)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.docs_commands import ROOT, parse_all, parse_file, reduced


def test_every_command_is_fenced_and_classified():
    commands, unfenced = parse_all()
    assert unfenced == [], "commands outside ```bash blocks are not checked"
    assert [c.where for c in commands if c.kind == "unknown"] == []
    ci = [c.text for c in commands if c.kind == "ci" and c.file == "README.md"]
    assert ".venv/bin/python -m pytest -q" in ci and "bash scripts/setup_env.sh" in ci
    assert {c.kind for c in commands} >= {"run", "compose", "parse", "serve"}


def test_parsing_rules_on_a_sample(tmp_path):
    (tmp_path / "sample.md").write_text("\n".join([
        "    python launch/infer.py   # indented, outside a fence",
        "```bash",
        "# a comment line",
        "RUN_DIR=runs/x python launch/train_recon.py \\",
        "    train.steps=100   # -> runs/x/export/model.safetensors",
        "bash scripts/setup_env.sh && .venv/bin/python launch/infer.py 'prompt=a # not a comment'",
        "python launch/infer.py prompt=\"...\"",
        "python -m recon.pretrain_task --run-dir <run dir>",
        "torchrun --nnodes 3 --node_rank $NODE_RANK launch/train_video4d.py",
        "```",
        "```",
        "python not/a/command.py",
        "```",
    ]))
    commands, unfenced = parse_file(str(tmp_path / "sample.md"))
    assert len(unfenced) == 1 and unfenced[0].endswith("python launch/infer.py   # indented, outside a fence")
    train, setup, infer, prompt, pretrain, nodes = commands
    assert (train.line, train.env, train.comment) == (4, {"RUN_DIR": "runs/x"}, "-> runs/x/export/model.safetensors")
    assert train.argv == ["python", "launch/train_recon.py", "train.steps=100"]
    assert setup.argv == ["bash", "scripts/setup_env.sh"] and infer.argv[-1] == "prompt=a # not a comment"
    assert pretrain.argv[-1] == "run_dir" and nodes.argv[4] == "0"  # placeholders made parseable
    from tests.docs_commands import classify

    assert [classify(c)[0] for c in commands] == ["run", "ci", "run", "run", "parse", "compose"]
    assert "<run dir>" in classify(pretrain)[1] and classify(nodes)[1] == "several machines"


def test_step_counts_are_reduced_from_the_composed_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"train": {"steps": 400}, "sampler": {"steps": 40}})
    assert reduced(["train.steps=400", "x=1"], cfg) == ["x=1", "train.steps=5", "sampler.steps=4"]
    assert reduced(["--out", "d", "--num-scenes", "8"], None) == ["--out", "d", "--num-scenes", "1"]


def test_every_command_runs_composes_or_parses(tmp_path):
    """The whole check (about 2 min of CPU on 2 cores): see tests/docs_commands.py."""
    out = tmp_path / "rows.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tests.docs_commands", "--json", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    failed = [f"{r['where']} ({r['kind']}: {r['reason']}) {r['command']}\n{r['detail'][-1200:]}" for r in rows if not r["ok"]]
    assert not failed, "\n\n".join(failed)
    assert proc.returncode == 0
