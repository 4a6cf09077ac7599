#!/usr/bin/env bash
# The GPU check: spkid on a bare CUDA machine with no network (BENCHMARKS.md, "GPU check").
#
#   bash bench/gpu_check.sh --download   # here, with PyPI: fill bench/wheels/ (git-ignored)
#   bash bench/gpu_check.sh              # there: the cuda tests, then default + hw4_best,
#                                        # then the voxceleb recipes' step time
#   bash bench/gpu_check.sh --cpu        # the dry run of the same path on CPU (tests run it)
#
# Options: --steps N (timed steps per model; 500 on a GPU, 3 with --cpu), --set KEY=VALUE
# (a params override for both models, repeatable), --data hw4|tiny (the features' size;
# hw4 on a GPU, tiny with --cpu), --keep (keep the scratch folder).
# PYTHON picks the interpreter (default python3). On the GPU machine nothing is fetched:
# whatever `python3 -c 'import X'` lacks of what the check needs is installed from
# bench/wheels/ with pip --no-index into the scratch folder (put first on PYTHONPATH).
# Scratch data (5.9 GiB of features) goes to a temporary folder, removed at the end;
# the logs and gpu_check.json go to $OUT when it is set. Exits non-zero if any part fails,
# and the last line names the parts that did.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEELS=$ROOT/bench/wheels
PY=${PYTHON:-python3}
CPU=0 DOWNLOAD=0 KEEP=0 STEPS=0 SETS=() DATA=()
while (($#)); do
    case $1 in
        --cpu) CPU=1 ;;
        --download) DOWNLOAD=1 ;;
        --keep) KEEP=1 ;;
        --steps) STEPS=$2; shift ;;
        --data) DATA=(--data "$2"); shift ;;
        --set) SETS+=(--set "$2"); shift ;;
        *) echo "usage: bash bench/gpu_check.sh [--download | --cpu] [--steps N]" \
                "[--set KEY=VALUE]... [--data hw4|tiny] [--keep]" >&2
           exit 2 ;;
    esac
    shift
done

if ((DOWNLOAD)); then
    exec "$PY" "$ROOT/bench/gpu_check.py" download "$WHEELS"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/spkid-gpu-check.XXXXXX")
LOGS=${OUT:-$WORK}
mkdir -p "$LOGS"
((KEEP)) || trap 'rm -rf "$WORK"' EXIT
export PYTHONDONTWRITEBYTECODE=1 PIP_ROOT_USER_ACTION=ignore
FAILED=()
say() { echo "gpu_check: $*"; }
started=$SECONDS

# 0. What this python lacks, from bench/wheels/ only (pip --no-index: nothing from a network).
SITE=$WORK/site
install() {  # $1: required | optional
    local names
    names=$("$PY" "$ROOT/bench/gpu_check.py" missing "$WHEELS" "$1") || return 1
    [[ -z $names ]] && return 0
    say "installing from bench/wheels ($1): $names"
    # shellcheck disable=SC2086  # one word a distribution
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
        --find-links "$WHEELS" --target "$SITE" $names
}
install required || FAILED+=("wheels")
install optional || say "optional wheels not installed: the ONNX test will be skipped"
export PYTHONPATH=$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}

# a. The tests marked cuda (all skipped on CPU, which still checks that they collect).
if ((!${#FAILED[@]})); then
    say "pytest -m cuda tests/test_cuda.py"
    if timeout 150 "$PY" -m pytest -q -m cuda -p no:cacheprovider --basetemp "$WORK/pytest" \
            "$ROOT/tests/test_cuda.py" 2>&1 | tee "$LOGS/gpu_check_pytest.log"; then
        say "cuda tests: $(tail -n 1 "$LOGS/gpu_check_pytest.log")"
    else
        FAILED+=("cuda tests")
    fi
fi

# b, c. HW4-size random features, default and hw4_best for a fixed number of steps.
if ((!${#FAILED[@]})) || [[ ${FAILED[*]} == "cuda tests" ]]; then
    args=(train "$WORK" --steps "$STEPS" "${SETS[@]}" "${DATA[@]}")
    ((CPU)) && args+=(--cpu)
    if ! timeout 300 "$PY" "$ROOT/bench/gpu_check.py" "${args[@]}" 2>&1 \
            | tee "$LOGS/gpu_check_train.log"; then
        FAILED+=("training")
    fi
    [[ -f $WORK/gpu_check.json && $LOGS != "$WORK" ]] && cp "$WORK/gpu_check.json" "$LOGS/"
fi

# d. The voxceleb recipes' training step at their published sizes (bench/voxceleb_cost.py):
#    batch 128 of 200-frame crops, 10 timed steps each; a tiny shape on the dry run.
if ((!${#FAILED[@]})) || [[ ${FAILED[*]} == "cuda tests" || ${FAILED[*]} == "training" ]]; then
    vox=(--steps 10 --warmup 2)
    ((CPU)) && vox=(--device cpu --batch 1 --frames 16 --steps 1 --warmup 0)
    if ! timeout 120 "$PY" "$ROOT/bench/voxceleb_cost.py" "${vox[@]}" \
            --json "$LOGS/voxceleb_cost.json" 2>&1 | tee "$LOGS/voxceleb_cost.log"; then
        FAILED+=("voxceleb cost")
    fi
fi

if ((${#FAILED[@]})); then
    say "FAILED: $(IFS=,; echo "${FAILED[*]}") (after $((SECONDS - started)) s; logs in $LOGS)"
    exit 1
fi
say "OK in $((SECONDS - started)) s"
