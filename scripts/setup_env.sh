#!/usr/bin/env bash
# Create .venv (if absent) and install the project with its dev extras. Idempotent.
# torch 2.14.1 + torchvision 0.29.1 come from the machine's local mirror. DeepSpeed builds from its sdist
# with no compiled ops (DS_BUILD_OPS=0), except on a machine without CUDA: there its CPU shared-memory
# communication op (deepspeed_shm_comm, which every multi-process CPU run loads when DeepSpeed starts)
# is compiled here, into .venv/lib/python3.*/site-packages/deepspeed/ops/comm/, instead of being
# JIT-compiled silently into ~/.cache/torch_extensions by the first torchrun / deepspeed run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export DS_BUILD_OPS=0 PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import video4d, recon, infer4d, deepspeed, lpips, hydra, pytest, viser, playwright" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[dev]"
fi
# The CPU shm op (see the header). DeepSpeed loads an op compiled at install time, without a JIT build,
# when installed_ops says so; --no-build-isolation lets its setup.py see the venv's torch.
if ! .venv/bin/python -c "
import sys, torch
from deepspeed.git_version_info import installed_ops
sys.exit(0 if torch.cuda.is_available() or installed_ops.get('deepspeed_shm_comm') else 1)" 2>/dev/null; then
  ds_version=$(.venv/bin/python -c "import deepspeed; print(deepspeed.__version__)" 2>/dev/null | tail -1)
  echo "building DeepSpeed $ds_version with its CPU op deepspeed_shm_comm into .venv (once; ~2 min of CPU, ~6 min wall on 2 busy cores)"
  start=$SECONDS
  .venv/bin/python -m pip install -q setuptools wheel
  DS_ACCELERATOR=cpu DS_BUILD_SHM_COMM=1 .venv/bin/python -m pip install -q --no-build-isolation --no-deps --force-reinstall \
    --no-cache-dir "deepspeed==$ds_version"
  echo "built deepspeed_shm_comm in $((SECONDS - start)) s"
fi
# Headless browser for tests/test_viewer.py: Debian's chromium, driven by playwright (those tests
# skip only where it cannot be installed: not root, or no apt-get).
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium (apt-get) for the browser tests"
  apt_log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$apt_log" 2>&1; then
    cat "$apt_log"; echo "apt-get could not install chromium (log above)" >&2; exit 1
  fi
  rm -f "$apt_log"
fi
.venv/bin/python -c "import torch, video4d; print('environment ready: torch', torch.__version__)"
