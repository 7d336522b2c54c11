#!/usr/bin/env bash
# The digits domain-adaptation runs of docs/results.md on a CPU: both directions x 3 seeds, all
# six at once with one thread each (more threads per run oversubscribe the cores), each to
# STEPS steps or, at the latest, to its last checkpoint inside BUDGET seconds.
# Usage from the repository root, RAW holding mnist/ (idx files) and usps/usps.h5:
#   bash bench/cpu_digits.sh RAW OUT STEPS [BUDGET] [--set KEY=VALUE ...]
# OUT receives results.jsonl (curve points every 500 steps and final summaries, one JSON line
# each), runs.log, machine.txt, a sample grid per direction, and mlflow.db (an MLflow store
# holding one run per direction and seed: losses, b/target_accuracy_curve, b/classification_accuracy).
set -uo pipefail
cd "$(dirname "$0")/.."
raw=${1:?folder holding mnist/ and usps/usps.h5}
out=${2:?output folder}
steps=${3:?training steps per run}
budget=${4:-0}
shift $(( $# < 4 ? $# : 4 ))
mkdir -p "$out"
out=$(cd "$out" && pwd)
python=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
{
    lscpu | grep -E "^Model name|^CPU\(s\)"
    "$python" -c "import torch; print('torch', torch.__version__)"
} > "$out/machine.txt" 2>&1
"$python" -m unit_cli ingest digits --mnist "$raw/mnist" --usps "$raw/usps/usps.h5" --size 32 --out data/digits \
    --no-progress >> "$out/runs.log" 2>&1 || exit 1
# Create the MLflow store once: six processes migrating a new SQLite schema at once would clash.
"$python" -c "import sys, mlflow; mlflow.MlflowClient(sys.argv[1]).search_experiments()" "sqlite:///$out/mlflow.db" \
    >> "$out/runs.log" 2>&1 || exit 1
for preset in digits-mnist2usps digits-usps2mnist; do
    for seed in 0 1 2; do
        "$python" bench/digits_adaptation.py --preset "$preset" --seed "$seed" --out runs/cpu-digits \
            --time-budget "$budget" --report "$out/results.jsonl" --track \
            --set train.device=cpu --set train.threads=1 --set train.max_steps="$steps" \
            --set tracking.tracking_uri="sqlite:///$out/mlflow.db" "$@" >> "$out/runs.log" 2>&1 &
    done
done
wait
for preset in digits-mnist2usps digits-usps2mnist; do
    grid=$(ls runs/cpu-digits/$preset/seed0/samples/*.png 2>/dev/null | tail -1)
    [ -n "$grid" ] && cp "$grid" "$out/$preset-seed0-samples.png"
done
