#!/usr/bin/env bash
# Training audits of lr_adaptive (seed mechanism 3: a sigma schedule following the learning rate that
# reports the constant sigma) on run A. What a training audit of this size can show, with its ceiling:
# its excess privacy loss is in the per-step noise level, which the audit measures only through the
# canary's projection; docs/auditing.md compares the bound with the true epsilon of its schedule.
set -u
cd "$(dirname "$0")/.."
. audits/training-common.sh
for name in lr_adaptive; do
  dpaudit audit mechanisms/$name.py --level training "${RUN_A[@]}" --runs 500 --seed 0 \
    --json out/training-$name.json > out/training-$name.txt
  summarise out/training-$name.json "$name, white-box" $?
done
