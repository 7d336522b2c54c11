#!/usr/bin/env bash
# Create .venv and install the project from requirements.lock (about 90 s on a fresh machine).
# torch stays out of the lock: an installed build (e.g. your CUDA one) is kept; otherwise
# TORCH_SPEC is installed (default torch==2.13.0; set TORCH_INDEX_URL for a specific wheel index).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.installed-lock"
wanted="$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0  # already installed from this lock
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "setup: installing ${TORCH_SPEC:-torch==2.13.0}"
    "${pip[@]}" install "${TORCH_SPEC:-torch==2.13.0}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
fi
echo "setup: installing the locked dependencies"
"${pip[@]}" install -r requirements.lock
"${pip[@]}" install --no-deps --no-build-isolation -e .
echo "$wanted" > "$stamp"
echo "setup: done ($VENV)"
