#!/usr/bin/env bash
# The prepared GPU run (issue 15): one command on the lent GPU machine, ≤ 6 min, every result
# and log under $OUT. bench/README.md, "GPU figures: the prepared run", says how to call it.
#
#   bash bench/gpu_check.sh                    # on the GPU machine, .whl/ carried (bench/gpu_wheels.sh)
#
# Steps, in order of importance; each runs under `timeout`, a failed or timed-out step is
# reported loudly and the next one runs all the same; the exit status of each is in summary.txt:
#   install     the carried wheels into $SITE (pydantic, hyperopt, tidytcells, blosum, ...)
#   env         nvidia-smi, python, torch and CUDA versions, the packages the code imports
#   population  bench/population.py --device cuda --sizes 1,8,32,128 (small, medium; default space)
#   tests       tests/test_population.py and tests/test_training.py with TCR_TEST_DEVICE=cuda,
#               the gpu-marked test among them
#   throughput  bench/train_throughput.py part 1 (DataLoader loop vs train_model) on cuda
#   scaling     bench/train_throughput.py part 2, `ours` only, 1M and 4M rows, on cuda
#   bigdata     bench/bigdata.py on cuda at 250k rows (generate and prepare are CPU work)
# Each step gets min(its cap, the time left before the whole budget ends); a step with under
# 15 s left is skipped. nvidia-smi samples utilisation every 0.5 s throughout (smi.csv), and
# summary.txt gives each step's mean GPU utilisation from those samples.
#
# What comes back in $OUT (7 files): summary.txt, log.txt (every step's output), smi.csv,
# population_cuda.json, train_throughput_cuda.json, train_throughput_cuda_scaling.json,
# bigdata_cuda.json.
#
# Settings (environment):
#   OUT                    where results go (default /tmp/gpucheck-out)
#   PYTHON                 interpreter (default python3: the one with torch on the GPU machine)
#   WHEELS, SITE           wheel folder (default .whl) and install target (default /tmp/site)
#   TCR_GPU_CHECK_BUDGET   seconds for the whole run (default 345)
#   TCR_GPU_CHECK_DEVICE   cuda (default) | cpu: the dry run on a machine without a GPU
#   TCR_GPU_CHECK_QUICK    1: tiny sizes everywhere (the dry run; its figures mean nothing)
#   TCR_GPU_CHECK_STEPS    the steps to run, e.g. "population tests" for a second, shorter call
#                          (default: all; install and env always run)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

START=$(date +%s)
OUT=${OUT:-/tmp/gpucheck-out}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/site}
BUDGET=${TCR_GPU_CHECK_BUDGET:-345}
DEVICE=${TCR_GPU_CHECK_DEVICE:-cuda}
QUICK=${TCR_GPU_CHECK_QUICK:-0}
ONLY=${TCR_GPU_CHECK_STEPS:-}
mkdir -p "$OUT"
LOG=$OUT/log.txt
STEPS=$OUT/.steps.tsv # name, exit status, start, end (unix s); read into summary.txt at the end
: >"$LOG"
: >"$STEPS"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# step NAME CAP_S COMMAND...: run under timeout, output to log.txt, status to .steps.tsv
step() {
    local name=$1 cap=$2 left limit begin rc
    shift 2
    if [[ -n $ONLY && $name != install && $name != env && " $ONLY " != *" $name "* ]]; then
        return # not asked for (TCR_GPU_CHECK_STEPS)
    fi
    left=$((START + BUDGET - $(date +%s)))
    limit=$((cap < left ? cap : left))
    begin=$(date +%s)
    printf '\n===== %s (limit %ss): %s\n' "$name" "$limit" "$*" | tee -a "$LOG"
    if ((limit < 15)); then
        echo "!!!!! $name SKIPPED: ${left}s of the ${BUDGET}s budget left" | tee -a "$LOG"
        printf '%s\tskipped\t%s\t%s\n' "$name" "$begin" "$begin" >>"$STEPS"
        return
    fi
    timeout -k 10 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$begin" "$(date +%s)" >>"$STEPS"
    if ((rc == 0)); then
        echo "----- $name ok in $(($(date +%s) - begin)) s" | tee -a "$LOG"
    else
        ((rc == 124 || rc == 137)) && why="TIMED OUT after ${limit}s" || why="FAILED"
        sed -n '/^===== '"$name"' /,$p' "$LOG" | sed 1d | tail -n 25
        echo "!!!!! $name $why (exit $rc): its output above, all of it in log.txt" | tee -a "$LOG"
    fi
}

SMI_PID=
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,power.draw,clocks.sm \
        --format=csv,nounits -lms 500 >"$OUT/smi.csv" 2>&1 &
    SMI_PID=$!
fi

