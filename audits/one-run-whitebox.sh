#!/usr/bin/env bash
# White-box one-run training audit of plain DP-SGD at eps = 4 (Steinke, Nasr & Jagielski 2023's
# game; Dirac gradient canaries, every update seen): 1000 canaries in ONE digits model trained
# full-batch (q = 1, so the summed canary projection is the likelihood-ratio score of the
# Gaussian mechanism), 300 steps. Usage: audits/one-run-whitebox.sh [SEED ...] (default 0).
set -eu
mkdir -p out
for seed in "${@:-0}"; do
  dpaudit audit mechanisms/dpsgd.py --level training --dataset digits --canaries 1000 \
    --batch-size 1438 --epochs 300 --epsilon 4 --delta 1e-5 --seed "$seed" --no-progress \
    --json "out/audit-one-run-whitebox-$seed.json" --report "out/audit-one-run-whitebox-$seed.md"
done
