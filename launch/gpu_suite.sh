#!/usr/bin/env bash
# Every GPU figure in one command (about 8 minutes on one H100; no data files, no
# TensorFlow): writes benchmarks/gpu_suite.json, benchmarks/gpu_suite.md and the rows
# between the gpu-suite markers of benchmarks/RESULTS.md.
#   launch/gpu_suite.sh [--tiny]
# The GPU image has jax, flax, optax, orbax, numpy, torch, timm; the one package it lacks
# is ml_collections (pure Python, ~100 KB). Put its wheel in ${WHEELS:-wheels}/ (ignored
# by git; carry it with the working tree), made where there is network access with
#   pip download --no-deps -d wheels ml_collections
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import ml_collections' 2>/dev/null; then
  wheels=${WHEELS:-wheels}
  if ! ls "$wheels"/ml_collections-*.whl >/dev/null 2>&1; then
    echo "gpu_suite: ml_collections is missing and no wheel is in $wheels/ (pip download --no-deps -d $wheels ml_collections)" >&2
    exit 2
  fi
  "$PYTHON" -m pip install --quiet --no-deps --no-index --find-links "$wheels" ml_collections
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m dcinet_jax bench --suite gpu --out_dir benchmarks "$@"
