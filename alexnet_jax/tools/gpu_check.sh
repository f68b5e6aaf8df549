#!/usr/bin/env bash
# The GPU check (alexnet_jax/tools/gpu_check.py, whose docstring says what it runs and
# writes) on a machine whose Python may lack this project's packages.
#
# On the GPU machine, in a copy of the checkout holding .gpu_wheels/ (filled beforehand by
# `bash alexnet_jax/tools/gpu_wheels.sh` where pip can download), within about 540 s:
#   bash alexnet_jax/tools/gpu_check.sh --out=OUT
# On a CPU, the dry run at tiny sizes (tests/test_gpu_check.py runs it):
#   bash alexnet_jax/tools/gpu_check.sh --cpu --out=runs/gpu_check
#
# The wheels in .gpu_wheels/ are installed first where any of them is not installed yet,
# with --no-index --no-deps: nothing is downloaded, and nothing else (never jax or torch)
# is installed or upgraded, except the machine's protobuf where the project does not
# import with it (.gpu_wheels/protobuf/). $PYTHON (default python3) runs everything.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
shopt -s nullglob
wheels=(.gpu_wheels/*.whl)
if [ ${#wheels[@]} -gt 0 ] && ! "$PYTHON" - "${wheels[@]}" 2>/dev/null <<'PY'
import importlib.metadata, os, sys
for wheel in sys.argv[1:]:  # Fails on the first distribution not installed.
  importlib.metadata.distribution(os.path.basename(wheel).split('-')[0])
PY
then
  echo "Installing ${#wheels[@]} wheels from .gpu_wheels/"
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
      "${wheels[@]}"
  if ! problem=$("$PYTHON" -c 'import alexnet_jax.training.train, alexnet_jax.tools.bench' 2>&1) \
      && [[ "$problem" == *[Pp]rotobuf* ]]; then
    echo "This protobuf is too old for the carried packages: installing .gpu_wheels/protobuf/"
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade .gpu_wheels/protobuf/*.whl
  fi
fi
# The configs are installed inside the package, as alexnet_jax.configs (pyproject.toml): a
# machine without this project installed gets this checkout in editable mode, offline.
if ! "$PYTHON" -c 'import alexnet_jax.configs' 2>/dev/null; then
  echo "Installing this checkout (pip install -e ., offline)"
  "$PYTHON" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
fi
exec "$PYTHON" -m alexnet_jax.tools.gpu_check "$@"
