#!/usr/bin/env bash
# All GPU-only checks in one run (eval/perf/gpu_checks.py), killed after 10 minutes; partial reports survive.
# Usage: bash eval/perf/gpu_checks.sh [OUT_DIR] [extra args for python -m eval.perf.gpu_checks]
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-outputs/gpu_checks}"
shift || true
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
exec timeout 600 "$PY" -m eval.perf.gpu_checks --out "$out" "$@"