# shellcheck disable=SC2317  # run through `bash -c` below
install_wheels() {
    shopt -s nullglob
    local wheels=("$WHEELS"/*.whl)
    if ((${#wheels[@]} == 0)); then
        echo "no wheels in $WHEELS/: run bench/gpu_wheels.sh here and carry .whl" >&2
        return 1
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${wheels[@]}" && ls "$SITE"
}

# shellcheck disable=SC2317  # run through `bash -c` below
environment() {
    uname -a
    nproc
    free -g
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "(no nvidia-smi)"; fi
    "$PYTHON" - <<'EOF'
import importlib.metadata as md
import platform
import sys

import torch

print("python", sys.version.split()[0], platform.machine(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
    print("tf32 matmul", torch.backends.cuda.matmul.allow_tf32)
names = "numpy pandas scipy scikit-learn pyyaml rich typer pytest pytest-timeout nvidia-ml-py"
carried = "pydantic pydantic-core typing-extensions hyperopt tidytcells blosum"
for name in (names + " " + carried).split():
    try:
        print(f"  {name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name} MISSING")
import tomllib

from packaging.requirements import Requirement

# the image's versions are not the pinned ones: are they within pyproject.toml's ranges?
with open("pyproject.toml", "rb") as file:
    for line in tomllib.load(file)["project"]["dependencies"]:
        need = Requirement(line)
        try:
            have = md.version(need.name)
        except md.PackageNotFoundError:
            have = None
        if have is None or not need.specifier.contains(have, prereleases=True):
            print(f"  OUTSIDE pyproject.toml's range: {need} (found {have})")
print("pyproject.toml's dependency ranges checked")

import tcr_pipeline.config, tcr_pipeline.population, tcr_pipeline.search  # noqa: E401,F401  what the steps import

print("tcr_pipeline imports: ok")
EOF
}

# the two steps below are functions, which `timeout` runs through bash
export PYTHON WHEELS SITE
export -f install_wheels environment

if ((QUICK)); then
    POPULATION=(--kinds small --sizes "1,4" --epochs 2 --serial-trials 1)
    TESTS=(-k "two_epochs or trains_each_trial_as or cuda")
    THROUGHPUT=(--models small --epochs 1 --repeats 1)
    SCALING=(--sizes 10000 --scaling-model small)
    BIGDATA=(--sizes 5000)
else
    POPULATION=(--sizes "1,8,32,128")
    TESTS=()
    THROUGHPUT=()
    SCALING=(--sizes "1000000,4000000")
    BIGDATA=(--sizes 250000)
fi

step install 60 bash -c install_wheels
step env 60 bash -c environment
step population 180 "$PYTHON" bench/population.py --device "$DEVICE" "${POPULATION[@]}" \
    --out "$OUT/population_$DEVICE.json"
# warnings are printed, not errors, there: that machine's packages are not the pinned ones
step tests 90 env TCR_TEST_DEVICE="$DEVICE" "$PYTHON" -m pytest -q -p no:cacheprovider -W default \
    tests/test_population.py tests/test_training.py "${TESTS[@]}"
step throughput 60 "$PYTHON" bench/train_throughput.py --device "$DEVICE" --sizes '' "${THROUGHPUT[@]}" \
    --out "$OUT/train_throughput_$DEVICE.json"
step scaling 90 "$PYTHON" bench/train_throughput.py --device "$DEVICE" --models '' --scaling-loops ours \
    "${SCALING[@]}" --out "$OUT/train_throughput_${DEVICE}_scaling.json"
step bigdata 120 "$PYTHON" bench/bigdata.py --device "$DEVICE" "${BIGDATA[@]}" --out "$OUT/bigdata_$DEVICE.json"

[[ -n $SMI_PID ]] && kill "$SMI_PID" 2>/dev/null

# summary.txt: each step's exit status, seconds and mean GPU utilisation (smi.csv samples)
"$PYTHON" - "$STEPS" "$OUT/smi.csv" "$BUDGET" "$DEVICE" "$QUICK" >"$OUT/summary.txt" <<'EOF'
import csv
import sys
from datetime import datetime
from pathlib import Path

steps_file, smi_file, budget, device, quick = sys.argv[1:]
samples = []  # (unix s, GPU %)
if Path(smi_file).is_file():
    for row in csv.reader(Path(smi_file).open()):
        try:
            when = datetime.strptime(row[0].strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            samples.append((when, float(row[1])))
        except (ValueError, IndexError):
            continue  # the header, or a line nvidia-smi could not fill
print(f"device {device}, quick {quick}, budget {budget} s, {len(samples)} nvidia-smi samples")
print("step\texit\tseconds\tmean GPU util % (samples)")
failed = 0
for line in Path(steps_file).read_text().splitlines():
    name, rc, begin, end = line.split("\t")
    inside = [u for t, u in samples if int(begin) <= t <= int(end) + 1]
    util = f"{sum(inside) / len(inside):.1f} ({len(inside)})" if inside and rc != "skipped" else "-"
    print(f"{name}\t{rc}\t{int(end) - int(begin)}\t{util}")
    failed += rc != "0"
print("ALL STEPS OK" if not failed else f"{failed} STEP(S) FAILED, TIMED OUT OR SKIPPED: see log.txt")
sys.exit(1 if failed else 0)
EOF
status=$?
rm -f "$STEPS"
printf '\n===== summary (%s s in all; files in %s)\n' "$(($(date +%s) - START))" "$OUT"
cat "$OUT/summary.txt"
ls -l "$OUT"
exit "$status" # 1: a step failed, timed out or was skipped
