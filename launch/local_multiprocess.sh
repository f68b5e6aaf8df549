#!/usr/bin/env bash
# Runs N processes of alexnet_jax.main on this machine as one multi-process JAX job, for
# trying and testing multi-process runs without a cluster.
#
#   launch/local_multiprocess.sh N [main.py args...]
#   launch/local_multiprocess.sh 2 --config=configs/demo.py --workdir=runs/demo_2proc
#   launch/local_multiprocess.sh 2 --config=configs/demo.py --workdir=runs/demo_2proc \
#       --config.host_devices=4   # 2 processes x 4 CPU devices: mesh data=4 x tower=2
#
# Each process runs on CPU devices only (JAX_PLATFORMS=cpu), as many as the config's
# host_devices (the demo: 2) per process. They meet at a coordinator on 127.0.0.1 on a
# free port, found through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID
# (alexnet_jax/runtime/distributed.py). Every output line is prefixed with its process id. The
# script waits for all of them; if one fails, or on Ctrl-C, it stops the others and exits
# non-zero. Set PYTHON to choose the interpreter (default: python3).
set -euo pipefail

if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "Usage: $0 N [main.py args...]   (N: the number of processes, >= 1)" >&2
  exit 2
fi
num_processes=$1
shift
python=${PYTHON:-python3}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# A port the kernel just handed out, so free now (the coordinator binds it in a moment).
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')

declare -A index_of  # pid -> process id, for the processes still running.
stop_all() {
  # KILL, not TERM: JAX's preemption service catches TERM (to let a job save at a sync
  # point) and keeps running, and a job that lost a process cannot go on anyway. An
  # unfinished checkpoint is a temporary directory that the next run removes.
  local pid
  for pid in "${!index_of[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}
trap 'echo "Interrupted: stopping all processes." >&2; stop_all; wait; exit 130' INT TERM

for ((i = 0; i < num_processes; i++)); do
  JAX_PLATFORMS=cpu JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" \
    JAX_NUM_PROCESSES="$num_processes" JAX_PROCESS_ID="$i" \
    PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" \
    "$python" -m alexnet_jax.main "$@" > >(sed -u "s/^/[process $i] /") 2>&1 &
  index_of[$!]=$i
done

status=0
while [[ ${#index_of[@]} -gt 0 ]]; do
  wait -n "${!index_of[@]}" 2>/dev/null || true  # Until at least one has ended.
  for pid in "${!index_of[@]}"; do
    kill -0 "$pid" 2>/dev/null && continue  # Still running.
    code=0
    wait "$pid" || code=$?  # Its saved exit status, even if bash has reaped it already.
    i=${index_of[$pid]}
    unset "index_of[$pid]"
    if [[ $code -ne 0 && $status -eq 0 ]]; then
      status=$code
      echo "Process $i exited with status $code: stopping the others." >&2
      stop_all
    fi
  done
done
wait  # The output filters.
exit "$status"
