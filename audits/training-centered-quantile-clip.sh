#!/usr/bin/env bash
# Training audit of centered_quantile_clip (seed mechanism 1: clip norm from an un-noised quantile,
# noise sigma*C/B with B the realised batch): must report a violation (exit 1).
set -u
cd "$(dirname "$0")/.."
. audits/training-common.sh
train_audit "centered_quantile_clip, white-box" training-centered_quantile_clip mechanisms/centered_quantile_clip.py \
  --level training "${RUN_A[@]}" --runs 500 --seed 0 --report out/training-centered_quantile_clip.md
