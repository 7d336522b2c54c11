#!/usr/bin/env bash
# The main job on a fresh machine, no download needed: install, start the local services
# (MLflow, Prefect, the flow's deployments), run the pipeline for the street-scenes preset
# (procedural day/night scenes -> UNIT training -> evaluation -> MLflow registry) and wait.
# Services keep running afterwards for the UIs; stop them with:
#   .venv/bin/python infra/local/services.py stop
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python=.venv/bin/python
"$python" infra/local/services.py start
eval "$("$python" infra/local/services.py env)"
.venv/bin/prefect deployment run unit/street-scenes --watch --watch-timeout 3600

run=runs/street-scenes
cat <<MSG

Done. Where to look:
  MLflow UI (runs, metrics, the registered model):  $MLFLOW_TRACKING_URI
  Prefect UI (the flow run, its artifacts):         ${PREFECT_API_URL%/api}
  registered model:                                 models:/unit-street-scenes@champion
  evaluation grid (input | translation | cycle | truth): $run/evaluation/report/a2b.png
  training sample grids:                            $run/samples/
  metrics:                                          $run/evaluation/metrics.json
Translate your own photos:
  .venv/bin/unit translate --model models:/unit-street-scenes@champion --direction a2b PHOTOS/ --out night/
MSG
