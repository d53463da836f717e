#!/usr/bin/env bash
# One-GPU check of issue 18 (SimCLR + finetune-seg + predict throughput), at most 8 minutes:
#   bash benchmarks/gpu_check.sh [gpu_check.py options]   ->  docs/benchmarks.md, section "GPU check (one GPU)"
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec timeout --signal=INT --kill-after=20 480 "$PY" benchmarks/gpu_check.py "$@"
