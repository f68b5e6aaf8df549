#!/usr/bin/env bash
# Trains alexnet_jax on a Cloud TPU VM pod slice: the same command on every worker (host).
#
#   launch/tpu_pod.sh TPU_NAME ZONE [main.py args...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b --config=configs/ilsvrc2012.py \
#       --workdir=/mnt/shared/runs/alexnet
#
# What it does, from your workstation (gcloud installed and logged in; PROJECT below or
# gcloud's default project):
#   1. copies this repository's tracked files (as in your working tree) to every worker;
#   2. on every worker, once: a virtual environment with requirements.txt and the TPU build
#      of the pinned JAX (SETUP=0 skips this step on later runs). JAX 0.10 needs Python
#      >= 3.11 on the workers (an Ubuntu 24.04 TPU VM image has it); PYTHON names it;
#   3. runs `python -m alexnet_jax.main --distributed [main.py args...]` on all workers at
#      once. --distributed makes each process call jax.distributed.initialize, which reads
#      the worker count, this worker's id and the coordinator (worker 0) from the TPU VM
#      metadata (alexnet_jax/runtime/distributed.py).
# Step and evaluation lines come from worker 0 (process 0). The training lives in the ssh
# sessions: run this inside tmux or screen, so that closing the terminal does not stop it.
#
# --workdir and config.data.data_dir must be one shared filesystem path on every worker
# (e.g. a Filestore NFS share, or a Cloud Storage bucket mounted with gcsfuse): every
# worker writes its part of each checkpoint there and reads its share of the data.
# Preemption: run the same command again (SETUP=0); it resumes from the last checkpoint.
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "Usage: $0 TPU_NAME ZONE [main.py args...]" >&2
  exit 2
fi
tpu=$1
zone=$2
shift 2
project_flag=${PROJECT:+--project=$PROJECT}
remote_dir='~/alexnet_jax'  # Expanded on the workers.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

on_all_workers() {
  # shellcheck disable=SC2086  # project_flag is empty or one word.
  gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" $project_flag --worker=all \
      --command="$1"
}

# 1. The code: the tracked files of the working tree, as a tarball.
archive=$(mktemp --suffix=.tar.gz)
trap 'rm -f "$archive"' EXIT
git -C "$repo" ls-files -z | tar -C "$repo" --null -T - -czf "$archive"
# shellcheck disable=SC2086
gcloud compute tpus tpu-vm scp "$archive" "$tpu:alexnet_jax.tar.gz" --zone="$zone" \
    $project_flag --worker=all
# Unpacked over the previous copy, never deleting it: a relative --workdir lives there.
on_all_workers "mkdir -p $remote_dir && tar -xzf ~/alexnet_jax.tar.gz -C $remote_dir"

# 2. The environment, pinned as CI tests it: requirements.txt pins jax for the workers'
# Python, and jax[tpu] adds the libtpu of that version.
if [[ ${SETUP:-1} == 1 ]]; then
  on_all_workers "${PYTHON:-python3} -m venv ~/alexnet_venv && ~/alexnet_venv/bin/pip install -q \
      -r $remote_dir/requirements.txt 'jax[tpu]'"
fi

# 3. Train: the same arguments on every worker, quoted for the remote shell.
args=''
if [[ $# -gt 0 ]]; then
  args=$(printf '%q ' "$@")
fi
on_all_workers "cd $remote_dir && ~/alexnet_venv/bin/python -m alexnet_jax.main \
    --distributed $args"
