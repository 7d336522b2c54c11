#!/usr/bin/env bash
# Every GPU variant of bench/train_step.py at 256x256 in one go, for docs/performance.md.
# Usage on a GPU machine, from the repository root:  bash bench/gpu_suite.sh [LOG]
# Needs python3 with torch (CUDA), pyyaml, tqdm, pillow and pydantic; if the latter is missing,
# put its wheels in .wheels/ (pip download pydantic --only-binary=:all: -d .wheels).
set -uo pipefail
cd "$(dirname "$0")/.."
log=${1:-gpu_suite.log}
if ! python3 -c "import pydantic" 2>/dev/null && [ -d .wheels ]; then
    python3 -m pip install --quiet --no-index --find-links .wheels --target .wheels/site pydantic
    export PYTHONPATH="$PWD/.wheels/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$log"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$log"
run() {
    echo "== $*" | tee -a "$log"
    timeout 150 python3 bench/train_step.py --device cuda --size 256 --warmup 3 --steps 10 "$@" 2>&1 \
        | grep -E "setting|s/iteration|pairs/s|GFLOP|memory|Error|error|[Ww]arn" | tee -a "$log"
}
run --batch 1
run --batch 8
run --batch 8 --precision bf16
run --batch 8 --precision bf16 --channels-last
run --batch 8 --precision bf16 --channels-last --set optim.fused=true
run --batch 32 --precision bf16 --channels-last --set optim.fused=true
run --batch 32 --precision bf16 --channels-last --set optim.fused=true --compile
run --batch 1 --precision bf16 --channels-last --set optim.fused=true
