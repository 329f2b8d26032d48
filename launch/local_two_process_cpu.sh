#!/usr/bin/env bash
# Two JAX processes on this machine (CPU, 2 devices each) training one model together:
# the multi-host code path (jax.distributed, per-process data shards, collective
# checkpoints) without a cluster. The test suite runs it.
#   launch/local_two_process_cpu.sh CONFIG WORKDIR [--config.field=value ...]
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.field=value ...]" >&2
  exit 2
fi
config=$1; workdir=$2; shift 2
port=${DCINET_COORDINATOR_PORT:-$((20000 + RANDOM % 20000))}
export JAX_PLATFORMS=cpu
export JAX_COORDINATOR_ADDRESS=127.0.0.1:$port
export JAX_NUM_PROCESSES=2
export XLA_FLAGS="--xla_force_host_platform_device_count=2"
mkdir -p "$workdir"
pids=()
for i in 0 1; do
  JAX_PROCESS_ID=$i "${PYTHON:-python3}" -m dcinet_jax train --config "$config" --workdir "$workdir" \
    --progress=false "$@" >"$workdir/process_$i.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
for i in 0 1; do
  echo "--- process $i (last lines of $workdir/process_$i.log)"
  tail -n 5 "$workdir/process_$i.log"
done
exit $status
