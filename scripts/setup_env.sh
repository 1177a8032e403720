#!/usr/bin/env bash
# Create .venv (if absent) and install the project with its dev extras. Idempotent.
# torch 2.14.1 + torchvision 0.29.1 come from the machine's local mirror; DeepSpeed builds from
# its sdist without compiled ops (DS_BUILD_OPS=0).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
export DS_BUILD_OPS=0 PIP_DISABLE_PIP_VERSION_CHECK=1
if ! .venv/bin/python -c "import video4d, recon, infer4d, deepspeed, lpips, hydra, pytest, viser, playwright" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
  .venv/bin/python -m pip install -q -e ".[dev]"
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
