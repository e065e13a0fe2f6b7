#!/usr/bin/env bash
# Gradient-space audit of plain DP-SGD at full batch (q = 1): the power check of the estimators.
set -eu
mkdir -p out
dpaudit audit mechanisms/dpsgd.py --level mechanism --runs 1000 \
  --dataset-size 256 --batch-size 256 --epochs 1 --epsilon 3 --delta 1e-5 \
  --json out/audit-full-batch-dpsgd.json --report out/audit-full-batch-dpsgd.md
