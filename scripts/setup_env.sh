#!/usr/bin/env bash
# Create .venv (if absent) and install the project with its dev extras. Idempotent.
# torch 2.14.1 + torchvision 0.29.1 come from the machine's local mirror; DeepSpeed builds from
# its sdist without compiled ops (DS_BUILD_OPS=0).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export DS_BUILD_OPS=0 PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import video4d, recon, deepspeed, lpips, hydra, pytest" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[dev]"
fi
.venv/bin/python -c "import torch, video4d; print('environment ready: torch', torch.__version__)"
