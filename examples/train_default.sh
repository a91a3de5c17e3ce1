#!/usr/bin/env bash
# Reproduce rsisr's bundled default model (rsisr/weights/default.safetensors) from the repository
# root, on one thread in the background if you like: the `small` preset on ../shared/data/train,
# validated on ../shared/data/val. See examples/train_default.yaml,
# examples/train_default_decoder.yaml, examples/train_default_e2e.yaml,
# examples/train_default_gan.yaml and the model card in README.md. Rerun the same command after
# any interruption: each stage resumes from its last checkpoint (RUNS must survive between runs).
# bf16 (--precision auto on a CPU with native bf16) rounds differently from fp32, so another CPU
# trains a model of the same recipe, not bit-identical weights.
set -euo pipefail
DATA=${DATA:-../shared/data/train}
VAL=${VAL:-../shared/data/val}
RUNS=${RUNS:-runs}
export RSISR_METRIC_WEIGHTS=${RSISR_METRIC_WEIGHTS:?set it to the folder ../shared/tools/metric-weights writes}
common=(--set run.threads=1 --precision auto -q)
resume() { [ -f "$1/config.yaml" ] && echo --resume || true; }
args() { [ -f "$1/config.yaml" ] || echo "--data $DATA --val $VAL"; }

# Stage 1: the residual autoencoder (1760 steps: L1 only before step 1000, then L1 + KL + PatchGAN).
[ -f "$RUNS/default_ae/model.safetensors" ] ||
  rsisr train ae $(args "$RUNS/default_ae") --out "$RUNS/default_ae" --config examples/train_default.yaml \
    "${common[@]}" $(resume "$RUNS/default_ae")
# Stage 2: CondNet + UNet on that latent space (7803 steps).
[ -f "$RUNS/default_lcm/model.safetensors" ] ||
  rsisr train lcm $(args "$RUNS/default_lcm") --out "$RUNS/default_lcm" --config examples/train_default.yaml \
    --ae "$RUNS/default_ae/model.safetensors" "${common[@]}" $(resume "$RUNS/default_lcm")
# Stage 3: the decoder on stage 2's own single-step latents (L1 + 0.2 LPIPS(VGG)).
[ -f "$RUNS/default_dec/model.safetensors" ] ||
  rsisr train ae $(args "$RUNS/default_dec") --out "$RUNS/default_dec" --lcm "$RUNS/default_lcm" \
    --config examples/train_default_decoder.yaml "${common[@]}" $(resume "$RUNS/default_dec")
# Stage 4: CondNet, UNet and decoder end to end on the model's own one-step output (L1 + 0.5 LPIPS(VGG)),
# 1950 steps.
[ -f "$RUNS/default_e2e/model.safetensors" ] ||
  rsisr train ae $(args "$RUNS/default_e2e") --out "$RUNS/default_e2e" --lcm "$RUNS/default_dec" \
    --config examples/train_default_e2e.yaml "${common[@]}" $(resume "$RUNS/default_e2e")
# Stage 5: the same from stage 4's end, with L1 + 1.0 LPIPS(VGG) + PatchGAN (adaptive, 0.1), 250 steps.
[ -f "$RUNS/default_gan/model.safetensors" ] ||
  rsisr train ae $(args "$RUNS/default_gan") --out "$RUNS/default_gan" --lcm "$RUNS/default_e2e" \
    --config examples/train_default_gan.yaml "${common[@]}" $(resume "$RUNS/default_gan")
mkdir -p rsisr/weights
cp "$RUNS/default_gan/model.safetensors" rsisr/weights/default.safetensors
rsisr info
