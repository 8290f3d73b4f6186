#!/usr/bin/env bash
# The GPU checks, as one prepared run for a machine with a CUDA GPU, in under 10 minutes on an H100-class GPU:
#   1. benchmarks/gpu_check.py --no-compile: speed by setting, memory, the loader and the engine against the model,
#      inference, fp32 vs AMP (about 3-4 minutes; torch.compile is left out to fit: run gpu_check.py alone for it);
#   2. benchmarks/gpu_demo.py: notebooks 03 and 04 top to bottom in the default profile there (demo-gpu), timed,
#      and the GPU demo's scores (about 3 minutes);
#   3. pytest -m cuda: AMP training, resume, predict, evaluate and all four notebooks (smoke) on the GPU.
# From the repository root:
#
#     bash benchmarks/fetch_gpu_wheels.sh     # where pip reaches PyPI: the wheels a bare GPU image lacks, in .whl/
#     bash benchmarks/gpu_checks.sh [LOG_DIR]  # on the GPU machine
#
# The package need not be installed: the checkout goes on PYTHONPATH. Wheels in .whl/ (nbval, ipykernel, ipywidgets,
# nbclient, cityscapesscripts, pyspng and their needs) are installed into a temporary folder first.
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
timeout 240 python3 benchmarks/gpu_check.py --no-compile 2>&1 | tee "$logs/gpu_check.log"
check=${PIPESTATUS[0]}
timeout 200 python3 benchmarks/gpu_demo.py 2>&1 | tee "$logs/gpu_demo.log"
demo=${PIPESTATUS[0]}
timeout 130 python3 -m pytest -m cuda -q -p no:cacheprovider -rs 2>&1 | tee "$logs/pytest_cuda.log"
tests=${PIPESTATUS[0]}
echo "gpu_check exit $check, gpu_demo exit $demo, pytest -m cuda exit $tests"
exit $(( check || demo || tests ))
