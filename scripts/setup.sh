#!/usr/bin/env bash
# Create .venv (if needed) and install bfn into it. Usage: scripts/setup.sh [EXTRAS], e.g. scripts/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
extras=${1:-}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# A bare `torch` requirement would pull a multi-GB CUDA build: install the pinned CPU-capable release first.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  "${pip[@]}" "torch==2.13.0"
fi
if [ -n "$extras" ]; then
  "${pip[@]}" -e ".[$extras]"
else
  "${pip[@]}" -e .
fi
