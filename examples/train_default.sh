#!/usr/bin/env bash
# Reproduce rsisr's bundled default model (rsisr/weights/default.safetensors) from the repository
# root: the `small` preset on ../shared/data/train (see examples/train_default.yaml,
# examples/train_default_decoder.yaml and the model card in README.md). Any step can be interrupted
# with Ctrl-C and continued by running the same command with --resume appended.
set -euo pipefail
DATA=${DATA:-../shared/data/train}
RUNS=${RUNS:-runs}

# Stage 1: the residual autoencoder (2400 steps: L1 only before step 700, then L1 + KL + PatchGAN).
rsisr train ae --data "$DATA" --out "$RUNS/default_ae" --config examples/train_default.yaml "$@"
# Stage 1b: 900 more GAN steps for the decoder alone, encoder frozen (new discriminator).
rsisr train ae --data "$DATA" --out "$RUNS/default_dec" --config examples/train_default_decoder.yaml \
    --init "$RUNS/default_ae" --decoder-only "$@"
# Stage 2: CondNet + UNet (9000 steps). The encoder, hence the latents, are stage 1's either way.
rsisr train lcm --data "$DATA" --out "$RUNS/default_lcm" --config examples/train_default.yaml \
    --ae "$RUNS/default_dec/model.safetensors" "$@"
mkdir -p rsisr/weights
cp "$RUNS/default_lcm/model.safetensors" rsisr/weights/default.safetensors
rsisr info
