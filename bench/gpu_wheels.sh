#!/usr/bin/env bash
# Download into .whl/ the wheels that bench/gpu_check.sh installs on the GPU machine.
#
# That machine (python3 3.12, x86-64, no network; bench/README.md "GPU figures") has torch,
# numpy, pandas, scipy, scikit-learn, typer, rich, pyyaml, pytest and pytest-timeout, but not
# these, which the library, the bench scripts and the test fixtures import:
#   pydantic, pydantic-core, annotated-types, typing-inspection  tcr_pipeline.config and the records
#   typing-extensions                                            pydantic needs a recent one
#   hyperopt                                                     tcr_pipeline.search (test fixtures)
#   tidytcells, blosum                                           encoding the shipped data
# hyperopt's own needs (cloudpickle, networkx, numpy, scipy, tqdm) are on that machine.
# Versions: requirements/constraints.txt. Run in the repository root (.whl/ is git-ignored):
#   bash bench/gpu_wheels.sh            # PYTHON=... to use another interpreter's pip
# For bench/gpu_check.sh's dry run on this machine's Python (bench/README.md):
#   WHEEL_PYTHON=3.11 WHEEL_DIR=/tmp/whl311 bash bench/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEEL_PYTHON=${WHEEL_PYTHON:-3.12} # the GPU machine's python3
WHEEL_DIR=${WHEEL_DIR:-.whl}
PACKAGES=(pydantic pydantic-core annotated-types typing-inspection typing-extensions hyperopt tidytcells blosum)

# NAME==VERSION from the constraints, names compared as pip does (case, '-', '_' and '.' alike)
pin() {
    local want line
    want=$(tr 'A-Z_.' 'a-z--' <<<"$1")
    while IFS= read -r line; do
        [[ $line == *==* ]] || continue
        if [[ $(tr 'A-Z_.' 'a-z--' <<<"${line%%==*}") == "$want" ]]; then
            echo "$line"
            return
        fi
    done <requirements/constraints.txt
    echo "gpu_wheels.sh: $1 is not pinned in requirements/constraints.txt" >&2
    return 1
}

specs=()
for name in "${PACKAGES[@]}"; do
    specs+=("$(pin "$name")")
done

mkdir -p "$WHEEL_DIR"
rm -f "$WHEEL_DIR"/*.whl # one version of each, or the install there stops
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$WHEEL_PYTHON" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEEL_DIR" "${specs[@]}"

count=$(find "$WHEEL_DIR" -maxdepth 1 -type f -name '*.whl' | wc -l)
if ((count != ${#PACKAGES[@]})); then
    echo "gpu_wheels.sh: expected ${#PACKAGES[@]} wheels in $WHEEL_DIR/, found $count" >&2
    exit 1
fi
ls -1 "$WHEEL_DIR"
echo "$(du -sh "$WHEEL_DIR" | cut -f1) in $WHEEL_DIR/ (what travels to the GPU machine: 64 MiB at most, with the working tree)"
