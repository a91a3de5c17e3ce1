#!/usr/bin/env bash
# The GPU check: everything rsisr needs measured or tested on a CUDA machine, in one run of at
# most eight minutes, with every figure in one JSON file.
#
#   bash benchmarks/gpu_check.sh OUT.json
#
# Run it from the repository with rsisr installed (`pip install -e ".[dev]"`; PYTHON=... picks
# the interpreter). Parts, in order of importance, each under its own timeout and all within
# RSISR_GPU_CHECK_BUDGET seconds (default 450); a part that fails or runs out of time is recorded
# with its exit status (124: timeout) and the check goes on:
#   pytest          pytest -m gpu tests/test_gpu.py (CPU = GPU within 2/255, a real out-of-memory
#                   back-off, bf16/fp16 autocast, the CLI on CUDA)
#   upscale         upscale_file of a 4096x4096 synthetic scene, default model, precision auto
#                   (bf16 where native), batch 4: seconds, output MP/s, peak GPU memory
#   table2_eager    Table II: small and paper, 600x600 output, fp32/bf16/fp16, eager
#   table2_eager_cl the same with channels_last weights
#   train           training samples/s, both stages, small and paper (crop 256, batch 16, auto)
#   upscale_b16     the upscale part at batch 16
#   table2_compile  Table II with torch.compile (warm-up seconds apart)
# RSISR_GPU_CHECK_DRY_RUN=1 runs every part on the CPU at tiny sizes (the GPU tests skip), to
# check the script on a machine without a GPU.
set -euo pipefail

OUT=${1:?usage: bash benchmarks/gpu_check.sh OUT.json}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DRY=${RSISR_GPU_CHECK_DRY_RUN:-0}
BUDGET=${RSISR_GPU_CHECK_BUDGET:-450}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rsisr_gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
STATUS=()

# part NAME TIMEOUT COMMAND...: run COMMAND under min(TIMEOUT, what is left of the budget);
# record NAME:exit status:seconds; never stop the check.
part() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ((left < limit)); then limit=$left; fi
    if ((limit < 15)); then
        echo "== $name: skipped, the time budget is spent"
        STATUS+=("$name:skipped:0")
        return 0
    fi
    echo "== $name (timeout ${limit} s)"
    local t0=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" || rc=$?
    STATUS+=("$name:$rc:$((SECONDS - t0))")
    echo "== $name: exit status $rc after $((SECONDS - t0)) s"
    return 0
}

CHECK=(benchmarks/gpu_check.py)
if [[ "$DRY" != 0 ]]; then
    CHECK+=(--dry-run)
    TRAIN=(--device cpu --presets tiny --crop 32 --batch-size 2 --steps 1 --warmup 1 --threads 1)
else
    TRAIN=(--device cuda --presets small,paper --crop 256 --batch-size 16 --steps 5 --warmup 2 --precision auto)
fi

part pytest 120 "$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider --junitxml "$WORK/pytest.xml"
part upscale 120 "$PY" "${CHECK[@]}" upscale --out "$WORK/upscale.json" --workdir "$WORK"
part table2_eager 60 "$PY" "${CHECK[@]}" table2 --out "$WORK/table2_eager.json"
part table2_eager_cl 45 "$PY" "${CHECK[@]}" table2 --channels-last --out "$WORK/table2_eager_cl.json"
part train 90 bash -c '"$@" > "'"$WORK"'/train.jsonl"' _ "$PY" benchmarks/train_speed.py "${TRAIN[@]}" --json
part upscale_b16 60 "$PY" "${CHECK[@]}" upscale --batch-size 16 --out "$WORK/upscale_b16.json" --workdir "$WORK"
part table2_compile 240 "$PY" "${CHECK[@]}" table2 --compile --out "$WORK/table2_compile.json"

GPU=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1 || true)
TORCH=$("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)' 2>/dev/null || true)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || true)
"$PY" benchmarks/gpu_check.py merge --out "$OUT" \
    "$WORK/pytest.xml" "$WORK/upscale.json" "$WORK/table2_eager.json" "$WORK/table2_eager_cl.json" \
    "$WORK/train.jsonl" "$WORK/upscale_b16.json" "$WORK/table2_compile.json" \
    --meta "gpu=${GPU:-none}" --meta "torch=$TORCH" --meta "commit=$COMMIT" --meta "dry_run=$DRY" \
    --meta "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)" --meta "seconds=$((SECONDS - START))" \
    --meta "parts=${STATUS[*]}"
echo "== wrote $OUT after $((SECONDS - START)) s (parts: ${STATUS[*]})"
