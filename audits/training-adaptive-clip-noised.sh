#!/usr/bin/env bash
# Training audits of adaptive_clip_noised (Andrew et al. 2021, noised count, adjusted sigma) on run B
# (its noised count needs sigma < B/10): no violation on three seeds (exit 0 each).
set -u
cd "$(dirname "$0")/.."
. audits/training-common.sh
for seed in 0 1 2; do
  train_audit "adaptive_clip_noised, white-box, seed $seed" training-adaptive_clip_noised-seed$seed \
    mechanisms/adaptive_clip_noised.py --level training "${RUN_B[@]}" --runs 250 --seed $seed
done
