#!/usr/bin/env bash
# One prepared device check of the embedder's and the scorer's GPU paths, for a lent
# H100/H200 (bench/gpu_all.py says what each row checks): (a) torch-cuda features
# bit-identical across two processes, (b) within 1e-4 of onnxruntime-cpu with identical
# TARs on the parity case, (c) IResNet-100 images/s at batch 256 against the bare torch
# graph, (d) the scorer's GPU JSON identical to the CPU's, (e) identification: n/a (1:N
# search runs on the CPU). Ends with one table; exit 0 only if every check that ran passed.
#
# Usage, from anywhere (it runs in the repository root; PYTHON defaults to python3):
#   bash bench/gpu_all.sh --strict          # on the GPU machine: a skipped check fails too
#   bash bench/gpu_all.sh --device cpu --depth 18 --moderate 2000   # dry run, no GPU
# Any option is passed to bench/gpu_all.py (--help lists them). Estimated 2-3 minutes on
# an H100, not yet measured (give the device call timeout_s=480). The device's python3 has
# what it imports (torch, onnx, onnxruntime CPU, numpy, click): nothing is installed and
# nothing needs carrying. Writes $OUT/gpu_all.json and $OUT/gpu_all.log (/tmp without OUT).
# Without torch every row but (e) says "skipped: torch is not installed" and the exit
# status is 0 (1 with --strict).
set -u -o pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
{
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
            || echo "nvidia-smi: no answer"
    else
        echo "nvidia-smi: not found (no NVIDIA driver here)"
    fi
    "$PYTHON" bench/gpu_all.py "$@"
} 2>&1 | tee "${OUT:-/tmp}/gpu_all.log"
