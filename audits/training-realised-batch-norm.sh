#!/usr/bin/env bash
# Training audit of realised_batch_norm (noise sigma*C/B with B the realised batch size): must report a
# violation (exit 1) through the white-box noise-scale statistic. A black-box one-run audit (mislabelled
# canaries) is run too: the leak is in the noise scale, which the final model's loss does not show.
set -u
cd "$(dirname "$0")/.."
. audits/training-common.sh
train_audit "realised_batch_norm, white-box" training-realised_batch_norm mechanisms/realised_batch_norm.py \
  --level training "${RUN_A[@]}" --runs 500 --seed 0 --report out/training-realised_batch_norm.md
train_audit "realised_batch_norm, black-box one-run" training-realised_batch_norm-blackbox \
  mechanisms/realised_batch_norm.py --level training "${RUN_A[@]}" --canary-kind mislabeled --canaries 32 --runs 16 --seed 0
