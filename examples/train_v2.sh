#!/usr/bin/env bash
# The training campaign of the next default model (issue 19), from the repository root, in the
# background on one thread: examples/train_v2.yaml. Rerun the same command after any
# interruption: each stage resumes from its last checkpoint (RUNS must survive between runs).
set -euo pipefail
DATA=${DATA:-../shared/data/train}
VAL=${VAL:-../shared/data/val}
RUNS=${RUNS:-runs}
export RSISR_METRIC_WEIGHTS=${RSISR_METRIC_WEIGHTS:?set it to the folder ../shared/tools/metric-weights writes}
common=(--config examples/train_v2.yaml --set run.threads=1 --precision auto -q)
resume() { [ -f "$1/config.yaml" ] && echo --resume || true; }

# Stage 1: the residual autoencoder (L1 before step 1000, then L1 + KL + PatchGAN).
[ -f "$RUNS/v2_ae/model.safetensors" ] ||
  rsisr train ae --data "$DATA" --val "$VAL" --out "$RUNS/v2_ae" "${common[@]}" $(resume "$RUNS/v2_ae")
# Stage 2: CondNet + UNet on that latent space, for as long as validation improves.
rsisr train lcm --data "$DATA" --val "$VAL" --out "$RUNS/v2_lcm" --ae "$RUNS/v2_ae/model.safetensors" \
  "${common[@]}" $(resume "$RUNS/v2_lcm")
