#!/usr/bin/env bash
# Fills .gpu_wheels/ (git-ignored) with the wheels of the packages this project needs that
# the GPU machine lacks, for alexnet_jax/tools/gpu_check.sh to install there.
#
#   bash alexnet_jax/tools/gpu_wheels.sh    # where pip can download; then carry .gpu_wheels
#
# The GPU machine it was written for: x86-64, Python 3.12, no network; it has jax, flax,
# optax, orbax-checkpoint, numpy, absl-py, etils, pillow, psutil, protobuf, six, torch.
# Versions here: requirements.txt's pins, and for what those need, the versions pip
# resolved for requirements.txt. The wheels are copied with the checkout, so their total
# is kept small: this fails above LIMIT_MIB.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
DEST=.gpu_wheels
LIMIT_MIB=32
# Pinned in requirements.txt (the version is read from there).
REQUIRED=(grain tensorflow-datasets importlib-resources array-record ml-collections
          simplejpeg tensorboardX)
# Needed by those, missing on the GPU machine; setuptools for gpu_check.sh to install this
# checkout where it may not be there.
NEEDED=(dm-tree==0.1.10 docstring-parser==0.18.0 googleapis-common-protos==1.76.0
        immutabledict==4.3.1 portpicker==1.6.0 simple-parsing==0.1.9
        tensorflow-metadata==1.21.0 termcolor==3.3.0 toml==0.10.2
        setuptools==84.2.1)
# tensorflow-datasets imports promise, which is published as source only: built here
# (pure Python, so the wheel fits any Python 3).
SOURCE_ONLY=(promise==2.3)
# The GPU machine has a protobuf of its own; gpu_check.sh installs this one (CI's) only if
# the project does not import with that one (tensorflow-metadata's generated code needs
# protobuf 6.31.1 or newer).
PROTOBUF=protobuf==7.36.2

specs=()
for name in "${REQUIRED[@]}"; do
  pin=$(grep -i -E "^${name}==" requirements.txt | sed -E 's/[[:space:]]*#.*//') || {
    echo "requirements.txt pins no version of ${name}" >&2; exit 1; }
  specs+=("$pin")
done
rm -rf "$DEST"
mkdir -p "$DEST"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$DEST" "${specs[@]}" "${NEEDED[@]}"
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d "$DEST/protobuf" "$PROTOBUF"
"$PYTHON" -m pip wheel --quiet --no-deps --no-binary=:all: -w "$DEST" "${SOURCE_ONLY[@]}"

count=$(ls "$DEST"/*.whl "$DEST"/protobuf/*.whl | wc -l)
expected=$(( ${#specs[@]} + ${#NEEDED[@]} + ${#SOURCE_ONLY[@]} + 1 ))
if [ "$count" -ne "$expected" ]; then
  echo "$DEST holds $count wheels, not $expected: one per package." >&2
  exit 1
fi
(cd "$DEST" && ls -l *.whl protobuf/*.whl) | awk '{printf "%10d  %s\n", $5, $9}'
bytes=$(du -cb "$DEST"/*.whl "$DEST"/protobuf/*.whl | tail -1 | cut -f1)
tree=$(git ls-files -z -co --exclude-standard | du --files0-from=- -cb | tail -1 | cut -f1)
echo "$count wheels, $((bytes / 1024)) KiB; with the working tree that travels:" \
     "$(( (bytes + tree) / 1048576 )) MiB of 64."
if [ "$bytes" -gt $((LIMIT_MIB << 20)) ]; then
  echo "The wheels exceed ${LIMIT_MIB} MiB." >&2
  exit 1
fi
