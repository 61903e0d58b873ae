#!/usr/bin/env bash
# Create .venv and install saip-bench with pinned versions (CPU torch; never the CUDA wheels).
# Idempotent: a rerun with unchanged pins only checks the stamp. Usage: ./install.sh
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp_source="$(cat constraints.txt pyproject.toml requirements/*.txt install.sh | sha256sum | cut -c1-16)"
if [ -f "$VENV/.saip-stamp" ] && [ "$(cat "$VENV/.saip-stamp")" = "$stamp_source" ]; then
  echo "install.sh: $VENV is up to date"
  exit 0
fi
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "saip-bench pins the CPU torch 2.13.0 wheel for Python 3.11"'
[ -d "$VENV" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
export PIP_CONSTRAINT="$PWD/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned, so nothing later can pull a CUDA build.
$PIP install -q "torch==2.13.0"
$PIP install -q -e ".[test]"
# Pose stack (mmpose + pure-Python mmcv-lite): declared deps include chumpy (broken on 3.11), so --no-deps.
if [ -s requirements/mmpose.txt ]; then
  $PIP install -q -r requirements/mmpose-deps.txt
  # xtcocotools: its cp311 wheel targets numpy 1.x, so build it from source (cython comes from the deps file).
  $PIP install -q --no-deps --no-binary xtcocotools --no-build-isolation -r requirements/mmpose.txt
fi
echo "$stamp_source" > "$VENV/.saip-stamp"
echo "install.sh: done ($VENV)"
