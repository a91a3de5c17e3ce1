#!/usr/bin/env bash
# Reproduce rsisr's bundled default model (rsisr/weights/default.safetensors) from the repository
# root: both LCMSR stages of the `small` preset on ../shared/data/train (see examples/train_default.yaml
# and the model card in README.md). Either stage can be interrupted with Ctrl-C and continued by
# running the same command with --resume appended.
set -euo pipefail
DATA=${DATA:-../shared/data/train}
RUNS=${RUNS:-runs}

rsisr train ae --data "$DATA" --out "$RUNS/default_ae" --config examples/train_default.yaml "$@"
rsisr train lcm --data "$DATA" --out "$RUNS/default_lcm" --config examples/train_default.yaml \
    --ae "$RUNS/default_ae/model.safetensors" "$@"
mkdir -p rsisr/weights
cp "$RUNS/default_lcm/model.safetensors" rsisr/weights/default.safetensors
rsisr info
