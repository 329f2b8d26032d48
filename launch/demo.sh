#!/usr/bin/env bash
# The whole DCINet workflow on the built-in demo data, sized for a 2-core CPU:
# generate the demo dataset -> prepare it -> train configs/demo.py -> evaluate -> mAP table.
#   launch/demo.sh [DIR [--config.field=value ...]]   (default DIR: ./demo_run;
#   re-running reuses the data and resumes training)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-demo_run}
if [ $# -gt 0 ]; then shift; fi   # the rest goes to `dcinet train`
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
start=$(date +%s)
if [ ! -f "$out/raw/list/image/train.txt" ]; then
  # --force: a run stopped while writing left a partial folder; finish it
  "${PYTHON:-python3}" -m dcinet_jax demo-data --out "$out/raw" --force
fi
"${PYTHON:-python3}" -m dcinet_jax prepare --manual_dir "$out/raw" --data_dir "$out/prepared" \
  --config "$root/configs/demo.py"
"${PYTHON:-python3}" -m dcinet_jax train --config "$root/configs/demo.py" --workdir "$out/workdir" \
  --config.data_dir="$out/prepared" "$@"
"${PYTHON:-python3}" -m dcinet_jax eval --config "$root/configs/demo.py" --workdir "$out/workdir" \
  --config.data_dir="$out/prepared"
echo "demo finished in $(( $(date +%s) - start )) s; results in $out/workdir/eval/"
