#!/usr/bin/env bash
# One run on a lent GPU machine: the torch backend's unit tests on CUDA, then
# bench/gpu_check.py (identical JSON CPU vs GPU, canonical bits, full MR-All).
# Usage, from the repository root: bench/gpu_check.sh   (PYTHON defaults to python3)
set -u -o pipefail
export PYTHONPATH=. PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PYTHON -m pytest -q -p no:cacheprovider --noconftest tests/unit/scoring/test_scoring_backends.py 2>&1 | tail -5
$PYTHON bench/gpu_check.py 2>&1 | tee ${OUT:-/tmp}/gpu_check.log
