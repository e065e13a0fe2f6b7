#!/usr/bin/env bash
# Training audits of plain DP-SGD on run A, the run that catches the two flawed mechanisms: no violation
# on three seeds (exit 0 each), then a black-box one-run audit with mislabelled canaries.
set -u
cd "$(dirname "$0")/.."
. audits/training-common.sh
for seed in 0 1 2; do
  train_audit "dpsgd, white-box, seed $seed" training-dpsgd-seed$seed mechanisms/dpsgd.py \
    --level training "${RUN_A[@]}" --runs 500 --seed $seed
done
train_audit "dpsgd, black-box one-run" training-dpsgd-blackbox mechanisms/dpsgd.py \
  --level training "${RUN_A[@]}" --canary-kind mislabeled --canaries 32 --runs 16 --seed 0
