#!/usr/bin/env bash
# Train on every GPU of this host (one process; data parallel over all local devices).
#   launch/local_gpus.sh CONFIG WORKDIR [--config.field=value ...]
# Example: launch/local_gpus.sh configs/dcinet_fgxmedia.py runs/dcinet --config.data_dir=/data/prepared
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1; workdir=$2; shift 2
# XLA keeps compiled steps and GPU autotuning results in config.compilation_cache_dir.
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-true}
exec "${PYTHON:-python3}" -m dcinet_jax train --config "$config" --workdir "$workdir" "$@"
