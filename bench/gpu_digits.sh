#!/usr/bin/env bash
# The digits domain-adaptation runs of docs/results.md on one GPU: both directions x 3 seeds,
# all six at once (tiny networks leave the GPU mostly idle per process), each stopping at its
# last checkpoint inside BUDGET seconds (bench/digits_adaptation.py --time-budget).
# Usage from the repository root, RAW holding mnist/ (idx files) and usps/usps.h5:
#   bash bench/gpu_digits.sh RAW OUT [BUDGET] [--set KEY=VALUE ...]
# OUT receives gpu.txt, results.jsonl (curve points and final summaries, one JSON line each),
# runs.log, runs.tgz (logs, configs, summaries; no checkpoints) and a sample grid per direction.
# Needs python3 with torch, pillow, h5py, opencv, pyyaml, tqdm and pydantic; if pydantic is
# missing, its wheels in .wheels/ are installed beside the tree.
set -uo pipefail
cd "$(dirname "$0")/.."
raw=${1:?folder holding mnist/ and usps/usps.h5}
out=${2:?output folder}
budget=${3:-150}
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$out"
if ! python3 -c "import pydantic" 2>/dev/null && [ -d .wheels ]; then
    python3 -m pip install --quiet --no-index --find-links .wheels --target .wheels/site pydantic
    export PYTHONPATH="$PWD/.wheels/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    echo "cpus $(nproc)"
    python3 -c "import torch; print('torch', torch.__version__)"
} > "$out/gpu.txt" 2>&1
# -c, not a here-document: the ingest's spawned encoder processes re-import the main script by path.
python3 -c "
import sys
from preprocessing.digits import ingest_digits
from preprocessing.pipeline import IngestOptions
print(ingest_digits('data/digits', mnist=sys.argv[1] + '/mnist', usps=sys.argv[1] + '/usps/usps.h5', size=32,
                    options=IngestOptions(progress=False)))
" "$raw" >> "$out/runs.log" 2>&1 || exit 1
for preset in digits-mnist2usps digits-usps2mnist; do
    for seed in 0 1 2; do
        OMP_NUM_THREADS=1 python3 bench/digits_adaptation.py --preset "$preset" --seed "$seed" --out runs/gpu-digits \
            --time-budget "$budget" --report "$out/results.jsonl" \
            --set train.device=cuda --set data.loader_workers=2 "$@" >> "$out/runs.log" 2>&1 &
    done
done
wait
# The newest sample grid of each direction's seed 0, and the small files of every run (no checkpoints).
for preset in digits-mnist2usps digits-usps2mnist; do
    grid=$(ls runs/gpu-digits/$preset/seed0/samples/*.png 2>/dev/null | tail -1)
    [ -n "$grid" ] && cp "$grid" "$out/$preset-seed0-samples.png"
done
tar czf "$out/runs.tgz" --exclude='*.pt' runs/gpu-digits
