#!/usr/bin/env bash
# Gradient-space audits of the mechanisms whose flaw is an undeclared data-dependent release.
# Each must report a violation (exit code 1) in a worst case the audit chooses itself.
set -u
mkdir -p out
for name in centered_quantile_clip realised_batch_norm; do
  dpaudit audit "mechanisms/$name.py" --level mechanism --runs 1000 \
    --dataset-size 60000 --batch-size 256 --epochs 5 --epsilon 3 --delta 1e-5 \
    --json "out/audit-$name.json" --report "out/audit-$name.md"
  echo "$name: exit $? (1 = violation found)"
done
