#!/usr/bin/env bash
# The GPU checks, as one prepared run for a machine with a CUDA GPU: benchmarks/gpu_check.py, then `pytest -m cuda`
# (AMP training, resume, predict, evaluate and all four notebooks on the GPU). From the repository root:
#
#     bash benchmarks/gpu_checks.sh [LOG_DIR]        # about 8 minutes on an H100-class GPU
#
# The package need not be installed: the checkout goes on PYTHONPATH. Python packages the machine lacks (nbval,
# ipykernel, ipywidgets, cityscapesscripts and their needs) may lie as wheels in .whl/; they are installed into a
# temporary folder first.
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${1:-${OUT:-/tmp/gpu-checks}}
mkdir -p "$logs"
export PYTHONPATH="$PWD" PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$logs/nvidia-smi.txt"
timeout 330 python3 benchmarks/gpu_check.py 2>&1 | tee "$logs/gpu_check.log"
check=${PIPESTATUS[0]}
timeout 420 python3 -m pytest -m cuda -q -p no:cacheprovider -rs 2>&1 | tee "$logs/pytest_cuda.log"
tests=${PIPESTATUS[0]}
echo "gpu_check exit $check, pytest -m cuda exit $tests"
exit $(( check || tests ))
